"""A `sluice serve` killed mid-stream (SIGKILL: no shutdown code runs) leaves no money locked: after a restart
the dead instance's reservations are released within `instance_timeout_seconds`, every request that
finished before the kill is in the ledger exactly once, and `spent` is the sum of the ledger's costs.
Also what SIGTERM does to open streams (they get `shutdown_grace_seconds`, then end with a
`server_shutdown` error event and are recorded; more in test_drain.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sluice.providers.simulated import DEFAULT_REPLY, tokenize
from tests.e2e.cluster import (
    ADMIN_TOKEN,
    SluiceServer,
    aquery,
    chat_body,
    free_port,
    serving,
    storage_for,
    two_speed_config,
)

pytestmark = pytest.mark.slow

NANO = Decimal(1_000_000_000)
WORDS = len(tokenize(DEFAULT_REPLY))  # the simulated model's reply, in its tokens


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with storage_for(request.param, tmp_path, "sluice_crash") as url:
        yield url


def _config(tmp_path: Path, storage_url: str, *, slow_tps: float, grace: float = 5.0) -> Path:
    return two_speed_config(tmp_path, storage_url, slow_tps=slow_tps, server={"shutdown_grace_seconds": grace},
                            tables={"budgets": {"instance_timeout_seconds": 2}})


async def _admin(session: aiohttp.ClientSession, url: str, method: str = "GET",
                 body: dict[str, Any] | None = None) -> dict[str, Any]:
    async with session.request(method, url, json=body, headers={"authorization": f"Bearer {ADMIN_TOKEN}"}) as r:
        doc: dict[str, Any] = await r.json()
        assert r.status in (200, 201), doc
        return doc


async def _finish(session: aiohttp.ClientSession, base: str, secret: str, stream: bool) -> str:
    async with session.post(base + "/v1/chat/completions", json=chat_body("fast-sim", stream),
                            headers={"authorization": f"Bearer {secret}"}) as r:
        data = await r.read()
        assert r.status == 200, data
        if stream:
            assert data.rstrip().endswith(b"data: [DONE]"), data[-200:]
        return r.headers["x-request-id"]


async def _open_stream(session: aiohttp.ClientSession, base: str, secret: str) -> aiohttp.ClientResponse:
    """A slow stream, read until its first content event: admitted, reserved and under way."""
    r = await session.post(base + "/v1/chat/completions", json=chat_body("slow-sim", True),
                           headers={"authorization": f"Bearer {secret}"})
    assert r.status == 200, await r.read()
    while b'"content":"' not in (line := await r.content.readuntil(b"\n\n")) or b'"content":""' in line:
        pass
    return r


async def _settled(storage_url: str, key_id: str) -> tuple[int, list[tuple[Any, ...]]]:
    rows = await aquery(storage_url, "SELECT request_id, cost FROM ledger WHERE key_id = ?", key_id)
    return sum(r[1] or 0 for r in rows), rows


async def test_sigkill_mid_stream_leaves_no_money_locked(storage_url: str, tmp_path: Path) -> None:
    cfg = _config(tmp_path, storage_url, slow_tps=5)   # a slow stream takes ~9 s
    first = SluiceServer(cfg, free_port(), tmp_path / "first.log").start()
    try:
        await asyncio.to_thread(first.wait_ready)
        async with aiohttp.ClientSession() as session:
            key = await _admin(session, first.url + "/admin/keys", "POST", {"name": "crash", "budget": "1"})
            secret, kid = key["key"], key["id"]
            finished = [await _finish(session, first.url, secret, stream=i % 2 == 1) for i in range(5)]
            streams = [await _open_stream(session, first.url, secret) for _ in range(4)]
            cut_ids = [r.headers["x-request-id"] for r in streams]
            held = await _admin(session, f"{first.url}/admin/keys/{kid}")
            assert Decimal(held["reserved"]) > 0
            assert await aquery(storage_url, "SELECT count(*) FROM reservations") == [(4,)]
            spent_before = Decimal(held["spent"])

            first.kill()
            killed_at = time.monotonic()
            for r in streams:
                with contextlib.suppress(aiohttp.ClientError):
                    await r.read()
                r.release()
    finally:
        first.kill()

    async with serving(cfg, tmp_path, "second") as second, aiohttp.ClientSession() as session:
        while True:
            now = await _admin(session, f"{second.url}/admin/keys/{kid}")
            left = await aquery(storage_url, "SELECT count(*) FROM reservations")
            if Decimal(now["reserved"]) == 0 and left == [(0,)]:
                break
            assert time.monotonic() - killed_at < 10, (now, left)
            await asyncio.sleep(0.2)
        released_after = time.monotonic() - killed_at

        for rid in finished:
            assert await aquery(storage_url, "SELECT count(*) FROM ledger WHERE request_id = ?", rid) == [(1,)], rid
        for rid in cut_ids:  # unfinished when the process died: no record, so not charged
            assert await aquery(storage_url, "SELECT count(*) FROM ledger WHERE request_id = ?", rid) == [(0,)]
        settled, rows = await _settled(storage_url, kid)
        assert len(rows) == len({r[0] for r in rows})
        spent = Decimal(now["spent"])
        assert spent * NANO == settled > 0
        assert spent == spent_before
        # the released money is usable again at once
        assert await _finish(session, second.url, secret, stream=True)
    print(f"\n{storage_url.split(':')[0]}: 4 streams killed holding {held['reserved']}; released "
          f"{released_after:.1f}s after SIGKILL; spent {spent} = ledger sum over {len(rows)} records")


async def test_sigterm_lets_open_streams_finish_within_the_grace(storage_url: str, tmp_path: Path) -> None:
    cfg = _config(tmp_path, storage_url, slow_tps=15, grace=10)   # a slow stream takes ~3 s
    server = SluiceServer(cfg, free_port(), tmp_path / "term.log").start()
    try:
        await asyncio.to_thread(server.wait_ready)
        async with aiohttp.ClientSession() as session:
            key = await _admin(session, server.url + "/admin/keys", "POST", {"name": "term", "budget": "1"})
            r = await _open_stream(session, server.url, key["key"])
            server.signal(signal.SIGTERM)
            # uvicorn closes its listening socket at once: new connections are refused (so a proxy sends
            # them elsewhere), while the open stream goes on
            async with asyncio.timeout(3):
                while True:
                    try:
                        async with aiohttp.ClientSession() as fresh, fresh.get(server.url + "/ready") as probe:
                            await probe.read()
                    except aiohttp.ClientConnectionError:
                        break
                    await asyncio.sleep(0.05)
            rest = await r.read()
            r.release()
            assert rest.rstrip().endswith(b"data: [DONE]"), rest[-200:]
            # uvicorn re-raises the SIGTERM it handled once shutdown is complete
            assert await asyncio.to_thread(server.proc.wait, 15) in (0, -signal.SIGTERM)  # type: ignore[union-attr]
    finally:
        server.kill()
    rid = r.headers["x-request-id"]
    rows = await aquery(storage_url, "SELECT completion_tokens, disconnected FROM ledger WHERE request_id = ?", rid)
    assert [(n, bool(d)) for n, d in rows] == [(WORDS, False)]
    assert await aquery(storage_url, "SELECT count(*) FROM reservations") == [(0,)]


async def test_sigterm_past_the_grace_ends_streams_with_an_error_and_records_them(storage_url: str,
                                                                                 tmp_path: Path) -> None:
    cfg = _config(tmp_path, storage_url, slow_tps=5, grace=1)    # ~9 s stream, 1 s grace
    server = SluiceServer(cfg, free_port(), tmp_path / "cut.log").start()
    try:
        await asyncio.to_thread(server.wait_ready)
        async with aiohttp.ClientSession() as session:
            key = await _admin(session, server.url + "/admin/keys", "POST", {"name": "cut", "budget": "1"})
            r = await _open_stream(session, server.url, key["key"])
            t0 = time.monotonic()
            server.signal(signal.SIGTERM)
            rest = await r.read()
            r.release()
            assert time.monotonic() - t0 < 5
            await asyncio.to_thread(server.proc.wait, 15)  # type: ignore[union-attr]
    finally:
        server.kill()
    # not cut silently: the last event is the error, in OpenAI's envelope, and there is no [DONE]
    assert b"[DONE]" not in rest
    assert rest.endswith(b'"type":"server_error","param":null,"code":"server_shutdown"}}\n\n'), rest[-300:]
    rid = r.headers["x-request-id"]
    rows = await aquery(storage_url, "SELECT completion_tokens, cost, error_code FROM ledger WHERE request_id = ?",
                        rid)
    assert len(rows) == 1 and 0 < rows[0][0] < WORDS and rows[0][1] > 0 and rows[0][2] == "server_shutdown", rows
    assert await aquery(storage_url, "SELECT count(*) FROM reservations") == [(0,)]
    spent = await aquery(storage_url, "SELECT spent, reserved FROM keys WHERE id = ?", key["id"])
    assert spent == [(rows[0][1], 0)]
