"""Failover's time budget and retry rules, and that a failed attempt's error is freed without a GC pass."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from sluice.clock import ManualClock
from sluice.errors import UpstreamAuthFailed, UpstreamError, UpstreamRejected, UpstreamTimeout, UpstreamUnavailable
from sluice.routing.fallback import MAX_RETRY_WAIT, Cooldowns, with_failover
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


# --- on the injected clock: cooldowns and the time budget without waiting ---------------------------


async def test_a_target_that_keeps_failing_cools_down_until_the_clock_passes_its_cooldown() -> None:
    clock = ManualClock()
    changes: list[tuple[str, bool]] = []
    cooldowns = Cooldowns(threshold=2, seconds=30.0, clock=clock, on_change=lambda p, m, c: changes.append((p, c)))
    tried: list[str] = []

    async def attempt(t: Target, n: int, to: Timeouts) -> str:
        tried.append(t.provider)
        if t.provider == "a":
            raise UpstreamUnavailable("down")
        return t.provider

    targets = [target("a"), target("b")]
    for _ in range(2):
        assert await with_failover(targets, attempt, cooldowns) == "b"
    assert changes == [("a", True)] and tried == ["a", "b", "a", "b"]
    tried.clear()
    clock.advance(29.0)
    assert await with_failover(targets, attempt, cooldowns) == "b"
    assert tried == ["b"]  # still cooling: not even tried
    tried.clear()
    clock.advance(1.0)
    assert await with_failover(targets, attempt, cooldowns) == "b"
    assert tried == ["a", "b"]  # back in the rotation once its cooldown is over


async def test_a_recovered_target_is_reported_back() -> None:
    clock = ManualClock()
    changes: list[tuple[str, bool]] = []
    cooldowns = Cooldowns(threshold=1, seconds=5.0, clock=clock, on_change=lambda p, m, c: changes.append((p, c)))
    cooldowns.failed(target("a"))
    assert not cooldowns.available(target("a"))
    clock.advance(5.0)
    assert cooldowns.available(target("a"))
    cooldowns.succeeded(target("a"))
    assert changes == [("a", True), ("a", False)]


async def test_every_target_cooling_down_is_tried_anyway() -> None:
    cooldowns = Cooldowns(threshold=1, seconds=60.0, clock=ManualClock())
    cooldowns.failed(target("a"))
    cooldowns.failed(target("b"))

    async def attempt(t: Target, n: int, to: Timeouts) -> str:
        return t.provider

    assert await with_failover([target("a"), target("b")], attempt, cooldowns) == "a"


async def test_another_target_gets_a_fresh_first_byte_but_what_is_left_of_the_total() -> None:
    clock = ManualClock()
    seen: list[tuple[float, float | None]] = []

    async def attempt(t: Target, n: int, to: Timeouts) -> str:
        seen.append((to.first_byte, to.total))
        clock.advance(4.0)  # the attempt spends 4 s before it fails
        if n == 1:
            raise UpstreamTimeout("slow")
        return "ok"

    targets = [target("a", first_byte=10.0, total=11.0), target("b", first_byte=10.0, total=11.0)]
    assert await with_failover(targets, attempt, Cooldowns(clock=clock)) == "ok"
    assert seen == [(10.0, 11.0), (10.0, 7.0)]


async def test_a_retry_of_the_same_target_gets_only_what_is_left_of_its_first_byte() -> None:
    clock = ManualClock()
    seen: list[float] = []

    async def attempt(t: Target, n: int, to: Timeouts) -> str:
        seen.append(to.first_byte)
        clock.advance(6.0)
        if n == 1:
            raise UpstreamTimeout("slow")
        return "ok"

    assert await with_failover([target("a", first_byte=10.0)], attempt, Cooldowns(clock=clock)) == "ok"
    assert seen == [10.0, 4.0]


async def test_a_spent_first_byte_ends_the_retries_without_another_call() -> None:
    clock = ManualClock()
    calls = 0

    async def attempt(t: Target, n: int, to: Timeouts) -> str:
        nonlocal calls
        calls += 1
        clock.advance(10.0)
        raise UpstreamTimeout("slow")

    with pytest.raises(UpstreamTimeout, match=r"did not answer within 10s"):
        await with_failover([target("a", first_byte=10.0)], attempt, Cooldowns(clock=clock))
    assert calls == 1


async def test_a_retry_after_longer_than_we_hold_a_client_ends_the_failover() -> None:
    tried: list[str] = []

    async def attempt(t: Target, n: int, to: Timeouts) -> str:
        tried.append(t.provider)
        raise UpstreamUnavailable("busy", retry_after=MAX_RETRY_WAIT + 1)

    with pytest.raises(UpstreamUnavailable):
        await with_failover([target("a"), target("b")], attempt, Cooldowns(clock=ManualClock()))
    assert tried == ["a"]


async def test_a_refusal_that_is_not_retryable_ends_the_failover_at_once() -> None:
    tried: list[str] = []

    async def attempt(t: Target, n: int, to: Timeouts) -> str:
        tried.append(t.provider)
        raise UpstreamRejected("bad request", status=400)

    with pytest.raises(UpstreamRejected):
        await with_failover([target("a"), target("b")], attempt, Cooldowns(clock=ManualClock()))
    assert tried == ["a"]
