"""Python bytecodes per request by component, for the per-request cost table in docs/decisions.md: runs
`bench.instructions` (same options) at two request counts under a `sys.settrace` opcode counter and prints
the difference per request, by component and by function. Deterministic (no timing, no sampling), so it
ranks Python costs on a loaded machine; C work (SQLite, orjson, hashing, the loop) is not in it, which is
what the callgrind count of `bench.instructions` adds.

    python -m bench.opcodes --n1 40 --n2 140 -- --door chat --kind plain --server --wire --uvloop
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import runpy
import subprocess
import sys
import tempfile
from types import FrameType
from typing import Any

COMPONENTS = [  # (path fragment, component): the first that matches names a function's component
    ("sluice/server/", "server"), ("http/lifecycle", "lifecycle"), ("http/disconnect", "lifecycle"),
    ("http/app.py", "app"), ("http/asgi", "response building"), ("_routes.py", "route"), ("_route.py", "route"),
    ("http/streaming", "stream response"), ("auth/", "auth"), ("schema/chat", "body parse"),
    ("dialects/", "dialect"), ("metering/pricing", "settlement: pricing"), ("metering/record", "record assembly"),
    ("metering/ledger", "ledger writer"), ("storage/", "ledger writer"), ("metering/", "admission"),
    ("routing/", "routing/failover"), ("relay.py", "relay"), ("providers/", "provider"), ("schema/", "provider"),
    ("sse.py", "provider"), ("upstream/", "upstream client"), ("prometheus_client", "metrics"),
    ("observability/metrics", "metrics"), ("observability/", "access log"), ("bench/", "bench driver"),
    ("asyncio", "asyncio (Python)"), ("_weakrefset", "asyncio (Python)"), ("<string>", "dataclass __init__"),
]


def _count(out: str, args: list[str]) -> None:
    """In the child: run bench.instructions with every executed bytecode counted per function."""
    counts: collections.Counter[tuple[str, str, int]] = collections.Counter()

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        code = frame.f_code
        key = (code.co_filename, code.co_name, code.co_firstlineno)

        def local(frame: FrameType, event: str, arg: Any) -> Any:
            if event == "opcode":
                counts[key] += 1
            return local
        return local

    sys.argv = ["bench.instructions", *args]
    sys.settrace(trace)
    try:
        runpy.run_module("bench.instructions", run_name="__main__", alter_sys=True)
    finally:
        sys.settrace(None)
        with open(out, "w") as f:
            json.dump([[*k, v] for k, v in counts.items()], f)


def _component(path: str) -> str:
    return next((c for frag, c in COMPONENTS if frag in path), "other: " + os.path.basename(path))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n1", type=int, default=40)
    ap.add_argument("--n2", type=int, default=140)
    ap.add_argument("--top", type=int, default=30, help="functions to list")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("rest", nargs=argparse.REMAINDER, help="-- then bench.instructions' options")
    a = ap.parse_args()
    rest = a.rest[1:] if a.rest[:1] == ["--"] else a.rest
    if a.child:
        _count(a.child, rest)
        return
    tmp = tempfile.mkdtemp()
    runs = []
    for n in (a.n1, a.n2):
        out = os.path.join(tmp, f"{n}.json")
        subprocess.run([sys.executable, "-m", "bench.opcodes", "--child", out, "--", *rest, "-n", str(n)], check=True,
                       env={**os.environ, "PYTHONHASHSEED": "0"}, stdout=subprocess.DEVNULL)
        with open(out) as f:
            runs.append({(p, name, line): v for p, name, line, v in json.load(f)})
    per = {k: (runs[1].get(k, 0) - runs[0].get(k, 0)) / (a.n2 - a.n1) for k in runs[0].keys() | runs[1].keys()}
    by: collections.Counter[str] = collections.Counter()
    for (path, _, _), v in per.items():
        by[_component(path)] += v
    total = sum(by.values())
    print(f"{total:,.0f} bytecodes per request")
    for name, v in by.most_common():
        if abs(v) >= 1:
            print(f"  {name:28s} {v:7,.0f}  {100 * v / total:5.1f}%")
    for (path, name, line), v in sorted(per.items(), key=lambda kv: -kv[1])[:a.top]:
        print(f"  {v:7,.0f}  {path.rsplit('sluice/', 1)[-1].rsplit('site-packages/', 1)[-1]}:{line} {name}")


if __name__ == "__main__":
    main()
