"""Failover before the first byte: try targets in order, skip ones cooling down, retry what is retryable.

Only the opening of a call (connect, upstream status) is retried here; once a stream has been handed
to the client, failures surface as error events and are never retried. Retries spend one time budget:
`first_byte` per target across its retries, `total` per request across every attempt.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import NamedTuple, TypeVar

from sluice.clock import SYSTEM_CLOCK, Clock
from sluice.errors import SluiceError, UpstreamTimeout
from sluice.routing.table import Target
from sluice.upstream import Timeouts

T = TypeVar("T")

MAX_RETRY_WAIT = 2.0  # seconds we will wait on an upstream's retry-after before trying again


class Served(NamedTuple):
    """Which target answered a request (or was tried last, when none did) and after how many attempts."""

    provider: str | None = None
    upstream_model: str | None = None
    attempts: int = 0
    failovers: int = 0  # attempts that moved to another target than the one before

    def then(self, target: Target) -> Served:
        """The next attempt, at `target`."""
        moved = self.attempts > 0 and (self.provider, self.upstream_model) != (target.provider, target.model)
        return Served(target.provider, target.model, self.attempts + 1, self.failovers + moved)


NOT_SERVED = Served()


class Tries:
    """What failover reports to the request it serves: `served` is replaced (never changed) before each
    attempt, so it names the target that answered, or the last one tried when every try failed."""

    __slots__ = ("served",)

    def __init__(self) -> None:
        self.served = NOT_SERVED


class Cooldowns:
    """A target that failed `threshold` times in a row is skipped for `seconds` (unless all are)."""

    def __init__(self, threshold: int = 3, seconds: float = 30.0,
                 on_change: Callable[[str, str, bool], None] | None = None, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock  # the request's time budget (`Budget`) reads the same clock
        # told (provider, model, cooling) when a target starts cooling down and when it answers again
        self._on_change = on_change
        self._threshold = threshold
        self._seconds = seconds
        self._fails: dict[tuple[str, str], int] = {}
        self._until: dict[tuple[str, str], float] = {}

    def available(self, t: Target) -> bool:
        if not self._until:  # nothing cools down (the usual case): no key to build
            return True
        until = self._until.get((t.provider, t.model))
        return until is None or until <= self.clock.monotonic()

    def failed(self, t: Target) -> None:
        k = (t.provider, t.model)
        n = self._fails.get(k, 0) + 1
        self._fails[k] = n
        if n >= self._threshold:
            self._until[k] = self.clock.monotonic() + self._seconds
            self._fails[k] = 0
            if self._on_change is not None:
                self._on_change(t.provider, t.model, True)

    def succeeded(self, t: Target) -> None:
        if not self._fails and not self._until:  # no target has failed lately: nothing to clear
            return
        if self._fails.get((t.provider, t.model)):
            self._fails.pop((t.provider, t.model), None)
        if self._until.pop((t.provider, t.model), None) is not None and self._on_change is not None:
            self._on_change(t.provider, t.model, False)


class Budget:
    """What is left of one request's time: each target's `first_byte` counts from its first attempt
    (a retry does not start the wait again), and `total` from the request's first attempt."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self._start: float | None = None  # the first attempt's time
        self._first: dict[tuple[str, str], float] = {}

    def timeouts(self, target: Target) -> Timeouts:
        """The timeouts for the next attempt at `target`; raises UpstreamTimeout when none are left."""
        now = self._clock.monotonic()
        to = target.timeouts
        if self._start is None:  # the first attempt: nothing has been spent yet
            self._start = now
            self._first[(target.provider, target.model)] = now
            return to
        began = self._first.setdefault((target.provider, target.model), now)
        first_byte = to.first_byte - (now - began)
        total = None if to.total is None else to.total - (now - self._start)
        if total is not None and total <= 0:
            raise UpstreamTimeout(f"the request took longer than the total timeout of {to.total:g}s")
        if first_byte <= 0:
            raise UpstreamTimeout(f"the upstream did not answer within {to.first_byte:g}s")
        if first_byte == to.first_byte and total == to.total:
            return to  # a first attempt with no total: nothing has been spent yet
        return Timeouts(connect=to.connect, first_byte=first_byte, idle=to.idle, total=total)


async def with_failover(targets: list[Target], attempt: Callable[[Target, int, Timeouts], Awaitable[T]],
                        cooldowns: Cooldowns, tries: Tries | None = None) -> T:
    """Run `attempt(target, n, timeouts)` until one succeeds; raise the last error when every try failed.
    `tries.served` says which target each attempt went to (the record's provider, attempts, failovers)."""
    order = [t for t in targets if cooldowns.available(t)] or list(targets)
    if len(order) == 1:
        order = order * 2  # one retry of a lone target, for transient failures
    budget = Budget(cooldowns.clock)
    spent: set[tuple[str, str]] = set()  # targets another try would only get the same answer from (auth)
    last: SluiceError | None = None
    try:
        for n, target in enumerate(order, start=1):
            if (target.provider, target.model) in spent:
                continue
            if last is not None:
                wait = 0.1 * (2 ** (n - 2)) if last.retry_after is None else last.retry_after
                if wait > MAX_RETRY_WAIT:
                    break  # the upstream asked for longer than we hold a client: let the client retry
                await asyncio.sleep(wait)
            try:
                timeouts = budget.timeouts(target)
                if tries is not None:
                    tries.served = tries.served.then(target)
                result = await attempt(target, n, timeouts)
            except SluiceError as exc:
                if not exc.retryable:
                    raise
                cooldowns.failed(target)
                if not getattr(exc, "retry_same_target", True):
                    spent.add((target.provider, target.model))
                last = exc
                continue
            cooldowns.succeeded(target)
            return result
        assert last is not None
        raise last
    finally:
        # `last` holds a traceback that holds this frame: break the cycle, or the failed attempt's
        # memory (a refused oversized reply) waits for a full GC pass under the raised thresholds
        last = None
