"""`python -m bench.profile`: py-spy on a one-worker Sluice while the bench drives streamed requests at
saturation (`streams`) or 5,000 held slow streams (`held`); prints the self and inclusive shares of the
sampled frames, grouped by function and by package, and the process's user/system CPU split."""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
from pathlib import Path

from bench import load
from bench.proc import raise_nofile
from bench.scenarios import STREAM_BODY, _req
from bench.targets import HOST, start_sluice, start_upstream

REPO = Path(__file__).resolve().parent.parent


def _ticks(pid: int) -> tuple[int, int]:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(f[11]), int(f[12])


def _drive(kind: str, port: int, req: bytes) -> str:
    if kind == "streams":
        recs = load.run(load.streams, HOST, port, req, 6000, 64, 20)
        return f"{sum(1 for r in recs if r.get('intact'))}/6000 intact"
    parts = load.parallel(load.held, [(HOST, port, req, 2500, 20, 60.0) for _ in range(2)])
    return f"{sum(p['intact'] for p in parts)}/5000 intact"


def _group(frame: str) -> str:
    """`func (path/to/module.py:12)` -> the package it belongs to."""
    path = "/" + frame.rpartition("(")[2].split(":")[0]
    for mark in ("/sluice/", "/uvicorn/", "/logging/", "/asyncio/", "/threading", "/httptools/", "/uvloop/"):
        if mark in path:
            return mark.strip("/") + ("/" + path.split(mark)[1].split("/")[0] if mark == "/sluice/" else "")
    return "other"


def report(raw: Path, top: int) -> None:
    self_n: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    pkg_self: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        # one entry per function: "func (path:line)" -> "func (path)"
        frames = [f.rpartition(":")[0] + ")" if ":" in f else f for f in stack.split(";")
                  if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += int(n)
        self_n[frames[-1]] += int(n)
        pkg_self[_group(frames[-1])] += int(n)
        for f in set(frames):
            incl[f] += int(n)
    print(f"{total} samples (busy Python threads only)")
    for title, counter in (("self, by package", pkg_self), ("self, by function", self_n),
                           ("inclusive, by function", incl)):
        print(f"-- {title}")
        for f, n in counter.most_common(top):
            print(f"{100 * n / max(1, total):5.1f}%  {f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    ap.add_argument("kind", choices=["streams", "held"])
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "profile")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--raw", type=Path, help="only report an earlier py-spy raw file")
    ap.add_argument("--no-access-log", action="store_true", help="Sluice with [log] access = false")
    a = ap.parse_args(argv)
    if a.raw:
        report(a.raw, a.top)
        return 0
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.path.exists(spy):
        print("py-spy is required (pip install py-spy)")
        return 1
    raise_nofile()
    a.out.mkdir(parents=True, exist_ok=True)
    up = start_upstream(a.out)
    gw = start_sluice(REPO, a.out, up.port, tag="profile",
                      extra_toml="\n[log]\naccess = false\n" if a.no_access_log else "")
    try:
        if a.kind == "streams":
            shape = {"x-bench-chunks": "20", "x-bench-ttft-ms": "0", "x-bench-gap-ms": "0"}
        else:
            shape = {"x-bench-chunks": "20", "x-bench-ttft-ms": "200", "x-bench-gap-ms": "200",
                     "x-bench-chunk-size": "8"}
        req = _req(gw, STREAM_BODY, shape)
        raw = a.out / f"{a.kind}.raw"
        pid = gw.pids()[0]
        spy_proc = subprocess.Popen([spy, "record", "-p", str(pid), "-r", "250", "-f", "raw", "-o", str(raw),
                                     "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        u0, s0 = _ticks(pid)
        print(_drive(a.kind, gw.port, req), flush=True)
        u1, s1 = _ticks(pid)
        spy_proc.send_signal(2)  # py-spy writes its file on SIGINT
        spy_proc.wait(timeout=60)
        print(f"gateway CPU: user {(u1 - u0) / 100:.2f} s, system {(s1 - s0) / 100:.2f} s")
        report(raw, a.top)
    finally:
        gw.stop()
        up.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
