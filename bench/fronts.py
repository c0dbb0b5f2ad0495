"""Scenarios for every front door (chat, Anthropic Messages and Responses, each passed through or
translated, and embeddings: Sluice's CPU per request and added time to first content chunk beside
nginx), and the concurrency-1 latency scenario the public gateway benchmarks report."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

import orjson

from bench import load
from bench.httpclient import Connection, Pool
from bench.proc import cpu_seconds
from bench.scenarios import PLAIN_BODY, Bench, _req, pct, say
from bench.targets import HOST, Target


def _body(model: str, kind: str, stream: bool) -> bytes:
    prompt = "Say hello to the benchmark."
    if kind == "responses":
        obj: dict[str, Any] = {"model": model, "max_output_tokens": 32, "input": prompt}
    elif kind == "embeddings":
        return orjson.dumps({"model": model, "input": prompt})
    else:
        obj = {"model": model, "max_tokens": 32, "messages": [{"role": "user", "content": prompt}]}
        if kind == "chat" and stream:
            obj["stream_options"] = {"include_usage": True}
    if stream:
        obj["stream"] = True
    return orjson.dumps(obj)


_ANTHROPIC = {"anthropic-version": "2023-06-01"}
# (door, path, body for Sluice, extra headers); direct and nginx get the same request from the fake
# upstream, which speaks every dialect natively, so "added" is the whole cost of the door through Sluice
DOORS: list[tuple[str, str, bytes, dict[str, str]]] = [
    ("chat completions, pass-through", "/v1/chat/completions", _body("bench-model", "chat", True), {}),
    ("Anthropic messages, pass-through", "/v1/messages", _body("bench-claude", "messages", True), _ANTHROPIC),
    ("Anthropic messages, translated from chat", "/v1/messages", _body("bench-model", "messages", True),
     _ANTHROPIC),
    ("Responses, pass-through", "/v1/responses", _body("bench-native", "responses", True), {}),
    ("Responses, translated from chat", "/v1/responses", _body("bench-model", "responses", True), {}),
    ("embeddings (plain)", "/v1/embeddings", _body("bench-model", "embeddings", False), {}),
]


async def plain_batch(host: str, port: int, req: bytes, n: int, concurrency: int) -> list[dict[str, Any]]:
    """n plain requests, `concurrency` at a time; latency from the write to the whole reply."""
    pool = Pool(host, port, limit=concurrency)
    out: list[dict[str, Any]] = []

    async def one() -> None:
        try:
            resp = await pool.send(req)
        except OSError:
            out.append({"intact": False})
            return
        lat = load.now_us() - resp.sent_us
        out.append({"intact": resp.status == 200, "ttfc_us": lat})

    for _ in range(n // concurrency):
        await asyncio.gather(*(one() for _ in range(concurrency)))
    pool.close()
    return out


def _door_run(t: Target, path: str, body: bytes, extra: dict[str, str], n: int, conc: int,
              shape: dict[str, str], chunks: int) -> tuple[list[dict[str, Any]], float | None]:
    """One batch against one target: the per-request records and the gateway CPU µs per request."""
    pids = t.gw_pids()
    cpu0 = cpu_seconds(pids)
    req = _req(t, body, shape, path, extra)
    if orjson.loads(body).get("stream"):
        recs = load.run(load.streams, HOST, t.port, req, n, conc, chunks)
    else:
        recs = load.run(plain_batch, HOST, t.port, req, n, conc)
    return recs, ((cpu_seconds(pids) - cpu0) / n * 1e6 if pids else None)


def front_doors(b: Bench) -> None:
    """Per door: CPU per request and requests/s with 20 in flight (streams of 20 chunks sent at once,
    so the gateway's work is all there is) and TTFC (5 chunks, first after 20 ms), every target
    alternately, two rounds."""
    rounds = 1 if b.quick else 2
    n_cpu, n_ttfc = (200, 40) if b.quick else (600, 200)
    cpu_shape = {"x-bench-chunks": "20", "x-bench-ttft-ms": "0", "x-bench-gap-ms": "0"}
    ttfc_shape = {"x-bench-chunks": "5", "x-bench-ttft-ms": "20", "x-bench-gap-ms": "5"}
    res: dict[str, Any] = {"shape": {"cpu_streams": n_cpu, "ttfc_streams": n_ttfc, "concurrency": 20}}
    for door, path, body, extra in DOORS:
        row: dict[str, Any] = {t.name: {"cpu_us": [], "ttfc_p50_us": [], "ttfc_p99_us": [], "intact": 0,
                                        "n": 0} for t in b.targets}
        for _ in range(rounds):
            for t in b.targets:
                r = row[t.name]
                t0 = time.monotonic()
                recs, cpu = _door_run(t, path, body, extra, n_cpu, 20, cpu_shape, 20)
                r.setdefault("rps", []).append(n_cpu / (time.monotonic() - t0))
                r["intact"] += sum(1 for x in recs if x.get("intact"))
                r["n"] += n_cpu
                if cpu is not None:
                    r["cpu_us"].append(cpu)
                recs, _ = _door_run(t, path, body, extra, n_ttfc, 20, ttfc_shape, 5)
                ttfc = [x["ttfc_us"] for x in recs if x.get("ttfc_us") is not None]
                r["ttfc_p50_us"].append(pct(ttfc, 50))
                r["ttfc_p99_us"].append(pct(ttfc, 99))
                r["intact"] += sum(1 for x in recs if x.get("intact"))
                r["n"] += n_ttfc
                say(f"  [{door}] {t.name:8s} CPU/request {_us(cpu)}  TTFC p50 {_us(r['ttfc_p50_us'][-1])} "
                    f"p99 {_us(r['ttfc_p99_us'][-1])}  intact {r['intact']}/{r['n']}")
        for r in row.values():
            r["rps_med"] = statistics.median(r["rps"])
            for k in ("cpu_us", "ttfc_p50_us", "ttfc_p99_us"):
                vals = [v for v in r[k] if v is not None]
                r[k.replace("_us", "_med_us")] = statistics.median(vals) if vals else None
        res[door] = row
    b.results["front-doors"] = res


def _us(v: float | None) -> str:
    return "   n/a" if v is None else f"{v:7.0f} µs"


async def sequential(host: str, port: int, req: bytes, n: int, warm: int = 200) -> dict[str, Any]:
    """One client, one keep-alive connection, one request at a time: latency from write to reply."""
    conn = await Connection.open(host, port)
    lat: list[int] = []
    errors = 0
    for i in range(warm + n):
        resp = await conn.request(req)
        if resp.status != 200:
            errors += 1
        if i >= warm:
            lat.append(load.now_us() - resp.sent_us)
        if conn.closed:
            conn = await Connection.open(host, port)
    conn.close()
    return {"lat_us": lat, "errors": errors}


def latency_c1(b: Bench) -> None:
    """Concurrency 1: p50/p99/p99.9 of plain chat completions, each target alternately, two rounds."""
    rounds = 1 if b.quick else 2
    n = 1000 if b.quick else 4000  # p99.9 of 4,000 is the 4th-worst request
    res: dict[str, Any] = {"n": n, "rounds": rounds}
    for i in range(rounds):
        for t in b.targets:
            r = load.run(sequential, HOST, t.port, _req(t, PLAIN_BODY), n)
            lat = r.pop("lat_us")
            row = {"p50_us": pct(lat, 50), "p99_us": pct(lat, 99), "p999_us": pct(lat, 99.9),
                   "errors": r["errors"]}
            res.setdefault(t.name, []).append(row)
            say(f"  [c1 round {i + 1}] {t.name:8s} p50 {_us(row['p50_us'])}  p99 {_us(row['p99_us'])}  "
                f"p99.9 {_us(row['p999_us'])}  errors {row['errors']}")
            time.sleep(0.2)
    b.results["latency-c1"] = res


FRONT_SCENARIOS: dict[str, Callable[[Bench], None]] = {"front-doors": front_doors, "latency-c1": latency_c1}
