"""Saturation through wrk (C, one thread per core) with a Lua script for the POST; parses its summary.
Used when wrk is installed because a Python load generator would share the gateway's two cores less
economically (see NOTES.md)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6}


def available() -> bool:
    return shutil.which("wrk") is not None


def _lua(body: bytes, headers: dict[str, str]) -> str:
    def q(s: str) -> str:
        return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"

    lines = ['wrk.method = "POST"', f"wrk.body = {q(body.decode())}",
             "wrk.headers['Content-Type'] = 'application/json'"]
    lines += [f"wrk.headers[{q(k)}] = {q(v)}" for k, v in headers.items()]
    return "\n".join(lines) + "\n"


def _lat_us(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


def saturate(url: str, body: bytes, headers: dict[str, str], conns: int, duration: float,
             threads: int, workdir: Path) -> dict[str, Any]:
    """Run wrk; return requests, errors, elapsed and latency p50/p99 (microseconds)."""
    script = workdir / "wrk-post.lua"
    script.write_text(_lua(body, headers))
    argv = ["wrk", f"-t{threads}", f"-c{max(conns, threads)}", f"-d{max(1, round(duration))}s",
            "--timeout", "10s", "--latency", "-s", str(script), url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60).stdout
    res: dict[str, Any] = {"tool": "wrk", "raw": out}
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    if not m:
        raise RuntimeError(f"wrk output not understood:\n{out}")
    res["requests"] = int(m.group(1))
    res["elapsed"] = _lat_us(m.group(2) + m.group(3)) / 1e6
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    res["errors"] = errors
    for pct, key in (("50", "p50_us"), ("99", "p99_us")):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", out, re.M)
        res[key] = _lat_us(m.group(1)) if m else None
    return res
