"""A client that goes away cancels the upstream call (mid-stream and while waiting for the first token),
and the ledger still records the request exactly once, marked disconnected."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.e2e.conftest import SluiceServer
from tests.e2e.rawhttp import RawConn, chat_body
from tests.sim.openai_sim import Fault, ThreadedSim

CLOSE_WITHIN = 3.0  # generous: the brief asks for ~1-2 s


async def _wait(pred: Any, within: float) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if pred():
            return True
        await asyncio.sleep(0.02)
    return bool(pred())


async def _new_ledger_rows(sluice: SluiceServer, before: set[str], within: float = 3.0) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def poll() -> bool:
        rows[:] = [r for r in sluice.ledger() if r["request_id"] not in before]
        return bool(rows)
    await _wait(poll, within)
    await asyncio.sleep(0.5)  # a second (duplicate) record would have been flushed by now
    poll()
    return rows


async def _open_stream(sluice: SluiceServer, key: str, model: str = "gpt-4o") -> RawConn:
    conn = await RawConn.open(sluice.port)
    await conn.send("POST", "/v1/chat/completions", body=chat_body(model),
                    headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    return conn


async def _assert_upstream_cancelled_and_ledger(sluice: SluiceServer, sim: ThreadedSim, before: set[str],
                                                aborted_at: float, status: int | None = None) -> None:
    assert await _wait(lambda: sim.requests and sim.requests[0].client_closed, CLOSE_WITHIN), \
        "the upstream connection was not closed after the client went away"
    rec = sim.requests[0]
    assert rec.closed_at is not None and rec.closed_at >= aborted_at
    assert not rec.completed
    assert len(sim.requests) == 1  # no retry after the client left
    rows = await _new_ledger_rows(sluice, before)
    assert len(rows) == 1, rows
    assert rows[0]["disconnected"] == 1
    assert rows[0]["model"] == "gpt-4o" and rows[0]["stream"] == 1
    if status is not None:
        assert rows[0]["status"] == status


def _ids(sluice: SluiceServer) -> set[str]:
    return {r["request_id"] for r in sluice.ledger()}


async def test_disconnect_mid_stream_cancels_the_upstream(sluice: SluiceServer, api_key: str,
                                                          sim: ThreadedSim) -> None:
    before = _ids(sluice)
    sim.push(Fault(pause_after={2: 10.0}))
    conn = await _open_stream(sluice, api_key)
    head = await conn.head()
    assert head.status == 200
    got = b""
    while got.count(b"data: ") < 2:
        c = await conn.chunk()
        assert c is not None
        got += c
    conn.abort()
    aborted = time.monotonic()
    await _assert_upstream_cancelled_and_ledger(sluice, sim, before, aborted, status=200)
    rows = [r for r in sluice.ledger() if r["request_id"] == head.get("x-request-id")]
    assert len(rows) == 1


@pytest.mark.parametrize("fault", [Fault.slow_first_byte(10.0), Fault.slow_first_chunk(10.0)],
                         ids=["slow-first-byte", "slow-first-chunk"])
async def test_disconnect_while_waiting_for_the_first_token(sluice: SluiceServer, api_key: str,
                                                             sim: ThreadedSim, fault: Fault) -> None:
    before = _ids(sluice)
    sim.push(fault)
    conn = await _open_stream(sluice, api_key)
    if fault.first_event_delay:
        head = await conn.head()  # the upstream answered at once, so the 200 went out
        assert head.status == 200
    else:
        assert await _wait(lambda: bool(sim.requests), 5.0)
        await asyncio.sleep(0.2)
    conn.abort()
    aborted = time.monotonic()
    await _assert_upstream_cancelled_and_ledger(sluice, sim, before, aborted,
                                                status=499 if fault.first_byte_delay else 200)


async def test_disconnect_from_the_simulated_provider_is_recorded(sluice: SluiceServer, api_key: str) -> None:
    before = _ids(sluice)
    conn = await _open_stream(sluice, api_key, model="sim-local-slow")
    head = await conn.head()
    assert head.status == 200
    c = await conn.chunk()
    assert c is not None
    conn.abort()
    rows = await _new_ledger_rows(sluice, before)
    assert len(rows) == 1 and rows[0]["disconnected"] == 1 and rows[0]["request_id"] == head.get("x-request-id")
