"""`python -m bench`: start the fake upstream, Sluice and any peers, run the chosen scenarios against
each in turn, print the figures and write bench/out/report.md, results.json and latency.png."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from bench import stalls, wrk
from bench.fronts import FRONT_SCENARIOS
from bench.proc import raise_nofile, status_kb
from bench.report import markdown, plot
from bench.scenarios import SCENARIOS as _BASE
from bench.scenarios import Bench, say
from bench.targets import Target, start_litellm, start_nginx, start_sluice, start_upstream

REPO = Path(__file__).resolve().parent.parent
# the front doors and concurrency 1 run right after the stream latency scenario
_ORDER = ["plain-saturation", "plain-latency", "latency-c1", "stream-latency", "front-doors"]
_ALL = {**_BASE, **FRONT_SCENARIOS}
SCENARIOS = {**{k: _ALL[k] for k in _ORDER}, **{k: v for k, v in _ALL.items() if k not in _ORDER}}


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="everything small, under ~60 s (smoke)")
    ap.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), metavar="NAME",
                    help=f"run only these (repeatable): {', '.join(SCENARIOS)}")
    ap.add_argument("--workers", type=int, default=2, help="Sluice workers compared to one (default 2)")
    ap.add_argument("--with-litellm", action="store_true", help="also measure LiteLLM proxy (installs it)")
    ap.add_argument("--with-nginx", action="store_true", help="also measure nginx proxy_pass")
    ap.add_argument("--duration", type=float, default=None,
                    help="seconds per measurement (default 5; 2 quick)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    ap.add_argument("--sluice-root", type=Path, default=REPO,
                    help="checkout whose `sluice` package is run (default: this repo)")
    ap.add_argument("--no-sluice", action="store_true", help="direct (and peers) only")
    ap.add_argument("--budgets-config", help="TOML fragment appended to Sluice's config to turn budgets on")
    ap.add_argument("--conns", type=int, default=64, help="connections for saturation (default 64)")
    ap.add_argument("--rates", type=int, nargs="+", help="open-loop rates (default 100 500 1000 2000)")
    ap.add_argument("--held", type=int, nargs="+", help="held stream counts (default 1000 5000)")
    ap.add_argument("--upstream-procs", type=int, default=1, help="fake upstream processes (SO_REUSEPORT)")
    ap.add_argument("--stalls", action="store_true",
                    help="serve Sluice under bench/stalls.py's loop probe; print its stalls by cause")
    ap.add_argument("--stalls-sample", action="store_true", help="with --stalls: the loop's stack per stall")
    ap.add_argument("--stalls-garbage", action="store_true",
                    help="with --stalls: count what the collector frees, by type (DEBUG_SAVEALL)")
    ap.add_argument("--stalls-strace", action="store_true", help="with --stalls: strace every fsync")
    ap.add_argument("--python-load", action="store_true", help="saturate with the Python client, not wrk")
    a = ap.parse_args(argv)
    if a.duration is None:
        a.duration = 2.0 if a.quick else 5.0
    a.duration = min(max(a.duration, 1.0), 120.0)  # every run bounded
    return a


def _start_targets(a: argparse.Namespace, out: Path, up: Target, notes: list[str]) -> list[Target]:
    targets = [up]
    starters = []
    if not a.no_sluice:
        probe = stalls.probe_env(a, out) if a.stalls else None
        starters.append(("sluice", lambda: start_sluice(a.sluice_root, out, up.port, probe=probe)))
    if a.with_nginx:
        starters.append(("nginx", lambda: start_nginx(out, up.port)))
    if a.with_litellm:
        starters.append(("litellm", lambda: start_litellm(out, up.port)))
    for name, start in starters:
        say(f"starting {name}...")
        try:
            t = start()
        except Exception as e:
            msg = f"{name} skipped: {str(e).strip()[-600:]}"
            say("  " + msg.replace("\n", "\n  "))
            notes.append(msg.splitlines()[0] + (" (see bench/out/logs)" if name == "sluice" else ""))
            continue
        t.rss_idle_kb = status_kb(t.gw_pids(), "VmRSS")
        say(f"  {name} ready on 127.0.0.1:{t.port}")
        targets.append(t)
    return targets


def _loadavg() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    out: Path = a.out
    out.mkdir(parents=True, exist_ok=True)
    nofile = raise_nofile()
    notes: list[str] = []
    if nofile < 12000:
        notes.append(f"RLIMIT_NOFILE is only {nofile}; 5,000 held streams may fail for lack of fds")
    if os.environ.get("PYTHONDONTWRITEBYTECODE") is None and a.sluice_root != REPO:
        os.environ["PYTHONDONTWRITEBYTECODE"] = "1"  # do not write into another checkout
    names = a.scenario or list(SCENARIOS)
    tool = "wrk" if wrk.available() and not a.python_load else "python (raw asyncio + uvloop)"
    results: dict = {"meta": {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "cpus": os.cpu_count(),
                              "quick": a.quick, "saturation_tool": tool, "duration_s": a.duration,
                              "notes": notes, "scenarios": names}}
    say(f"bench: scenarios {', '.join(names)}; saturation via {tool}; out {out}")
    t0 = time.monotonic()
    load0 = _loadavg()
    up = start_upstream(out, a.upstream_procs)
    say(f"fake upstream ready on 127.0.0.1:{up.port}")
    targets = _start_targets(a, out, up, notes)
    results["meta"]["sluice"] = "running" if any(t.name == "sluice" for t in targets) else "not running"
    b = Bench(a, out, up, targets, a.sluice_root.resolve(), results)
    try:
        for name in names:
            say(f"== {name}")
            try:
                SCENARIOS[name](b)
            except Exception as e:
                say(f"  {name} failed: {type(e).__name__}: {e}")
                results[name] = {"skipped": f"failed: {type(e).__name__}: {e}"}
    except KeyboardInterrupt:
        say("interrupted; writing what was measured")
    finally:
        if a.stalls:
            stalls.dump(b.gateway(), out)
        for t in reversed(targets):
            t.stop()
    if a.stalls:
        results["stalls"] = stalls.summary(out)
    results["meta"]["elapsed_s"] = round(time.monotonic() - t0, 1)
    load_end = _loadavg()
    if max(load0, load_end) > 1.0:
        notes.append(f"machine not idle: load average {load0:.2f} at start, {load_end:.2f} at end "
                     "(other processes share the 2 cores; figures are noisier)")
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    report = markdown(results, [t.name for t in targets])
    (out / "report.md").write_text(report)
    plotted = plot(results, out / "latency.png")
    say("\n" + report)
    say(f"wrote {out / 'report.md'}, {out / 'results.json'}"
        + (f", {out / 'latency.png'}" if plotted else " (no plot: matplotlib missing or no latency run)"))
    say(f"total {results['meta']['elapsed_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
