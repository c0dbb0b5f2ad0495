"""Rate limits: the same behaviour checked against MemoryLimiter and RedisLimiter (one or several)."""

from __future__ import annotations

import asyncio
import math
import re
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from sluice.clock import ManualClock
from sluice.errors import RateLimited, SluiceError
from sluice.metering.limits import Limiter, LimitSpec, MemoryLimiter, go_duration
from sluice.metering.redis_limits import RedisLimiter
from tests.harness import redis_or_skip

REDIS_URL = "redis://127.0.0.1:6379/0"

MakeLimiters = Callable[..., list[Limiter]]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[MakeLimiters]:
    """`make(n=1, stale_after=900.0)` -> n limiters sharing state: for Redis, n separate clients and
    connection pools (as n processes would have) under one fresh key prefix; for memory, one instance."""
    created: list[Limiter] = []
    prefix = f"sluice-test:{uuid.uuid4().hex}:"
    admin: aioredis.Redis | None = None
    if request.param == "redis":
        admin = await redis_or_skip(REDIS_URL)

    def factory(n: int = 1, stale_after: float = 900.0) -> list[Limiter]:
        if request.param == "memory":
            one = MemoryLimiter(stale_after=stale_after)
            created.append(one)
            return [one] * n
        # the answer bound is production's concern (tests/unit/metering cover the 503); here it only ends a hung
        # run, so a loaded machine opening 200 connections at once cannot turn into a refused admit
        many: list[Limiter] = [RedisLimiter(REDIS_URL, prefix=prefix, stale_after=stale_after, timeout=60.0)
                               for _ in range(n)]
        created.extend(many)
        return many

    yield factory
    for limiter in created:
        await limiter.aclose()
    if admin is not None:
        keys = [k async for k in admin.scan_iter(match=f"{prefix}*")]
        if keys:
            await admin.delete(*keys)
        await admin.aclose()


def _seconds(go: str) -> float:
    """Parse the Go durations go_duration emits ("1m30.5s", "12ms", "0s")."""
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m(?!s))?(?:([\d.]+)s)?(?:(\d+)ms)?", go)
    assert m and go, go
    h, mi, s, ms = m.groups()
    return int(h or 0) * 3600 + int(mi or 0) * 60 + float(s or 0) + int(ms or 0) / 1000


def _headers(pairs: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in pairs}


async def _refusal(limiter: Limiter, scope: str, spec: LimitSpec, rid: str, tokens: int = 0) -> RateLimited:
    with pytest.raises(RateLimited) as info:
        await limiter.admit(scope, spec, rid, tokens)
    return info.value


async def test_rpm_refuses_the_request_after_the_limit(make: MakeLimiters) -> None:
    [lim] = make()
    spec = LimitSpec(rpm=3)
    for i in range(3):
        await lim.admit("key:a", spec, f"r{i}", 0)
    err = await _refusal(lim, "key:a", spec, "r3")
    assert (err.status, err.type, err.code) == (429, "requests", "rate_limit_exceeded")
    assert err.retry_after is not None and 19.5 < err.retry_after <= 20  # one request refills every 60/3 s
    h = _headers(err.headers())
    assert h["retry-after"] == "20"
    assert h["x-ratelimit-limit-requests"] == "3"
    assert h["x-ratelimit-remaining-requests"] == "0"
    assert 59.5 < _seconds(h["x-ratelimit-reset-requests"]) <= 60
    # another scope is untouched
    await lim.admit("key:b", spec, "r0", 0)


async def test_headers_after_admission(make: MakeLimiters) -> None:
    [lim] = make()
    pairs = await lim.admit("key:a", LimitSpec(rpm=10, tpm=1000), "r1", 100)
    assert [k for k, _ in pairs] == [
        b"x-ratelimit-limit-requests", b"x-ratelimit-limit-tokens",
        b"x-ratelimit-remaining-requests", b"x-ratelimit-remaining-tokens",
        b"x-ratelimit-reset-requests", b"x-ratelimit-reset-tokens",
    ]
    h = _headers(pairs)
    assert (h["x-ratelimit-limit-requests"], h["x-ratelimit-remaining-requests"]) == ("10", "9")
    assert (h["x-ratelimit-limit-tokens"], h["x-ratelimit-remaining-tokens"]) == ("1000", "900")
    assert h["x-ratelimit-reset-requests"] == "6s"  # 1 of 10 per minute
    assert h["x-ratelimit-reset-tokens"] == "6s"  # 100 of 1000 per minute


async def test_headers_only_for_limits_that_are_set(make: MakeLimiters) -> None:
    [lim] = make()
    only_rpm = _headers(await lim.admit("key:a", LimitSpec(rpm=5), "r1", 100))
    assert set(only_rpm) == {"x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
                             "x-ratelimit-reset-requests"}
    assert await lim.admit("key:b", LimitSpec(max_concurrency=2), "r1", 100) == []
    assert await lim.admit("key:c", LimitSpec(), "r1", 100) == []


async def test_tpm_reserves_then_corrects_downwards(make: MakeLimiters) -> None:
    [lim] = make()
    spec = LimitSpec(tpm=1000)
    await lim.admit("key:a", spec, "r1", 600)
    err = await _refusal(lim, "key:a", spec, "r2", 500)
    assert err.type == "tokens"
    assert err.retry_after is not None and 5.5 < err.retry_after <= 6  # 100 tokens short at 1000/min
    assert _headers(err.headers())["x-ratelimit-remaining-tokens"] == "400"
    await lim.release("key:a", spec, "r1", 600, 100)  # it used far less than reserved
    h = _headers(await lim.admit("key:a", spec, "r2", 500))
    assert 399 <= int(h["x-ratelimit-remaining-tokens"]) <= 400


async def test_tpm_corrects_upwards(make: MakeLimiters) -> None:
    [lim] = make()
    spec = LimitSpec(tpm=1000)
    await lim.admit("key:a", spec, "r1", 100)
    await lim.release("key:a", spec, "r1", 100, 950)  # it used far more than reserved
    err = await _refusal(lim, "key:a", spec, "r2", 100)
    assert err.type == "tokens"
    assert err.retry_after is not None and 2.5 < err.retry_after <= 3  # 50 over the limit


async def test_request_larger_than_tpm_is_told_not_to_retry(make: MakeLimiters) -> None:
    [lim] = make()
    err = await _refusal(lim, "key:a", LimitSpec(tpm=1000), "r1", 1001)
    assert err.type == "tokens" and err.retry_after is None
    h = _headers(err.headers())
    assert h["x-should-retry"] == "false" and "retry-after" not in h
    assert "1001" in err.message


async def test_concurrency_slot_freed_on_release(make: MakeLimiters) -> None:
    [lim] = make()
    spec = LimitSpec(max_concurrency=2)
    await lim.admit("key:a", spec, "r1", 0)
    await lim.admit("key:a", spec, "r2", 0)
    err = await _refusal(lim, "key:a", spec, "r3")
    assert err.type == "requests" and err.retry_after is not None and err.retry_after > 0
    await lim.release("key:a", spec, "r1", 0, 0)
    await lim.admit("key:a", spec, "r3", 0)
    await lim.release("key:a", spec, "never-admitted", 0, 0)  # harmless
    await _refusal(lim, "key:a", spec, "r4")


# Redis only: it runs on the Redis server's clock; the memory limiter's is injected (see the clock tests below)
@pytest.mark.parametrize("make", [pytest.param("redis", marks=pytest.mark.redis)], indirect=True)
async def test_stale_slots_expire(make: MakeLimiters) -> None:
    [lim] = make(stale_after=0.2)
    spec = LimitSpec(max_concurrency=2)
    await lim.admit("key:a", spec, "r1", 0)  # their releases never come: the process was killed
    await lim.admit("key:a", spec, "r2", 0)
    await _refusal(lim, "key:a", spec, "r3")
    await asyncio.sleep(0.3)
    await lim.admit("key:a", spec, "r3", 0)
    await lim.admit("key:a", spec, "r4", 0)


async def test_admission_takes_from_all_limits_or_none(make: MakeLimiters) -> None:
    [lim] = make()
    spec = LimitSpec(rpm=5, tpm=1000, max_concurrency=1)
    await lim.admit("key:a", spec, "r1", 100)
    for i in range(3):  # refused by concurrency: neither a request nor tokens are taken
        await _refusal(lim, "key:a", spec, f"x{i}", 100)
    await lim.release("key:a", spec, "r1", 100, 100)
    h = _headers(await lim.admit("key:a", spec, "r2", 100))
    assert h["x-ratelimit-remaining-requests"] == "3"
    assert 799 <= int(h["x-ratelimit-remaining-tokens"]) <= 800


@pytest.mark.parametrize("spec,tokens", [
    (LimitSpec(rpm=50), 0),
    (LimitSpec(tpm=50), 1),
    (LimitSpec(max_concurrency=50), 0),
], ids=["rpm", "tpm", "concurrency"])
async def test_concurrent_admits_never_exceed_the_limit(make: MakeLimiters, spec: LimitSpec, tokens: int) -> None:
    limiters = make(3)  # for Redis, three clients with their own pools, like three processes

    async def one(i: int) -> bool:
        try:
            await limiters[i % 3].admit("global", spec, f"r{i}", tokens)
        except RateLimited:
            return False
        return True

    results = await asyncio.gather(*(one(i) for i in range(200)))
    assert sum(results) == 50


@pytest.mark.redis
async def test_redis_keys_expire_on_their_own() -> None:
    prefix = f"sluice-test:{uuid.uuid4().hex}:"
    lim = RedisLimiter(REDIS_URL, prefix=prefix)
    admin = aioredis.Redis.from_url(REDIS_URL)
    try:
        await lim.admit("key:a", LimitSpec(rpm=60, tpm=6000, max_concurrency=3), "r1", 100)
        keys = [k async for k in admin.scan_iter(match=f"{prefix}*")]
        assert sorted(keys) == [f"{prefix}{{key:a}}:{kind}".encode() for kind in ("req", "slots", "tok")]
        for key in keys:
            ttl: Any = await admin.pttl(key)
            assert 0 < ttl <= 900_000, key
    finally:
        keys = [k async for k in admin.scan_iter(match=f"{prefix}*")]
        if keys:
            await admin.delete(*keys)
        await lim.aclose()
        await admin.aclose()


@pytest.mark.parametrize("seconds,expected", [
    (0, "0s"), (-3, "0s"), (math.nan, "0s"), (0.0001, "1ms"), (0.012, "12ms"), (0.999, "999ms"),
    (1, "1s"), (1.5, "1.5s"), (17.28, "17.28s"), (59.999, "59.999s"), (60, "1m0s"), (90, "1m30s"),
    (360, "6m0s"), (3600, "1h0m0s"), (3723.5, "1h2m3.5s"),
])
def test_go_duration(seconds: float, expected: str) -> None:
    assert go_duration(seconds) == expected


def test_limit_spec() -> None:
    assert LimitSpec().empty
    assert not LimitSpec(rpm=1).empty
    for bad in ({"rpm": 0}, {"tpm": -5}, {"max_concurrency": True}):
        with pytest.raises(ValueError, match="positive integer"):
            LimitSpec(**bad)


async def test_redis_down_fails_closed_or_open(caplog: pytest.LogCaptureFixture) -> None:
    dead = "redis://127.0.0.1:1/0"  # nothing listens on port 1: connection refused at once
    spec = LimitSpec(rpm=5, max_concurrency=1)
    closed = RedisLimiter(dead, timeout=0.5)
    opened = RedisLimiter(dead, timeout=0.5, fail_open=True)
    try:
        with pytest.raises(SluiceError) as info:
            await closed.admit("key:a", spec, "r1", 0)
        assert (info.value.status, info.value.code, info.value.retry_after) == (503, "rate_limiter_unavailable", 1.0)
        assert await opened.admit("key:a", spec, "r1", 0) == []
        await closed.release("key:a", spec, "r1", 0, 0)  # logged, not raised: it runs in a finally
        assert "rate limiter unavailable" in caplog.text
    finally:
        await closed.aclose()
        await opened.aclose()


# --- the memory limiter on the injected clock: windows move when the test says so ----------------------


async def test_rpm_refills_one_request_per_interval_of_the_clock() -> None:
    clock = ManualClock()
    lim = MemoryLimiter(clock=clock)
    spec = LimitSpec(rpm=3)
    for i in range(3):
        await lim.admit("key:a", spec, f"r{i}", 0)
    err = await _refusal(lim, "key:a", spec, "r3")
    assert err.retry_after == 20.0  # exactly: the clock did not move
    clock.advance(19.9)
    await _refusal(lim, "key:a", spec, "r3")
    clock.advance(0.1)
    await lim.admit("key:a", spec, "r3", 0)  # one refilled, not two
    await _refusal(lim, "key:a", spec, "r4")
    clock.advance(60.0)
    for i in range(3):
        await lim.admit("key:a", spec, f"s{i}", 0)  # full again, never fuller


async def test_tpm_debt_drains_with_the_clock() -> None:
    clock = ManualClock()
    lim = MemoryLimiter(clock=clock)
    spec = LimitSpec(tpm=600)
    await lim.admit("key:a", spec, "r1", 600)
    err = await _refusal(lim, "key:a", spec, "r2", 100)
    assert err.type == "tokens" and err.retry_after == 10.0  # 100 tokens at 10 per second
    clock.advance(10.0)
    await lim.admit("key:a", spec, "r2", 100)


async def test_stale_slots_expire_on_the_clock() -> None:
    clock = ManualClock()
    lim = MemoryLimiter(stale_after=900.0, clock=clock)
    spec = LimitSpec(max_concurrency=1)
    await lim.admit("key:a", spec, "r1", 0)  # its release never comes: the process was killed
    clock.advance(899.0)
    await _refusal(lim, "key:a", spec, "r2")
    clock.advance(1.0)
    await lim.admit("key:a", spec, "r2", 0)
