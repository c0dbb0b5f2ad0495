"""Failover's time budget and retry rules, and that a failed attempt's error is freed without a GC pass."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from sluice.errors import UpstreamAuthFailed, UpstreamError, UpstreamTimeout
from sluice.routing.fallback import Cooldowns, with_failover
from sluice.routing.table import Target
from sluice.upstream import Timeouts


def target(name: str, **timeouts: float) -> Target:
    return Target(name, "m", 1, 0, Timeouts(**timeouts))


@pytest.fixture
def no_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def test_an_auth_failure_is_not_retried_on_the_same_target_but_another_is_tried() -> None:
    tried: list[str] = []

    async def attempt(t: Target, n: int, to: Timeouts) -> str:
        tried.append(t.provider)
        if t.provider == "a":
            raise UpstreamAuthFailed()
        return "ok"

    with pytest.raises(UpstreamAuthFailed):
        await with_failover([target("a")], attempt, Cooldowns())
    assert tried == ["a"]
    tried.clear()
    assert await with_failover([target("a"), target("b")], attempt, Cooldowns()) == "ok"
    assert tried == ["a", "b"]


async def test_the_retry_of_a_target_gets_what_is_left_of_its_first_byte_and_the_total() -> None:
    seen: list[Timeouts] = []

    async def attempt(t: Target, n: int, to: Timeouts) -> str:
        seen.append(to)
        if n == 1:
            raise UpstreamError("transient")
        return "ok"

    assert await with_failover([target("a", first_byte=30.0, total=60.0)], attempt, Cooldowns()) == "ok"
    first, retry = seen
    assert first.first_byte <= 30.0 and first.total is not None and first.total <= 60.0
    assert retry.first_byte < first.first_byte and retry.total is not None and retry.total < first.total


async def test_a_spent_first_byte_budget_fails_the_retry_without_calling_the_upstream() -> None:
    calls = 0

    async def attempt(t: Target, n: int, to: Timeouts) -> str:
        nonlocal calls
        calls += 1
        raise UpstreamTimeout("slow")

    with pytest.raises(UpstreamTimeout, match=r"did not answer within 0\.05s"):
        await with_failover([target("a", first_byte=0.05)], attempt, Cooldowns())  # backoff 0.1 s > 0.05 s
    assert calls == 1


async def test_the_last_error_is_freed_by_reference_counting(no_gc: None) -> None:
    refs: list[weakref.ref[UpstreamError]] = []

    def failure() -> UpstreamError:
        exc = UpstreamError("fails every time")
        refs.append(weakref.ref(exc))
        return exc

    async def attempt(t: Target, n: int, to: Timeouts) -> str:
        payload = bytearray(1 << 20)  # a failed attempt's buffers live in its frames
        assert payload
        raise failure()

    caught = False
    try:
        await with_failover([target("a"), target("b")], attempt, Cooldowns())
    except UpstreamError:
        caught = True
    assert caught and len(refs) == 2
    alive = [r for r in refs if r() is not None]
    assert not alive, "a failed attempt's error (and its frames) stayed in a reference cycle"
