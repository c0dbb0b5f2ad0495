"""A provider's pool of upstream API keys: smooth weighted rotation (a session's own key by rendezvous
hashing), per-key state and counters.

State lives in memory for the hot path; the states every instance must share (disabled, and by whom)
are persisted and polled by `sluice.channels.hub`. Nothing here ever logs or returns a key's secret.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from sluice.clock import SYSTEM_CLOCK, Clock
from sluice.rendezvous import ranked

ACTIVE = "active"
COOLING = "cooling"
DISABLED_AUTO = "disabled_auto"
DISABLED_MANUAL = "disabled_manual"


def fingerprint(secret: str) -> str:
    """A stable id for a key that reveals nothing usable about it (shared by every instance)."""
    return "uk_" + hashlib.sha256(secret.encode()).hexdigest()[:12]


def mask(secret: str) -> str:
    """What listings show of a key: its kind of prefix and last four characters, never more."""
    if len(secret) <= 12:
        return "****"
    return secret[:3] + "..." + secret[-4:]


@dataclass(slots=True, eq=False)
class UpstreamKey:
    secret: str
    weight: int = 1
    state: str = ACTIVE
    reason: str | None = None
    changed_at: float = 0.0
    cool_until: float = 0.0      # monotonic; only while COOLING
    next_probe: float = 0.0      # monotonic
    requests: int = 0
    errors: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    last_success_at: float | None = None
    current: int = 0             # smooth weighted round-robin credit
    id: str = ""                 # the fingerprint, derived from the secret
    rpm: int | None = None       # requests per minute on this key (None: no limit), shared through Redis if set
    tat: float = 0.0             # GCRA theoretical arrival time (monotonic) for `rpm`, as this instance knows it

    def __post_init__(self) -> None:
        self.id = fingerprint(self.secret)

    def usable(self, now: float) -> bool:
        if self.state == COOLING and self.cool_until <= now:
            self.state, self.reason = ACTIVE, None
        return self.state == ACTIVE and self.weight > 0

    def has_room(self, now: float) -> bool:
        """Whether `rpm` allows one more request now (GCRA: up to `rpm` in any minute, as a burst too)."""
        return self.rpm is None or self.tat - now <= 60.0 - 60.0 / self.rpm

    def take(self, now: float) -> bool:
        """Count one request against `rpm`; False (and nothing counted) when the key has no room."""
        if not self.has_room(now):
            return False
        if self.rpm is not None:
            self.tat = max(self.tat, now) + 60.0 / self.rpm
        return True

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "key": mask(self.secret), "weight": self.weight, "rpm": self.rpm, "state": self.state,
                "reason": self.reason, "changed_at": self.changed_at or None, "requests": self.requests,
                "errors": self.errors, "last_error": self.last_error, "last_error_at": self.last_error_at,
                "last_success_at": self.last_success_at}


class KeyPool:
    """The keys of one provider. `order()` is the rotation: every usable key once, the first chosen by
    smooth weighted round-robin (nginx's), so weights hold over any window and tests are deterministic.
    `order(session)` ranks them by weighted rendezvous hashing instead: a session keeps its key (the
    upstream's prompt cache is per organisation or workspace, often per key) on every instance, and the
    rotation's credits are left alone. Cool-downs, rate limits and timestamps read `clock`."""

    def __init__(self, provider: str, keys: list[UpstreamKey], clock: Clock = SYSTEM_CLOCK) -> None:
        self.provider = provider
        self.keys = keys
        self.clock = clock
        self._by_id = {k.id: k for k in keys}

    def get(self, key_id: str) -> UpstreamKey | None:
        return self._by_id.get(key_id)

    def order(self, session: str | None = None) -> list[UpstreamKey]:
        now = self.clock.monotonic()
        usable = [k for k in self.keys if k.usable(now) and k.has_room(now)]
        if len(usable) <= 1:
            return usable
        if session is not None:
            return ranked(session, usable, _ident, _weight)
        total = 0
        best = usable[0]
        for k in usable:
            k.current += k.weight
            total += k.weight
            if k.current > best.current:
                best = k
        best.current -= total
        # the others only matter when the first fails: declaration order is as fair and costs no sort
        return [best, *(k for k in usable if k is not best)]

    def scrub(self, text: str) -> str:
        """Upstream messages may echo a key: ours never reach a listing, a log or the database."""
        for k in self.keys:
            text = text.replace(k.secret, "****")
        return text

    def succeeded(self, key: UpstreamKey) -> None:
        key.requests += 1
        key.last_success_at = self.clock.time()

    def failed(self, key: UpstreamKey, message: str) -> None:
        key.requests += 1
        key.errors += 1
        key.last_error = self.scrub(message)[:300]
        key.last_error_at = self.clock.time()

    def cool(self, key: UpstreamKey, seconds: float, reason: str) -> None:
        if key.state == ACTIVE:
            key.state, key.reason, key.changed_at = COOLING, self.scrub(reason)[:300], self.clock.time()
            key.cool_until = self.clock.monotonic() + seconds
            key.next_probe = key.cool_until

    def set_state(self, key: UpstreamKey, state: str, reason: str | None, changed_at: float) -> bool:
        """Apply a shared state (from this instance or the database); True if it changed anything."""
        if changed_at <= key.changed_at:
            return False  # what we know is as new or newer (a local cool-down, a write not yet stored)
        key.state, key.reason, key.changed_at = state, reason, changed_at
        key.next_probe = 0.0
        return True


def _ident(k: UpstreamKey) -> str:
    return k.id


def _weight(k: UpstreamKey) -> float:
    return k.weight
