"""Readiness probes: cached for the ttl, shared by concurrent callers, a failing or hanging probe names
its dependency."""

from __future__ import annotations

import asyncio

from sluice.http.readiness import Readiness


async def test_probe_results_are_cached_and_shared() -> None:
    calls = 0
    gate, started = asyncio.Event(), asyncio.Event()

    async def db() -> None:
        nonlocal calls
        calls += 1
        started.set()
        await gate.wait()

    ready = Readiness({"database": db}, ttl=3600)
    waiting = [asyncio.create_task(ready.down()) for _ in range(5)]
    await started.wait()
    gate.set()
    assert await asyncio.gather(*waiting) == [[]] * 5
    assert await ready.down() == []
    assert calls == 1


async def test_a_failing_or_hanging_probe_is_named() -> None:
    async def ok() -> None:
        return None

    async def broken() -> None:
        raise ConnectionError("refused")

    async def hangs() -> None:
        await asyncio.Event().wait()

    ready = Readiness({"database": ok, "redis": broken, "other": hangs}, ttl=0, timeout=0.05)
    assert await ready.down() == ["redis", "other"]  # the hanging probe is cut by the timeout
