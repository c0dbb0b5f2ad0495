"""`python -m bench.servers`: the server candidates for the relay path as hello-world apps (read a small
JSON POST, answer a small JSON), each saturated with wrk, CPU per request from /proc: uvicorn (ASGI,
httptools, uvloop: Sluice's server until issue 16), Sluice's own protocol under uvicorn's Server (ASGI,
`sluice/server/`), granian ASGI and RSGI, and the bare floor of an own asyncio + httptools protocol,
interpreted and compiled with mypyc (bench/own_server.py)."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import wrk
from bench.proc import Server, cpu_seconds, free_port

REPO = Path(__file__).resolve().parent.parent
BODY = b'{"model":"bench-model","messages":[{"role":"user","content":"Say hello to the benchmark."}]}'
REPLY = b'{"object":"hello","ok":true}'


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        msg = await receive()
        more = msg.get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(REPLY))]})
    await send({"type": "http.response.body", "body": REPLY})


async def rsgi_app(scope: Any, proto: Any) -> None:
    await proto()
    proto.response_bytes(200, [("content-type", "application/json")], REPLY)


def _mypyc_build(tmp: Path) -> Path:
    """Compile bench/own_server.py with mypyc into tmp; returns the directory to put on PYTHONPATH."""
    src = tmp / "own_server.py"
    shutil.copy(REPO / "bench" / "own_server.py", src)
    subprocess.run([sys.executable, "-m", "mypyc", "own_server.py"], cwd=tmp, check=True,
                   capture_output=True, timeout=600)
    src.unlink()  # the compiled extension must be what is imported
    return tmp


def candidates(port: int, tmp: Path, only: list[str]) -> dict[str, tuple[list[str], dict[str, str]]]:
    py, env = sys.executable, dict(os.environ, PYTHONPATH=str(REPO))
    uvicorn = (f"import uvicorn; uvicorn.run('bench.servers:asgi_app', host='127.0.0.1', port={port}, "
               "loop='uvloop', http='httptools', access_log=False, log_level='warning')")
    granian = [py, "-m", "granian", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
               "--loop", "uvloop", "--no-access-log", "--log-level", "warning"]
    sluice = (f"import uvicorn; from sluice.server.protocol import HttpProtocol; "
              f"uvicorn.run('bench.servers:asgi_app', host='127.0.0.1', port={port}, loop='uvloop', "
              "http=HttpProtocol, access_log=False, log_level='warning')")
    out = {"uvicorn-asgi": ([py, "-c", uvicorn], env),
           "sluice-protocol-asgi": ([py, "-c", sluice], env),
           "granian-asgi": ([*granian, "--interface", "asgi", "bench.servers:asgi_app"], env),
           "granian-rsgi": ([*granian, "--interface", "rsgi", "bench.servers:rsgi_app"], env),
           "own-protocol": ([py, "-m", "bench.own_server", str(port)], env)}
    if only:
        out = {k: v for k, v in out.items() if k in only}
        if "own-protocol-mypyc" not in only:
            return out
    try:
        built = _mypyc_build(tmp)
        out["own-protocol-mypyc"] = ([py, "-c", f"import own_server; own_server.main({port})"],
                                     dict(env, PYTHONPATH=f"{built}{os.pathsep}{REPO}"))
    except (subprocess.SubprocessError, OSError) as e:
        print(f"mypyc build failed, skipped: {e}", flush=True)
    return out


def measure(name: str, argv: list[str], env: dict[str, str], port: int, a: argparse.Namespace,
            tmp: Path) -> dict[str, Any]:
    srv = Server(name, argv, tmp / f"{name}.log", env=env)
    try:
        srv.wait_ready(port, None, timeout=30)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        wrk.saturate(url, BODY, {}, a.conns, 1, 1, tmp)  # warm-up
        c0 = cpu_seconds(srv.pids())
        r = wrk.saturate(url, BODY, {}, a.conns, a.duration, 1, tmp)
        r["cpu_us"] = (cpu_seconds(srv.pids()) - c0) * 1e6 / max(1, r["requests"])
        r["rps"] = r["requests"] / r["elapsed"]
        r.pop("raw", None)
        return r
    finally:
        srv.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.servers", description=__doc__)
    ap.add_argument("--duration", type=float, default=4.0, help="seconds per measurement (1-60)")
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2, help="rounds, candidates alternating (1-5)")
    ap.add_argument("--only", nargs="+", default=[], metavar="NAME",
                    help="these candidates only (uvicorn-asgi, sluice-protocol-asgi, granian-asgi, granian-rsgi, "
                         "own-protocol, own-protocol-mypyc)")
    a = ap.parse_args(argv)
    a.duration, a.rounds = min(max(a.duration, 1.0), 60.0), min(max(a.rounds, 1), 5)
    if not wrk.available():
        print("wrk is required (apt-get install -y wrk)")
        return 1
    with tempfile.TemporaryDirectory(prefix="bench-servers-") as d:
        tmp = Path(d)
        port = free_port()
        cands = candidates(port, tmp, a.only)
        for i in range(a.rounds):
            for name, (cmd, env) in cands.items():
                try:
                    r = measure(name, cmd, env, port, a, tmp)
                except RuntimeError as e:
                    print(f"round {i + 1} {name:20s} failed: {str(e)[-300:]}", flush=True)
                    continue
                print(f"round {i + 1} {name:20s} {r['rps']:9.0f} req/s  {r['cpu_us']:6.1f} µs CPU/request  "
                      f"p50 {r['p50_us'] / 1000:.3f} ms  errors {r['errors']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
