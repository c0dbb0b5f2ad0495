"""Bytes a held stream keeps alive, by door and request-body size: the ASGI app driven in process against a
MockTransport (bench/instructions.py's config and replies), N streams opened and each held in its first body
`send` (a client that reads slowly), then the memory still allocated, per stream: traced (tracemalloc, with
the top allocation sites) and RSS. tracemalloc over-counts orjson's output ~10x for large documents (it does
not see orjson shrink its buffer: a 200 KB `orjson.dumps` is traced as ~2 MB, RSS grows 200 KB), so a body's
bytes weigh by RSS. Whether the request body (raw bytes, parsed JSON, canonical request) lives as long as the
stream shows as a per-stream figure that grows with the body:

    python -m bench.held_memory --door chat --body 200000 -n 100
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import os
import tracemalloc
from typing import Any

import orjson

from bench.instructions import DOORS, _replies, prepare, receiver


async def _start(cfg: str, tmp: str, door: str) -> tuple[Any, Any, dict[str, Any]]:
    """The app against a MockTransport that streams each door's frames, started, with a key; and the scope."""
    from sluice.auth.keys import hash_key, new_key
    from sluice.config import load
    from sluice.http.app import create_app
    from sluice.storage.base import KeyRecord
    from sluice.storage.sqlite import SQLiteStore
    from sluice.upstream.mock import MockReply, MockRequest, MockTransport

    replies = _replies()

    def upstream(req: MockRequest) -> MockReply:
        api = req.url.rsplit("/", 1)[-1]
        frames, _ = replies[api if api in replies else "chat"]
        return MockReply(200, {"content-type": "text/event-stream"}, list(frames))

    store = SQLiteStore(f"sqlite:///{tmp}/s.db")
    mock = MockTransport(upstream)
    app = create_app(load(cfg), store=store, transport=mock)
    await app.startup()
    kid, secret = new_key()
    await store.create_key(KeyRecord(kid, "b", hash_key(secret)))
    headers = [(b"authorization", f"Bearer {secret}".encode()), (b"content-type", b"application/json"),
               (b"anthropic-version", b"2023-06-01")]
    scope = {"type": "http", "method": "POST", "path": DOORS[door][0], "headers": headers, "query_string": b"",
             "scheme": "http", "http_version": "1.1", "server": ("t", 1), "client": ("c", 2)}
    return app, mock, scope


async def _run(cfg: str, tmp: str, door: str, size: int, n: int, top: int) -> None:
    app, mock, scope = await _start(cfg, tmp, door)
    _, model, extra = DOORS[door]
    loop = asyncio.get_running_loop()
    release: asyncio.Future[None] = loop.create_future()
    never: asyncio.Future[None] = loop.create_future()

    def body_of(i: int) -> bytes:
        text = f"{i} " + "x" * max(0, size - 120)   # each request its own body, as agents' are
        doc = {"model": model, "stream": True, **extra}
        if "messages" in doc:
            doc["messages"] = [{"role": "user", "content": text}]
        else:
            doc["input"] = text
        return orjson.dumps(doc)

    async def one(i: int, held: asyncio.Event) -> None:
        receive = receiver(body_of(i), never)

        async def send(msg: dict[str, Any]) -> None:
            assert msg.get("status", 200) == 200, msg
            if msg["type"] == "http.response.body" and not held.is_set():
                held.set()
                await asyncio.shield(release)  # the client reads slowly: the stream is held here

        await app(dict(scope), receive, send)

    async def batch(k: int) -> list[asyncio.Task[None]]:
        events = [asyncio.Event() for _ in range(k)]
        tasks = [asyncio.create_task(one(i, e)) for i, e in enumerate(events)]
        await asyncio.gather(*(e.wait() for e in events))
        return tasks

    warm = await batch(10)  # caches, pools, first-use allocations
    release.set_result(None)
    await asyncio.gather(*warm)
    release = loop.create_future()
    gc.collect()
    tracemalloc.start(25)
    before = tracemalloc.take_snapshot()
    rss = _rss()
    tasks = await batch(n)
    mock.requests.clear()  # the mock records what was sent upstream; the real client keeps none of it
    gc.collect()
    rss = _rss() - rss
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    _report(f"{door} body={len(body_of(0))} B n={n}", after.compare_to(before, "traceback"), rss, n, top)
    release.set_result(None)
    await asyncio.gather(*tasks)
    await app.shutdown()


def _report(title: str, diff: list[tracemalloc.StatisticDiff], rss: int, n: int, top: int) -> None:
    total = sum(d.size_diff for d in diff)
    print(f"{title}: {total / n / 1024:.1f} KB traced, {rss / n / 1024:.1f} KB RSS per held stream")
    for d in diff[:top]:
        frames = [f for f in d.traceback if "/sluice/" in f.filename] or list(d.traceback)
        where = " <- ".join(f"{os.path.basename(f.filename)}:{f.lineno}" for f in frames[-1:-4:-1])
        print(f"  {d.size_diff / n / 1024:8.1f} KB/stream  {where}")


def _rss() -> int:
    """Resident bytes, after glibc hands freed heap back (else RSS shows the set-up's peak, not what is held)."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--door", choices=sorted(DOORS), default="chat")
    ap.add_argument("--body", type=int, default=200, help="request body size in bytes (about)")
    ap.add_argument("-n", type=int, default=100)
    ap.add_argument("--top", type=int, default=6)
    ap.add_argument("--root", help="a checkout whose `sluice` to run instead of this one (A/B)")
    args = ap.parse_args()
    tmp, cfg = prepare(args.root)
    asyncio.run(_run(cfg, tmp, args.door, args.body, args.n, args.top))


if __name__ == "__main__":
    main()
