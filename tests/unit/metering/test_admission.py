"""Admission through the app on the injected clock: a key's rate limit refuses before any upstream call
and lets the next request in once the clock has moved; a token quota refuses what it cannot cover and
holds a reservation only while a request runs; reconciliation releases a dead instance's reservations
once the clock passes the instance timeout."""

from __future__ import annotations

import time
from pathlib import Path

import openai
import orjson
import pytest

from sluice.clock import ManualClock
from sluice.metering.admission import Admission
from sluice.metering.limits import MemoryLimiter
from sluice.storage.base import KeyRecord
from sluice.storage.sqlite import SQLiteStore
from sluice.upstream.mock import MockReply
from tests.harness import settings
from tests.inproc import gateway

MSGS: list[dict[str, str]] = [{"role": "user", "content": "hi"}]
REPLY = orjson.dumps({"id": "x", "object": "chat.completion", "created": 1, "model": "up",
                      "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                   "finish_reason": "stop"}],
                      "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}})


async def test_a_keys_rpm_refuses_without_calling_the_upstream_until_the_clock_moves(tmp_path: Path) -> None:
    clock = ManualClock()
    async with gateway(tmp_path, {"a.test": [MockReply.json(REPLY)]}, clock=clock, rpm=2) as gw:
        for _ in range(2):
            await gw.client.chat.completions.create(model="solo", messages=MSGS)  # type: ignore[arg-type]
        with pytest.raises(openai.RateLimitError) as got:
            await gw.client.chat.completions.create(model="solo", messages=MSGS)  # type: ignore[arg-type]
        assert got.value.response.headers["retry-after"] == "30"
        assert got.value.response.headers["x-request-id"].startswith("req_")
        assert len(gw.transport.requests) == 2
        clock.advance(30.0)
        await gw.client.chat.completions.create(model="solo", messages=MSGS)  # type: ignore[arg-type]
        assert len(gw.transport.requests) == 3


async def test_a_token_quota_refuses_what_it_cannot_cover_and_charges_what_was_used(tmp_path: Path) -> None:
    async with gateway(tmp_path, {"a.test": [MockReply.json(REPLY)]}, token_quota=200) as gw:
        with pytest.raises(openai.RateLimitError) as got:
            await gw.client.chat.completions.create(model="solo", messages=MSGS,  # type: ignore[arg-type]
                                                    max_tokens=10_000)
        assert got.value.code == "insufficient_quota" and not gw.transport.requests
        await gw.client.chat.completions.create(model="solo", messages=MSGS, max_tokens=50)  # type: ignore[arg-type]
        kid = gw.key.id
    store = SQLiteStore(f"sqlite:///{gw.db}")
    await store.open()
    try:
        key = await store.get_key(kid)
        assert key is not None and (key.tokens_used, key.tokens_reserved) == (7, 0)
        assert await store.count_reservations() == 0
    finally:
        await store.close()


async def test_reconciliation_releases_a_dead_instances_reservations_on_the_clock(tmp_path: Path) -> None:
    s = settings(tmp_path, {"budgets": {"instance_timeout_seconds": 15.0}})
    store = SQLiteStore(s.storage.url)
    await store.open()
    clock = ManualClock(wall=time.time())
    admission = Admission(s, store, MemoryLimiter(clock=clock), clock=clock)
    try:
        await store.create_key(KeyRecord("k1", "k", "hash", token_quota=100))
        await store.reconcile("dead", 15.0, 900.0, now=clock.time())  # its last heartbeat, then it dies
        assert await store.reserve("k1", "r1", 0, 40, "dead")
        assert await admission.reconcile() == 0
        clock.advance(14.0)
        assert await admission.reconcile() == 0
        clock.advance(2.0)
        assert await admission.reconcile() == 1
        key = await store.get_key("k1")
        assert key is not None and key.tokens_reserved == 0
    finally:
        await admission.aclose()
        await store.close()
