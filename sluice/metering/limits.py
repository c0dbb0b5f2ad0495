"""Per-scope rate limits (requests/min, tokens/min, concurrency): the contract, the bucket arithmetic,
the x-ratelimit-* headers and the in-process `MemoryLimiter`. `redis_limits.py` holds the shared one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from sluice.clock import SYSTEM_CLOCK, Clock
from sluice.errors import RateLimited

WINDOW_MS = 60_000
"""The rate window: limits are "per minute"."""

CONCURRENCY_RETRY_MS = 1_000
"""Retry hint for a concurrency refusal: a slot frees when some request ends, which we cannot predict."""

DEFAULT_STALE_AFTER = 900.0
"""Seconds after which a concurrency slot whose release never came (a killed process) is dropped."""


@dataclass(slots=True, frozen=True)
class LimitSpec:
    """The limits of one scope; None means unlimited. Values must be positive."""

    rpm: int | None = None  # requests per minute
    tpm: int | None = None  # tokens per minute (estimate reserved at admission, corrected at release)
    max_concurrency: int | None = None

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm", "max_concurrency"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"LimitSpec.{name} must be a positive integer or None, not {value!r}")

    @property
    def empty(self) -> bool:
        return self.rpm is None and self.tpm is None and self.max_concurrency is None


class Limiter(Protocol):
    """Admission control for a scope ("key:abc123", "global", ...).

    Rates are token buckets (GCRA) refilled continuously: a limit of N per minute allows a burst of N
    and then one more every 60/N s, so there are no window edges where 2N could pass. `admit` checks
    every limit of the spec and takes from all of them or none. Call `release` exactly once for every
    successful `admit`, with the same scope, spec and request id, however the request ended; never
    after a refused one. To hold several scopes, admit them in turn and release the admitted ones if
    a later one refuses.
    """

    async def admit(self, scope: str, spec: LimitSpec, request_id: str, tokens: int) -> list[tuple[bytes, bytes]]:
        """Admit one request costing `tokens` (an estimate) or raise `RateLimited`.

        The error's `type` is "requests" (rpm or concurrency) or "tokens"; `retry_after` is the wait
        until the request would fit, None only when it never can (more tokens than the tpm limit, sent
        with `x-should-retry: false`); `extra_headers` carry the x-ratelimit-* headers. On success
        returns the x-ratelimit-{limit,remaining,reset}-{requests,tokens} headers of the limits set.
        """
        ...

    async def release(self, scope: str, spec: LimitSpec, request_id: str, tokens_reserved: int,
                      tokens_used: int) -> None:
        """The request ended (any way): free its concurrency slot; replace its token reservation by what it used."""
        ...

    async def aclose(self) -> None: ...


def go_duration(seconds: float) -> str:
    """Format a duration as Go's time.Duration.String() does at millisecond precision, as OpenAI sends
    x-ratelimit-reset-*: "0s", "12ms", "1s", "1.5s", "1m30s", "6m0s", "1h0m0s". Rounds up."""
    if not seconds > 0:  # also catches NaN
        return "0s"
    ms = math.ceil(round(seconds * 1000, 6))
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, frac = divmod(rest, 1000)
    secs = f"{whole}.{frac:03d}".rstrip("0") if frac else str(whole)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


# --- bucket arithmetic -----------------------------------------------------------------------------
# A bucket's state is its debt S with the time it was written. Each unit taken adds WINDOW_MS to S and
# S drains by `limit` per millisecond, so a full bucket (S = 0) holds `limit` units and refills in one
# window. Everything is an integer, so the Lua twin in redis_limits.py computes exactly the same.


@dataclass(slots=True)
class Check:
    """One bucket's answer to a request for `cost` units (the Lua script returns the same fields)."""

    ok: bool
    remaining: int  # whole units left after this request (before it, when refused)
    reset_ms: int  # until the bucket is full again
    wait_ms: int  # when refused: until the request would fit; -1 if it never can (cost > limit)


def drained(debt: int, written_ms: int, now_ms: int, limit: int) -> int:
    return max(0, debt - max(0, now_ms - written_ms) * limit)


def check(debt: int, limit: int, cost: int) -> tuple[Check, int]:
    """Try to take `cost` units from a bucket with current debt `debt`; returns the answer and the new debt."""
    cap = limit * WINDOW_MS
    after = debt + cost * WINDOW_MS
    if after <= cap:
        return Check(True, (cap - after) // WINDOW_MS, -(-after // limit), 0), after
    wait = -(-(after - cap) // limit) if cost <= limit else -1
    return Check(False, max(0, cap - debt) // WINDOW_MS, -(-debt // limit), wait), debt


def conclude(scope: str, spec: LimitSpec, cost: int, req: Check | None, tok: Check | None,
             slots_ok: bool) -> list[tuple[bytes, bytes]]:
    """Turn the checks into the response headers, or raise the RateLimited that explains the refusal."""
    headers: list[tuple[bytes, bytes]] = []
    if req is not None:
        headers.append((b"x-ratelimit-limit-requests", str(spec.rpm).encode()))
    if tok is not None:
        headers.append((b"x-ratelimit-limit-tokens", str(spec.tpm).encode()))
    if req is not None:
        headers.append((b"x-ratelimit-remaining-requests", str(req.remaining).encode()))
    if tok is not None:
        headers.append((b"x-ratelimit-remaining-tokens", str(tok.remaining).encode()))
    if req is not None:
        headers.append((b"x-ratelimit-reset-requests", go_duration(req.reset_ms / 1000).encode()))
    if tok is not None:
        headers.append((b"x-ratelimit-reset-tokens", go_duration(tok.reset_ms / 1000).encode()))
    req_ok = req is None or req.ok
    tok_ok = tok is None or tok.ok
    if req_ok and tok_ok and slots_ok:
        return headers

    if tok is not None and tok.wait_ms < 0:
        raise RateLimited(
            f"Request too large for {scope}: {cost} tokens requested, but the limit is {spec.tpm} tokens per "
            "minute. Reduce the prompt or max_tokens.",
            type="tokens", extra_headers=[*headers, (b"x-should-retry", b"false")])
    waits = [c.wait_ms for c in (req, tok) if c is not None and not c.ok]
    if not slots_ok:
        waits.append(CONCURRENCY_RETRY_MS)
    wait = max(waits) / 1000
    again = f"Please try again in {go_duration(wait)}."
    if not req_ok:
        message = f"Rate limit reached for {scope} on requests per min (RPM): Limit {spec.rpm}. {again}"
        kind = "requests"
    elif not tok_ok:
        message = (f"Rate limit reached for {scope} on tokens per min (TPM): Limit {spec.tpm}, "
                   f"Requested {cost}. {again}")
        kind = "tokens"
    else:
        message = f"Too many concurrent requests for {scope}: Limit {spec.max_concurrency}. {again}"
        kind = "requests"
    raise RateLimited(message, retry_after=wait, type=kind, extra_headers=headers)


# --- one process -----------------------------------------------------------------------------------


class MemoryLimiter:
    """Limits for a single process. No awaits between check and take, so each call is atomic on its loop."""

    _SWEEP_EVERY = 4096

    def __init__(self, *, stale_after: float = DEFAULT_STALE_AFTER, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self._stale_ms = max(1, round(stale_after * 1000))
        # (scope, "r"|"t") -> (debt, written_ms, full_at_ms); absent means full
        self._buckets: dict[tuple[str, str], tuple[int, int, int]] = {}
        self._slots: dict[str, dict[str, int]] = {}  # scope -> request id -> admitted_ms
        self._ops = 0

    def _now(self) -> int:
        return int(self._clock.monotonic() * 1000)

    def _debt(self, key: tuple[str, str], limit: int, now: int) -> int:
        state = self._buckets.get(key)
        return 0 if state is None else drained(state[0], state[1], now, limit)

    def _store(self, key: tuple[str, str], debt: int, now: int, limit: int) -> None:
        if debt > 0:
            self._buckets[key] = (debt, now, now - (-debt // limit))
        else:
            self._buckets.pop(key, None)

    async def admit(self, scope: str, spec: LimitSpec, request_id: str, tokens: int) -> list[tuple[bytes, bytes]]:
        if spec.empty:
            return []
        now = self._now()
        self._ops += 1
        if self._ops % self._SWEEP_EVERY == 0:
            self._sweep(now)
        cost = max(0, tokens)
        req: Check | None = None
        tok: Check | None = None
        req_debt = tok_debt = 0
        if spec.rpm is not None:
            req, req_debt = check(self._debt((scope, "r"), spec.rpm, now), spec.rpm, 1)
        if spec.tpm is not None:
            tok, tok_debt = check(self._debt((scope, "t"), spec.tpm, now), spec.tpm, cost)
        slots_ok = True
        held = self._slots.get(scope)
        if spec.max_concurrency is not None:
            if held is not None and len(held) >= spec.max_concurrency:
                self._drop_stale(held, now)  # only when full: a scan per admission would be O(in flight)
            slots_ok = (held is not None and request_id in held) or len(held or ()) < spec.max_concurrency
        headers = conclude(scope, spec, cost, req, tok, slots_ok)  # raises when refused
        if spec.rpm is not None:
            self._store((scope, "r"), req_debt, now, spec.rpm)
        if spec.tpm is not None:
            self._store((scope, "t"), tok_debt, now, spec.tpm)
        if spec.max_concurrency is not None:
            self._slots.setdefault(scope, {})[request_id] = now
        return headers

    async def release(self, scope: str, spec: LimitSpec, request_id: str, tokens_reserved: int,
                      tokens_used: int) -> None:
        held = self._slots.get(scope)
        if held is not None:
            held.pop(request_id, None)
            if not held:
                del self._slots[scope]
        delta = max(0, tokens_used) - max(0, tokens_reserved)
        if spec.tpm is not None and delta:
            now = self._now()
            debt = self._debt((scope, "t"), spec.tpm, now)
            self._store((scope, "t"), max(0, debt + delta * WINDOW_MS), now, spec.tpm)

    async def aclose(self) -> None:
        self._buckets.clear()
        self._slots.clear()

    def _drop_stale(self, held: dict[str, int], now: int) -> None:
        cutoff = now - self._stale_ms
        for rid in [rid for rid, at in held.items() if at <= cutoff]:
            del held[rid]

    def _sweep(self, now: int) -> None:
        """Forget full buckets and empty slot sets, so idle scopes cost no memory."""
        for key in [k for k, (_, _, full_at) in self._buckets.items() if now >= full_at]:
            del self._buckets[key]
        for scope in list(self._slots):
            held = self._slots[scope]
            self._drop_stale(held, now)
            if not held:
                del self._slots[scope]
