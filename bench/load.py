"""Load generation workloads on the raw client: closed-loop saturation, open-loop fixed rate, measured
streams and many held slow streams; `parallel` spreads a workload over forked processes."""

from __future__ import annotations

import asyncio
import gc
import itertools
import multiprocessing
import time
from collections.abc import Callable, Coroutine
from typing import Any

import orjson

from bench.httpclient import Connection, Pool, Response


def now_us() -> int:
    return time.time_ns() // 1000


async def closed_loop(host: str, port: int, req: bytes, conns: int, duration: float) -> dict[str, Any]:
    """`conns` connections each sending back-to-back for `duration` seconds."""
    deadline = time.monotonic() + duration
    lat: list[int] = []
    errors = 0

    async def worker() -> int:
        nonlocal errors
        done = 0
        conn = await Connection.open(host, port)
        while time.monotonic() < deadline:
            t = now_us()
            try:
                resp = await conn.request(req)
            except ConnectionError:
                errors += 1
                conn = await Connection.open(host, port)
                continue
            if resp.status != 200:
                errors += 1
            lat.append(now_us() - t)
            done += 1
            if conn.closed:
                conn = await Connection.open(host, port)
        conn.close()
        return done

    t0 = time.monotonic()
    counts = await asyncio.gather(*(worker() for _ in range(conns)))
    elapsed = time.monotonic() - t0
    return {"requests": sum(counts), "errors": errors, "elapsed": elapsed, "lat_us": lat}


async def open_loop(host: str, port: int, req: bytes, rate: float, duration: float) -> dict[str, Any]:
    """Requests at fixed intervals whatever the responses do (a busy connection never delays the next
    request: it goes on another). `lat_us` counts from the write, `sched_lat_us` from the scheduled
    time, which also includes the client's own timer lateness (libuv timers tick in milliseconds)."""
    pool = Pool(host, port, limit=2048)
    n = max(1, int(rate * duration))
    lat: list[int] = []
    sched_lat: list[int] = []
    errors = 0

    async def one(scheduled_us: int) -> None:
        nonlocal errors
        try:
            resp = await asyncio.wait_for(pool.send(req), 10)
        except (TimeoutError, OSError):
            errors += 1
            return
        if resp.status != 200:
            errors += 1
        end = now_us()
        lat.append(end - resp.sent_us)
        sched_lat.append(end - scheduled_us)

    # warm a few connections so the first requests do not pay the TCP handshake
    await asyncio.gather(*(pool.send(req) for _ in range(min(8, n))))
    tasks = []
    t0 = now_us()
    for i in range(n):
        sched = t0 + int(i * 1e6 / rate)
        delay = sched - now_us()
        if delay > 0:
            await asyncio.sleep(delay / 1e6)
        tasks.append(asyncio.ensure_future(one(sched)))
    await asyncio.gather(*tasks)
    elapsed = (now_us() - t0) / 1e6
    pool.close()
    return {"requests": n, "errors": errors, "elapsed": elapsed, "lat_us": lat, "sched_lat_us": sched_lat,
            "conns": pool.count}


def analyse_stream(resp: Response, sent_us: int, expect_chunks: int) -> dict[str, Any]:
    """Client-side timings of one stream, and upstream send stamps (bench_ts) where they survived."""
    content_recv: list[int] = []
    content_sent: list[int] = []
    text = 0
    done = False
    for recv, ev in resp.events:
        data = ev[6:] if ev.startswith(b"data: ") else ev.partition(b"data:")[2].strip()
        if data == b"[DONE]":
            done = True
            continue
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            continue
        kind = obj.get("type")
        if kind in ("response.completed", "message_stop"):  # Responses and Anthropic end so, not [DONE]
            done = True
            continue
        choices = obj.get("choices") or []
        if kind == "response.output_text.delta":
            piece = obj.get("delta")
        elif kind == "content_block_delta":
            piece = (obj.get("delta") or {}).get("text")
        else:
            piece = (choices[0].get("delta") or {}).get("content") if choices else None
        if piece:
            text += len(piece)
            content_recv.append(recv)
            if "bench_ts" in obj:
                content_sent.append(obj["bench_ts"])
    stamped = len(content_sent) == len(content_recv)
    out: dict[str, Any] = {
        "intact": resp.status == 200 and done and len(content_recv) == expect_chunks,
        "chunks": len(content_recv),
        "chars": text,
        "ttfb_us": resp.headers_us - sent_us if resp.headers_us else None,
        "ttfc_us": content_recv[0] - sent_us if content_recv else None,
        "duration_us": (resp.events[-1][0] - sent_us) if resp.events else None,
        "gaps_us": [b - a for a, b in itertools.pairwise(content_recv)],
    }
    if stamped and content_sent:
        out["delay_us"] = [r - s for r, s in zip(content_recv, content_sent, strict=True)]
        # jitter a hop adds to a gap: client-side gap minus the upstream's own send gap
        out["gap_dev_us"] = [(r2 - r1) - (s2 - s1) for r1, r2, s1, s2 in zip(
            content_recv, content_recv[1:], content_sent, content_sent[1:], strict=False)]
    return out


async def streams(host: str, port: int, req: bytes, n: int, concurrency: int,
                  expect_chunks: int, limit_s: float = 60.0) -> list[dict[str, Any]]:
    """n streams, `concurrency` at a time, each analysed after it ends."""
    pool = Pool(host, port, limit=concurrency)
    raw: list[tuple[Response | None, int]] = []

    async def one() -> None:
        try:
            resp = await asyncio.wait_for(pool.send(req, stream=True), limit_s)
            raw.append((resp, resp.sent_us))
        except (TimeoutError, OSError):
            raw.append((None, 0))

    await asyncio.gather(*(one() for _ in range(n)))
    pool.close()
    return [analyse_stream(r, s, expect_chunks) if r is not None else {"intact": False}
            for r, s in raw]


async def held(host: str, port: int, req: bytes, n: int, expect_chunks: int, limit_s: float,
               connect_concurrency: int = 200) -> dict[str, Any]:
    """n concurrent slow streams, each on its own connection; connects are throttled so the accept
    queue is not the thing measured. Returns per-stream durations and how many arrived intact."""
    gate = asyncio.Semaphore(connect_concurrency)
    started = asyncio.Event()
    opened = 0
    durations: list[int] = []
    intact = 0
    errors: dict[str, int] = {}

    async def one() -> None:
        nonlocal intact, opened
        try:
            async with gate:
                conn = await asyncio.wait_for(Connection.open(host, port), 30)
            opened += 1
            if opened == n:
                started.set()
            resp = await asyncio.wait_for(conn.request(req, stream=True), limit_s)
            conn.close()
        except (TimeoutError, OSError) as e:
            errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
            return
        a = analyse_stream(resp, resp.sent_us, expect_chunks)
        if a["intact"]:
            intact += 1
        if a["duration_us"] is not None:
            durations.append(a["duration_us"])

    t0, cpu0 = time.monotonic(), time.process_time()
    await asyncio.gather(*(one() for _ in range(n)))
    return {"n": n, "intact": intact, "durations_us": durations, "errors": errors,
            "elapsed": time.monotonic() - t0, "cpu_s": time.process_time() - cpu0}


def _child(fn: Callable[..., Coroutine[Any, Any, Any]], args: tuple[Any, ...]) -> Any:
    import uvloop

    from bench.proc import raise_nofile
    raise_nofile()
    gc.collect()
    gc.freeze()  # the collector's pauses would show up as latency
    gc.disable()
    try:
        return uvloop.run(fn(*args))
    finally:
        gc.enable()


def run(fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Any:
    """Run one workload on uvloop in this process."""
    return _child(fn, args)


def parallel(fn: Callable[..., Coroutine[Any, Any, Any]], arg_list: list[tuple[Any, ...]]) -> list[Any]:
    """Run one workload per argument tuple, each in its own forked process, and collect the results."""
    if len(arg_list) == 1:
        return [_child(fn, arg_list[0])]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(len(arg_list)) as pool:
        return pool.starmap(_child, [(fn, a) for a in arg_list])
