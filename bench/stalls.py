"""Event-loop stalls in a served Sluice, each attributed to a cause (bench-only, never in `sluice/`).

`python -m bench --stalls ...` serves Sluice through `python bench/stalls.py serve <sluice args>`, which
installs a `Probe` in the serving process once the app has started:

- a ticker every 1 ms on the loop: a tick later than 2 ms is a stall, kept with the loop thread's CPU time
  and its run-queue wait (`/proc/self/task/<tid>/schedstat`) over it: busy, descheduled, or off-CPU;
- `gc.callbacks`: every collection's generation, duration and thread;
- SQLite transactions (`storage.sqlite._finish_tx`, wrapped): duration, thread, batch size;
- with `--stalls-sample`, a watchdog thread that takes the loop thread's stack once per stall
  (it competes for the GIL, so runs without it are the reference for the stall counts).

SIGUSR1 makes the probe write what it saw as JSON; `report()` matches each stall with what overlapped it
(and, with `--stalls-strace`, the fsyncs strace saw on each thread) and sums the stalls by cause.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import os
import shutil
import signal
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

TICK = 0.001
STALL = 0.002


class Probe:
    """Lives in the serving process; `start()` runs on its loop (the app's on_started hook)."""

    def __init__(self, out: Path, sample: bool, garbage: bool) -> None:
        self.out, self.sample, self.garbage = out, sample, garbage
        self.stalls: list[tuple[float, float, float, float]] = []  # start, late, loop CPU, run-queue wait
        # start, duration, generation, collected, on the loop's thread, its CPU time
        self.gcs: list[tuple[float, float, int, int, bool, float]] = []
        # start, duration, on loop, batch size (0: not known), WAL frames checkpointed inside it
        self.txs: list[tuple[float, float, bool, int, int]] = []
        self.samples: list[tuple[float, list[str]]] = []
        # per second of the loop: start, loop CPU, run-queue wait, collections' CPU (is the loop saturated?)
        self.seconds: list[tuple[float, float, float, float]] = []
        self._sec = (0.0, 0.0, 0.0, 0.0)
        self._gc_total = 0.0
        self.ticks = 0
        self._gc_t0 = self._gc_cpu = 0.0
        self._size = 0
        self._shm = -1

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.ident, self.tid = threading.get_ident(), threading.get_native_id()
        self.offset = time.time() - time.perf_counter()  # wall = perf_counter + offset
        self._sched = os.open(f"/proc/self/task/{self.tid}/schedstat", os.O_RDONLY)
        gc.callbacks.append(self._gc)
        if self.garbage:  # keep what the collector frees, to count its types (memory grows: diagnosis only)
            gc.set_debug(gc.DEBUG_SAVEALL)
        self._wrap_sqlite()
        self._loop.add_signal_handler(signal.SIGUSR1, self.dump)
        self._cpu, self._rq = time.thread_time(), self._runqueue()
        self.last = time.perf_counter()
        self._due = self.last + TICK
        self._loop.call_later(TICK, self._tick)
        if self.sample:
            threading.Thread(target=self._watch, name="stall-watchdog", daemon=True).start()

    def _runqueue(self) -> float:
        return int(os.pread(self._sched, 64, 0).split()[1]) / 1e9

    def _tick(self) -> None:
        now = time.perf_counter()
        late = now - self._due
        cpu, rq = time.thread_time(), self._runqueue()
        if late > STALL:
            self.stalls.append((self._due, late, cpu - self._cpu, rq - self._rq))
        self._cpu, self._rq, self.last = cpu, rq, now
        if now - self._sec[0] >= 1.0:
            t0, cpu0, rq0, gc0 = self._sec
            if t0:
                self.seconds.append((t0, cpu - cpu0, rq - rq0, self._gc_total - gc0))
            self._sec = (now, cpu, rq, self._gc_total)
        self.ticks += 1
        self._due = now + TICK
        self._loop.call_later(TICK, self._tick)

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_t0, self._gc_cpu = time.perf_counter(), time.thread_time()
        else:
            on_loop, cpu = threading.get_ident() == self.ident, time.thread_time() - self._gc_cpu
            self.gcs.append((self._gc_t0, time.perf_counter() - self._gc_t0, info["generation"],
                             info["collected"], on_loop, cpu))
            if on_loop:
                self._gc_total += cpu

    def _wrap_sqlite(self) -> None:
        from sluice.storage import sqlite as sq

        finish: Callable[..., Any] = sq._finish_tx
        hot: Callable[..., Any] = sq.SQLiteStore._hot_tx

        def timed(db: Any, fn: Any) -> Any:
            t0, size, done = time.perf_counter(), self._size, self._backfilled()
            self._size = 0
            try:
                return finish(db, fn)
            finally:
                ckpt = max(0, self._backfilled() - done)
                self.txs.append((t0, time.perf_counter() - t0, threading.get_ident() == self.ident, size, ckpt))

        async def sized(store: Any, fn: Any, size: int) -> Any:
            if self._shm < 0:
                try:
                    self._shm = os.open(f"{store.path}-shm", os.O_RDONLY)
                except FileNotFoundError:
                    pass
            self._size = size
            return await hot(store, fn, size)
        sq._finish_tx = timed  # type: ignore[assignment]
        sq.SQLiteStore._hot_tx = sized  # type: ignore[method-assign]

    def _backfilled(self) -> int:
        """WAL frames checkpointed so far: `nBackfill` in the wal-index (`-shm`), offset 96, native u32;
        it grows while a checkpoint copies frames and returns to 0 when a writer restarts the WAL."""
        return int.from_bytes(os.pread(self._shm, 4, 96), sys.byteorder) if self._shm >= 0 else 0

    def _watch(self) -> None:
        seen = 0.0
        while True:
            time.sleep(TICK)
            last = self.last
            if time.perf_counter() - last > STALL and last != seen:
                seen = last
                frame = sys._current_frames().get(self.ident)
                self.samples.append((time.perf_counter(), _stack(frame)))

    def dump(self) -> None:
        names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
        names[self.tid] = "loop"
        kinds: dict[str, int] = defaultdict(int)
        for obj in gc.garbage:
            kinds[_kind(obj)] += 1
        garbage = sorted(kinds.items(), key=lambda kv: -kv[1])[:40]
        cycles = _cycles(gc.garbage) if gc.garbage else []
        data = {"garbage": garbage, "cycles": cycles, "offset": self.offset, "tid": self.tid, "threads": names,
                "ticks": self.ticks, "stalls": self.stalls, "seconds": self.seconds,
                "gcs": self.gcs, "txs": self.txs, "samples": self.samples}
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.out)


def _kind(obj: object) -> str:
    """A collected object's type, with the function or coroutine it belongs to when it has one."""
    name = type(obj).__qualname__
    code = getattr(obj, "cr_code", None) or getattr(obj, "ag_code", None) or getattr(obj, "gi_code", None) \
        or getattr(obj, "f_code", None) or getattr(obj, "__code__", None)
    return f"{name} {code.co_qualname}" if code is not None else name


def _cycles(garbage: list[Any], per_type: int = 1) -> list[list[str]]:
    """For the first collected object of each of a few types, the shortest reference cycle through it,
    as `type.attribute` steps (diagnosis: which reference keeps a request's objects in a cycle)."""
    live = {id(o): o for o in garbage}
    out: list[list[str]] = []
    seen_types: dict[str, int] = defaultdict(int)
    for root in garbage:
        kind = _kind(root)
        if seen_types[kind] >= per_type or len(out) >= 40 or isinstance(root, (dict, list, tuple)):
            continue
        seen_types[kind] += 1
        prev: dict[int, int] = {id(root): 0}
        todo, found = [root], False
        while todo and not found:
            nxt = []
            for o in todo:
                for r in gc.get_referents(o):
                    if id(r) == id(root):
                        prev[-1] = id(o)
                        found = True
                        break
                    if id(r) in live and id(r) not in prev:
                        prev[id(r)] = id(o)
                        nxt.append(r)
                if found:
                    break
            todo = nxt
        if found:
            chain, at = [], prev[-1]
            while at != id(root):
                chain.append(at)
                at = prev[at]
            path = [root, *(live[i] for i in reversed(chain)), root]
            out.append([f"{_kind(a)}.{_via(a, b)}" for a, b in itertools.pairwise(path)])
    return out


def _via(a: Any, b: Any) -> str:
    """The attribute, key or index of `a` that refers to `b`."""
    d = getattr(a, "__dict__", None)
    items = list(d.items()) if isinstance(d, dict) else []
    items += [(n, getattr(a, n, None)) for n in getattr(type(a), "__slots__", ()) if isinstance(n, str)]
    if isinstance(a, dict):
        items += [(repr(k)[:30], v) for k, v in a.items()]
    if isinstance(a, (list, tuple)):
        items += [(f"[{i}]", v) for i, v in enumerate(a)]
    for name in ("__self__", "__func__", "cr_frame", "f_locals", "__closure__", "_callbacks"):
        if getattr(a, name, None) is b:
            return name
    return next((str(k) for k, v in items if v is b), "?")


def _stack(frame: FrameType | None, depth: int = 14) -> list[str]:
    out = []
    while frame is not None and len(out) < depth:
        code = frame.f_code
        out.append(f"{Path(code.co_filename).stem}.{code.co_name}:{frame.f_lineno}")
        frame = frame.f_back
    return out


def serve(argv: list[str]) -> int:
    """`sluice serve` with the probe installed (one worker)."""
    probe = Probe(Path(os.environ["SLUICE_STALLS_OUT"]), os.environ.get("SLUICE_STALLS_SAMPLE") == "1",
                  os.environ.get("SLUICE_STALLS_GARBAGE") == "1")
    import sluice.cli.serve as served
    from sluice.cli.main import main

    plain = served.serving_app

    def probed(settings: Any) -> Any:
        app = plain(settings)
        app.on_started.append(probe.start)
        return app
    served.serving_app = probed  # type: ignore[assignment]
    return main(argv)


def fsyncs(path: Path | None, tids: dict[int, str]) -> list[tuple[float, float, str]]:
    """(wall start, duration, thread) of each fsync/fdatasync in an `strace -f -tt -T` log."""
    out: list[tuple[float, float, str]] = []
    if path is None or not path.exists():
        return out
    day = time.strftime("%Y-%m-%d ")
    for line in path.read_text(errors="replace").splitlines():
        parts = line.split()
        if len(parts) < 3 or "sync(" not in line or "<" not in parts[-1]:
            continue
        try:
            tid = int(parts[0]) if parts[0].isdigit() else 0
            clock = parts[1] if tid else parts[0]
            hms, frac = clock.split(".")
            t = time.mktime(time.strptime(day + hms, "%Y-%m-%d %H:%M:%S")) + float("0." + frac)
            out.append((t, float(parts[-1].strip("<>")), tids.get(tid, str(tid))))
        except ValueError:
            continue
    return out


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def _cause(d: dict[str, Any], s0: float, late: float, cpu: float, rq: float,
           syncs: list[tuple[float, float, str]]) -> str:
    off, s1 = d["offset"], s0 + late
    for t0, dur, gen, _, on_loop, _ in d["gcs"]:
        if on_loop and _overlap(s0, s1, t0, t0 + dur) >= late / 3:
            return f"gc gen {gen}"
    for t0, dur, on_loop, _, ckpt in d["txs"]:
        if on_loop and _overlap(s0, s1, t0, t0 + dur) >= late / 3:
            fs = [f for f in syncs if f[2] == "loop" and _overlap(s0 + off, s1 + off, f[0], f[0] + f[1]) > 0]
            return f"sqlite tx on loop ({'a WAL checkpoint' if ckpt else 'no checkpoint'}" + \
                (", an fsync)" if fs else ")")
    if rq >= late / 2:
        return "descheduled (run queue)"
    stack = next((st for t, st in d["samples"] if s0 <= t <= s1 + TICK), None)
    where = _where(stack) if stack else "no sample"
    return f"{'busy' if cpu >= late / 2 else 'off-CPU'}: {where}"


def _where(stack: list[str]) -> str:
    """The innermost frame of Sluice's own code (else the innermost frame)."""
    ours = ("protocol", "exchange", "sqlite", "ledger", "relay", "lifecycle", "streaming", "openai_compat")
    return next((f for f in stack if f.split(".")[0] in ours), stack[0] if stack else "?")


def report(path: Path, strace: Path | None = None, window: tuple[float, float] | None = None) -> str:
    """Markdown: the stalls by cause (count, total, p50, max), the collections and the SQLite commits."""
    d = json.loads(path.read_text())
    off = d["offset"]
    tids = {int(k): v for k, v in d.get("threads", {}).items()}
    syncs = fsyncs(strace, tids)
    by: dict[str, list[float]] = defaultdict(list)
    for s0, late, cpu, rq in d["stalls"]:
        if window and not window[0] <= s0 + off <= window[1]:
            continue
        by[_cause(d, s0, late, cpu, rq, syncs)].append(late * 1e3)
    lines = [f"loop ticks {d['ticks']}; stalls > {STALL * 1e3:g} ms by cause:", "",
             "| cause | count | total ms | p50 ms | max ms |", "|---|--:|--:|--:|--:|"]
    for cause, ms in sorted(by.items(), key=lambda kv: -sum(kv[1])):
        ms.sort()
        lines.append(f"| {cause} | {len(ms)} | {sum(ms):.1f} | {ms[len(ms) // 2]:.1f} | {ms[-1]:.1f} |")
    lines.append("")
    for g in sorted({x[2] for x in d["gcs"]}):
        v = [x for x in d["gcs"] if x[2] == g]
        lines.append(f"gc gen {g}: {len(v)} collections, wall max {max(x[1] for x in v) * 1e3:.2f} ms, "
                     f"total {sum(x[1] for x in v) * 1e3:.1f} ms (CPU {sum(x[5] for x in v) * 1e3:.1f} ms); "
                     f"objects freed {sum(x[3] for x in v)}")
    for chain in d.get("cycles", []):
        lines.append("cycle: " + " -> ".join(chain))
    if d.get("garbage"):
        lines.append("collected, by type: " + ", ".join(f"{k} {n}" for k, n in d["garbage"][:25]))
    for on_loop in (True, False):
        txs = [tx for tx in d["txs"] if tx[2] == on_loop]
        durs = sorted(tx[1] * 1e3 for tx in txs)
        if durs:
            sizes = sorted(tx[3] for tx in txs)
            ckpt = [tx[1] * 1e3 for tx in txs if tx[4]]
            lines.append(f"sqlite tx on {'loop' if on_loop else 'store thread'}: {len(durs)}, "
                         f"p50 {durs[len(durs) // 2]:.2f} ms, max {durs[-1]:.2f} ms, "
                         f"> 2 ms: {sum(1 for x in durs if x > 2)}; batch p50 {sizes[len(sizes) // 2]}, "
                         f"max {sizes[-1]}; with a checkpoint: {len(ckpt)}"
                         + (f" ({', '.join(f'{x:.1f}' for x in ckpt)} ms)" if ckpt else ""))
    lines += _seconds(d.get("seconds", []))
    if syncs:
        for who in sorted({s[2] for s in syncs}):
            ms = sorted(s[1] * 1e3 for s in syncs if s[2] == who)
            lines.append(f"fsync on {who}: {len(ms)}, p50 {ms[len(ms) // 2]:.1f} ms, max {ms[-1]:.1f} ms")
    return "\n".join(lines)


def _seconds(secs: list[list[float]]) -> list[str]:
    """The loop thread's busy seconds (CPU over 20%), run-queue wait and collections, one per second: a loop
    whose CPU stays near 100% is saturated (its work is the limit), one that waits on the run queue is not
    given a core (the machine is)."""
    busy = [(t, cpu, rq, g) for t, cpu, rq, g in secs if cpu > 0.2]
    if not busy:
        return []
    t0 = busy[0][0]
    out = ["", f"loop per second (CPU > 20%: {len(busy)} s; CPU {sum(x[1] for x in busy):.1f} s, "
           f"run-queue wait {sum(x[2] for x in busy):.1f} s, collections {sum(x[3] for x in busy):.2f} s):", "",
           "| s | loop CPU % | run-queue wait % | collections % |", "|--:|--:|--:|--:|"]
    out += [f"| {t - t0:.0f} | {cpu * 100:.0f} | {rq * 100:.0f} | {g * 100:.1f} |" for t, cpu, rq, g in busy]
    return out


def probe_env(opts: Any, out: Path) -> tuple[dict[str, str], list[str]]:
    """The environment that makes `start_sluice` serve under the probe, and the command prefix: with
    --stalls-strace, strace (seccomp-bpf: only the traced calls stop the process) logs every fsync."""
    for name in ("stalls.json", "stalls-strace.log"):
        (out / name).unlink(missing_ok=True)
    env = {"SLUICE_STALLS_OUT": str((out / "stalls.json").resolve()),
           "SLUICE_STALLS_SAMPLE": "1" if opts.stalls_sample else "0",
           "SLUICE_STALLS_GARBAGE": "1" if opts.stalls_garbage else "0"}
    prefix = []
    if opts.stalls_strace and shutil.which("strace"):
        prefix = ["strace", "-f", "--seccomp-bpf", "-tt", "-T", "-e", "trace=fsync,fdatasync",
                  "-o", str((out / "stalls-strace.log").resolve())]
    return env, prefix


def dump(gateway: Any, out: Path) -> None:
    """Ask the probe (the serving Python process, under strace or not) to write what it saw."""
    if gateway is None or not gateway.server.alive():
        return
    pids = [p for p in gateway.server.pids() if p != gateway.server.pid] or [gateway.server.pid]
    os.kill(pids[0], signal.SIGUSR1)  # one worker: strace's child, else the server itself
    deadline = time.monotonic() + 10
    while not (out / "stalls.json").exists() and time.monotonic() < deadline:
        time.sleep(0.1)


def summary(out: Path) -> dict[str, Any]:
    """After the gateway stopped (strace has flushed its log): print, write and return the report."""
    path, log = out / "stalls.json", out / "stalls-strace.log"
    if not path.exists():
        return {"skipped": "the probe wrote nothing"}
    text = report(path, log if log.exists() else None)
    (out / "stalls.md").write_text(text + "\n")
    print("\n" + text, flush=True)
    return {"report": text}


if __name__ == "__main__":
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path.pop(0)  # run as a script: bench's modules must not shadow any top-level name
    if sys.argv[1:2] == ["serve"]:
        sys.exit(serve(sys.argv[1:]))
    if sys.argv[1:2] == ["report"]:
        print(report(Path(sys.argv[2]), Path(sys.argv[3]) if len(sys.argv) > 3 else None))
        sys.exit(0)
    sys.exit("usage: python -m bench.stalls serve <sluice serve args> | report FILE [STRACE_LOG]")
