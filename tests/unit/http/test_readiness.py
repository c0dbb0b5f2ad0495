"""Readiness probes: cached for the ttl, shared by concurrent callers, a failing or hanging probe names
its dependency."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import aiohttp

from sluice.config import load
from sluice.http.app import create_app
from sluice.http.readiness import Readiness
from sluice.storage.sqlite import SQLiteStore
from tests.inproc import serving


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


class FlakyStore(SQLiteStore):
    """A real SQLite store whose database stops answering while `down` is set (the store is the seam)."""

    down = False

    async def count_reservations(self) -> int:
        if self.down:
            raise sqlite3.OperationalError("unable to open database file")
        return await super().count_reservations()


async def test_ready_names_the_database_while_it_fails(tmp_path: Path) -> None:
    settings = load(data_dir=str(tmp_path), overrides={"server.ready_cache_seconds": 0})
    store = FlakyStore(f"sqlite:///{tmp_path / 'sluice.db'}")
    app = create_app(settings, store=store)
    async with serving(app) as base, aiohttp.ClientSession() as http:
        async with http.get(base + "/ready") as r:
            assert (r.status, await r.json()) == (200, {"status": "ready"})
        store.down = True
        async with http.get(base + "/ready") as r:
            assert (r.status, await r.json()) == (503, {"status": "unavailable", "down": ["database"]})
            assert r.headers["x-request-id"].startswith("req_")
        async with http.get(base + "/health") as r:
            assert r.status == 200
        store.down = False
        async with http.get(base + "/ready") as r:
            assert r.status == 200
