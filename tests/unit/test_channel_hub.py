"""The channel hub on an injected clock: a rate-limited key rests for the upstream's retry-after, a key at
its own rpm comes back as the minute allows, and an auto-disabled key is probed once its probe interval
has passed on the clock, not before. No test waits for a wall-clock window."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from sluice.channels.hub import ChannelHub
from sluice.channels.pool import fingerprint
from sluice.clock import ManualClock
from sluice.errors import UpstreamError, UpstreamUnavailable, error_for_upstream_status
from sluice.providers.registry import build_providers
from sluice.storage.base import UpstreamKeyState
from sluice.storage.sqlite import SQLiteStore
from sluice.upstream.mock import MockReply, MockRequest, MockTransport
from tests import harness

K1, K2 = "sk-test-hub-key-0000001", "sk-test-hub-key-0000002"
REPLY = orjson.dumps({"id": "c1", "object": "chat.completion", "created": 1, "model": "m", "choices": [
    {"index": 0, "message": {"role": "assistant", "content": "pong"}, "finish_reason": "stop"}]})


class CountingStore(SQLiteStore):
    """Counts the hub's reads of the shared key states: each tick of its loop starts with one."""

    syncs = 0

    async def list_upstream_key_states(self) -> list[UpstreamKeyState]:
        self.syncs += 1
        return await super().list_upstream_key_states()

    async def states(self) -> dict[str, str]:
        """The shared states (by key secret), read without counting."""
        ids = {fingerprint(k): k for k in (K1, K2)}
        return {ids[st.key_id]: st.state for st in await super().list_upstream_key_states()}


class Hub:
    """A hub over a pool of keys, its store, its clock, and an upstream that refuses the keys in `refused`."""

    def __init__(self, hub: ChannelHub, store: CountingStore, clock: ManualClock, transport: MockTransport,
                 refused: set[str]) -> None:
        self.hub, self.store, self.clock, self.transport, self.refused = hub, store, clock, transport, refused

    async def call(self, fail: dict[str, UpstreamError] | None = None) -> str:
        """One attempt through the pool; a key in `fail` gets that error. Returns the key that served."""
        async def attempt(key: str | None) -> str:
            assert key is not None
            if fail and key in fail:
                raise fail[key]
            return key
        return await self.hub.call("pool", attempt)

    def state(self, secret: str) -> str:
        return next(str(k["state"]) for k in self.hub.public()[0]["keys"] if k["id"] == fingerprint(secret))

    async def tick(self) -> None:
        """One whole tick of the background loop: woken, and over once the next one has started."""
        for _ in range(2):
            seen = self.store.syncs
            self.hub.wake()
            await _until(lambda seen=seen: self.store.syncs > seen)

    def probes(self) -> list[str]:
        return [r.headers["authorization"].removeprefix("Bearer ") for r in self.transport.requests]


async def _until(cond: Callable[[], bool]) -> None:
    """Poll `cond` (the hub's loop runs between polls), 5 s at most."""
    for _ in range(5000):
        if cond():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("the condition never held")


@pytest.fixture
def pool(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The pool's provider fields: K1 and K2, or the keys a test parametrizes (indirect)."""
    keys = getattr(request, "param", [K1, K2])
    return {"api_keys": keys, "probe_model": "m", "probe_interval": 60}


@pytest.fixture
async def hub(tmp_path: Path, pool: dict[str, Any]) -> AsyncIterator[Hub]:
    s = harness.settings(tmp_path, {"channels": {"poll_seconds": 3600, "cooldown_seconds": 30},
                                    **harness.one_upstream("http://up.test/v1", ["m"], name="pool", **pool)})
    refused: set[str] = set()

    def upstream(req: MockRequest) -> MockReply:
        if req.headers["authorization"].removeprefix("Bearer ") in refused:
            return MockReply.json(b'{"error": {"message": "Incorrect API key provided", "type": '
                                  b'"invalid_request_error", "code": "invalid_api_key"}}', status=401)
        return MockReply.json(REPLY)

    transport = MockTransport(upstream)
    store = CountingStore(f"sqlite:///{tmp_path / 'sluice.db'}")
    await store.open()
    clock = ManualClock()
    channels = ChannelHub(s, build_providers(s.providers, transport), store, clock=clock)
    await channels.start()
    try:
        yield Hub(channels, store, clock, transport, refused)
    finally:
        await channels.aclose()
        await store.close()


async def test_a_rate_limited_key_rests_for_the_upstreams_retry_after_on_the_clock(hub: Hub) -> None:
    slow_down = error_for_upstream_status(429, "slow down", retry_after=7.0)
    assert await hub.call({K1: slow_down}) == K2          # K1 came first, was told to wait; K2 served
    assert hub.state(K1) == "cooling"
    hub.clock.advance(6.9)
    assert {await hub.call() for _ in range(4)} == {K2}   # still resting
    hub.clock.advance(0.1)
    assert {await hub.call() for _ in range(4)} == {K1, K2}
    assert hub.state(K1) == "active"


async def test_without_a_retry_after_the_configured_cooldown_applies(hub: Hub) -> None:
    await hub.call({K1: error_for_upstream_status(429, "slow down")})
    hub.clock.advance(29.9)
    assert {await hub.call() for _ in range(4)} == {K2}
    hub.clock.advance(0.1)
    assert {await hub.call() for _ in range(4)} == {K1, K2}


@pytest.mark.parametrize("pool", [[{"key": K1, "weight": 100, "rpm": 2}, {"key": K2, "rpm": 1}]], indirect=True)
async def test_a_key_at_its_rpm_comes_back_as_the_minute_allows(hub: Hub) -> None:
    assert [await hub.call() for _ in range(3)] == [K1, K1, K2]   # K1's burst of two, then the other key
    with pytest.raises(UpstreamUnavailable) as full:
        await hub.call()
    assert full.value.code == "no_upstream_key"
    hub.clock.advance(29.9)
    with pytest.raises(UpstreamUnavailable):
        await hub.call()
    hub.clock.advance(0.1)                                 # 60/rpm seconds after K1's first request
    assert await hub.call() == K1
    with pytest.raises(UpstreamUnavailable):
        await hub.call()
    hub.clock.advance(30)                                  # a minute after K2's only request
    assert {await hub.call(), await hub.call()} == {K1, K2}


async def test_an_auto_disabled_key_is_probed_when_its_interval_has_passed_not_before(hub: Hub) -> None:
    refused = error_for_upstream_status(401, "Incorrect API key provided")
    assert await hub.call({K1: refused}) == K2
    assert hub.state(K1) == "disabled_auto"
    for _ in range(5000):                                   # shared in the background
        if K1 in await hub.store.states():
            break
        await asyncio.sleep(0.001)
    hub.clock.advance(59.9)
    await hub.tick()
    assert hub.probes() == [] and hub.state(K1) == "disabled_auto"
    hub.refused.add(K1)                                     # the first probe finds the key still refused
    hub.clock.advance(0.1)
    await hub.tick()
    assert hub.probes() == [K1] and hub.state(K1) == "disabled_auto"
    hub.refused.clear()                                     # the upstream takes it again: the next probe
    hub.clock.advance(59.9)                                 # is an interval after the last one
    await hub.tick()
    assert hub.probes() == [K1]
    hub.clock.advance(0.1)
    await hub.tick()
    assert hub.probes() == [K1, K1] and hub.state(K1) == "active"
    assert (await hub.store.states())[K1] == "active"       # re-enabled for every instance
    assert {await hub.call() for _ in range(4)} == {K1, K2}

