"""Channels across instances: two in-process apps agree on a session's target and key with no shared state,
and share a key's `rpm` through one real Redis (the second app gets the next key, then a 503, as a single
instance would); without Redis an instance falls back to its own limit, warning once, and keys without
`rpm` never cost a Redis round trip."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from sluice.channels.hub import ChannelHub
from sluice.channels.pool import KeyPool, UpstreamKey
from sluice.channels.rates import RedisRates
from sluice.clock import ManualClock
from sluice.errors import error_for_upstream_status
from sluice.providers.registry import build_providers
from sluice.storage.sqlite import SQLiteStore
from sluice.upstream.mock import MockReply, MockTransport
from tests import harness
from tests.inproc import Gateway, gateway

REDIS_URL = "redis://127.0.0.1:6379/0"
DEAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens there: every call fails at once
MSGS: list[dict[str, str]] = [{"role": "user", "content": "hi"}]
REPLY = orjson.dumps({"id": "c1", "object": "chat.completion", "created": 1, "model": "up", "choices": [
    {"index": 0, "message": {"role": "assistant", "content": "pong"}, "finish_reason": "stop"}]})


def _secrets(n: int) -> list[str]:
    """Keys no other test uses: their fingerprints name the Redis keys, so each test has its own."""
    run = uuid.uuid4().hex
    return [f"sk-cluster-{run}-{i}" for i in range(n)]


def _config(keys: list[Any], redis_url: str | None = None) -> dict[str, Any]:
    """Providers a and b (a with the pool `keys`), model `m` over both in one tier."""
    doc: dict[str, Any] = {
        "providers": [{"name": "a", "kind": "openai", "base_url": "http://a.test/v1", "api_keys": keys},
                      {"name": "b", "kind": "openai", "base_url": "http://b.test/v1", "api_key": "sk-b-0000000000"}],
        "models": [{"name": "m", "free": True, "targets": [{"provider": "a", "model": "up-a"},
                                                           {"provider": "b", "model": "up-b"}]},
                   {"name": "solo", "free": True, "targets": [{"provider": "a", "model": "up-a"}]}]}
    if redis_url:
        doc["redis"] = {"url": redis_url}
    return doc


@asynccontextmanager
async def two_apps(tmp_path: Path, doc: dict[str, Any]) -> AsyncIterator[tuple[Gateway, Gateway]]:
    """Two instances of Sluice in process, each with its own store, client and state, on one config."""
    async with AsyncExitStack() as stack:
        apps = []
        for name in ("one", "two"):
            (tmp_path / name).mkdir()
            apps.append(await stack.enter_async_context(
                gateway(tmp_path / name, {"a.test": [MockReply.json(REPLY)], "b.test": [MockReply.json(REPLY)]},
                        doc=doc)))
        yield apps[0], apps[1]


def _served(gw: Gateway) -> list[str]:
    """(host, key) of each upstream request, in order."""
    return [f"{r.url.split('/')[2]} {r.headers['authorization'].removeprefix('Bearer ')}"
            for r in gw.transport.requests]


@pytest.fixture
async def redis_keys() -> AsyncIterator[list[str]]:
    """Fresh upstream keys for a test on the real Redis (skipped without one); their Redis keys go after."""
    admin = await harness.redis_or_skip(REDIS_URL)
    keys = _secrets(3)
    try:
        yield keys
    finally:
        for k in keys:
            await admin.delete(f"sluice:uk:{{{UpstreamKey(k).id}}}:rpm")
        await admin.aclose()


async def test_two_instances_send_a_session_to_the_same_target_and_key(tmp_path: Path) -> None:
    # fixed keys (this test uses no Redis), so where rendezvous hashing sends the 12 sessions is fixed too:
    # with fresh random keys, now and then all of a.test's sessions landed on one key and the test failed
    keys = [f"sk-affinity-{i}" for i in range(3)]
    async with two_apps(tmp_path, _config(keys)) as (one, two):
        for i in range(12):
            for gw in (one, two, one):
                await gw.client.chat.completions.create(model="m", messages=MSGS,  # type: ignore[arg-type]
                                                        extra_headers={"X-Claude-Code-Session-Id": f"s-{i}"})
        seen_one, seen_two = _served(one), _served(two)
    per_session = [{seen_one[2 * i], seen_one[2 * i + 1], seen_two[i]} for i in range(12)]
    assert all(len(s) == 1 for s in per_session)  # each session: one target and one key, on both instances
    served = {s.pop() for s in per_session}
    assert {s.split()[0] for s in served} == {"a.test", "b.test"}  # and the sessions spread over targets
    assert len({s for s in served if s.startswith("a.test")}) > 1  # and over a's keys


@pytest.mark.redis
async def test_a_keys_rpm_is_shared_by_two_instances_through_redis(tmp_path: Path, redis_keys: list[str]) -> None:
    k1, k2, _ = redis_keys
    doc = _config([{"key": k1, "rpm": 1}, {"key": k2, "rpm": 1}], REDIS_URL)
    async with two_apps(tmp_path, doc) as (one, two):
        await one.client.chat.completions.create(model="solo", messages=MSGS)  # type: ignore[arg-type]
        await two.client.chat.completions.create(model="solo", messages=MSGS)  # type: ignore[arg-type]
        with pytest.raises(openai.APIStatusError) as full:
            await one.client.chat.completions.create(model="solo", messages=MSGS)  # type: ignore[arg-type]
        assert full.value.status_code == 503 and "no_upstream_key" in str(full.value.body)
        with pytest.raises(openai.APIStatusError):
            await two.client.chat.completions.create(model="solo", messages=MSGS)  # type: ignore[arg-type]
        # each app's rotation starts with k1: the second app was told by Redis that k1 had had its minute
        assert _served(one) == [f"a.test {k1}"] and _served(two) == [f"a.test {k2}"]


@pytest.mark.redis
async def test_redis_answers_are_mirrored_so_a_full_key_is_not_asked_again(redis_keys: list[str]) -> None:
    clock = ManualClock()
    one, two = RedisRates(REDIS_URL, clock=clock), RedisRates(REDIS_URL, clock=clock)  # two processes' clients
    mine, theirs = UpstreamKey(redis_keys[0], rpm=2), UpstreamKey(redis_keys[0], rpm=2)
    try:
        assert await one.take(mine) and await two.take(theirs)
        assert not await one.take(mine)                      # the burst of two was spent between them
        pool = KeyPool("p", [mine, UpstreamKey(redis_keys[1])], clock)
        assert [k.id for k in pool.order()] == [UpstreamKey(redis_keys[1]).id]  # known full: left out locally
        clock.advance(30.0)                                  # the mirror lets it be asked again in ~30 s
        assert mine in pool.order()
    finally:
        await one.aclose()
        await two.aclose()


async def test_without_redis_the_local_limit_holds_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    rates = RedisRates(DEAD_REDIS, clock=clock, retry_after=5.0)
    key = UpstreamKey(_secrets(1)[0], rpm=1)
    with caplog.at_level(logging.WARNING, logger="sluice.channels"):
        assert await rates.take(key)
        assert not await rates.take(key)   # this instance's own GCRA: one a minute
        clock.advance(5.0)                 # Redis asked again, still down: no second warning
        assert not await rates.take(key)
        clock.advance(55.0)
        assert await rates.take(key)
    await rates.aclose()
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == ["shared key rates unavailable"]


async def test_keys_without_rpm_never_ask_redis(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    plain, limited = _secrets(2)
    s = harness.settings(tmp_path, {"redis": {"url": DEAD_REDIS}, **harness.one_upstream(
        "http://up.test/v1", ["m"], name="pool", api_keys=[{"key": plain, "weight": 100}, {"key": limited, "rpm": 5}])})
    store = SQLiteStore(f"sqlite:///{tmp_path / 'sluice.db'}")
    await store.open()
    hub = ChannelHub(s, build_providers(s.providers, MockTransport(lambda r: MockReply.json(REPLY))), store)

    async def attempt(key: str | None) -> str:
        assert key is not None
        return key

    async def refuse_plain(key: str | None) -> str:
        if key == plain:
            raise error_for_upstream_status(429, "slow down", retry_after=1.0)
        assert key is not None
        return key

    try:
        with caplog.at_level(logging.WARNING, logger="sluice.channels"):
            assert {await hub.call("pool", attempt) for _ in range(5)} == {plain}
            assert caplog.records == []                         # no rpm: Redis was never asked
            assert await hub.call("pool", refuse_plain) == limited  # an rpm key: asked, down, counted locally
            assert "shared key rates unavailable" in caplog.records[-1].getMessage()
    finally:
        await hub.aclose()
        await store.close()
