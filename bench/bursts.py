"""TTFB by a stream's place in its burst: the stream-latency scenario's shape (300 streams of 20 chunks, 20 ms
to the first and 10 ms apart, 20 closed-loop clients), sent direct and through a fresh Sluice, each stream's
time to response head grouped by its place among the sends that left within 2 ms of each other. A tail set
by queueing on the gateway's loop rises with the place; one set by stalls does not.

    python -m bench.bursts [--sluice-root DIR]
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from bench import load, targets
from bench.scenarios import STREAM_BODY, _req

SHAPE = {"x-bench-chunks": "20", "x-bench-ttft-ms": "20", "x-bench-gap-ms": "10"}
BURST_US = 2000


async def _sends(host: str, port: int, req: bytes, n: int, concurrency: int) -> list[tuple[int, int]]:
    pool = load.Pool(host, port, limit=concurrency)
    raw: list[tuple[int, int]] = []

    async def one() -> None:
        resp = await pool.send(req, stream=True)
        raw.append((resp.sent_us, resp.headers_us - resp.sent_us))

    await asyncio.gather(*(one() for _ in range(n)))
    pool.close()
    return raw


def by_place(sends: list[tuple[int, int]]) -> dict[int, list[float]]:
    """TTFB (ms) of every send, keyed by its place in the burst it left with."""
    places: dict[int, list[float]] = {}
    start, k = -BURST_US - 1, 0
    for sent, ttfb in sorted(sends):
        if sent - start > BURST_US:
            start, k = sent, 0
        places.setdefault(k, []).append(ttfb / 1000)
        k += 1
    return places


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sluice-root", type=Path, default=Path(__file__).resolve().parent.parent)
    ap.add_argument("--out", type=Path, default=Path("bench/out/bursts"))
    opts = ap.parse_args()
    (opts.out / "logs").mkdir(parents=True, exist_ok=True)
    up = targets.start_upstream(opts.out)
    gw = targets.start_sluice(opts.sluice_root, opts.out, up.port)
    try:
        for t in (up, gw):
            places = by_place(load.run(_sends, "127.0.0.1", t.port, _req(t, STREAM_BODY, SHAPE), 300, 20))
            print(f"{t.name}: {len(places[0])} bursts; median TTFB by place in the burst")
            for k, v in sorted(places.items()):
                v.sort()
                print(f"  place {k:2d}  n {len(v):3d}  {v[len(v) // 2]:6.2f} ms")
    finally:
        for t in (gw, up):
            if t.server is not None:
                t.server.stop()


if __name__ == "__main__":
    main()
