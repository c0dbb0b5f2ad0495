"""The per-request meter: collects what a request did and finalises exactly once into a ledger record."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from sluice.metering.ticket import Ticket
from sluice.metering.tokens import estimate_prompt
from sluice.schema.chat import ChatRequest
from sluice.schema.usage import Usage
from sluice.storage.base import LedgerRecord

log = logging.getLogger("sluice.meter")

if TYPE_CHECKING:
    from sluice.metering.tokenizer import Counter


class Meter:
    __slots__ = ("_done", "account", "attempts", "counter", "disconnected", "error_code", "extra", "failovers",
                 "key_id", "key_name", "model", "prompt_estimate", "provider", "record", "request", "request_id",
                 "route", "session_id", "started", "status", "stream", "ticket", "ttft", "upstream_model", "usage",
                 "wall_start")

    def __init__(self, request_id: str, route: str = "") -> None:
        self.request_id = request_id
        self.route = route          # the front door, e.g. chat_completions (a metrics label and log field)
        self._done = False
        self.ticket = Ticket(request_id)    # what admission granted: price, limits, reservation
        self.record: LedgerRecord | None = None
        self.started = time.monotonic()
        self.wall_start = time.time()
        self.key_id: str | None = None
        self.key_name: str | None = None
        self.account: str | None = None     # the key's owner, for the access log
        self.model = ""
        self.request: ChatRequest | None = None
        self.provider: str | None = None
        self.upstream_model: str | None = None
        self.stream = False
        self.status = 0
        self.usage: Usage | None = None
        self.counter: Counter | None = None
        self.prompt_estimate: int | None = None
        self.ttft: float | None = None
        self.disconnected = False
        self.error_code: str | None = None
        self.attempts = 0
        self.failovers = 0          # attempts that moved to another target than the one before
        self.extra: dict[str, object] = {}
        self.session_id: str | None = None

    def first_token(self) -> None:
        if self.ttft is None:
            self.ttft = time.monotonic() - self.started

    def final_usage(self) -> tuple[int | None, int | None, str]:
        """(prompt, completion, source): reported when the upstream said, else estimated, else none."""
        if self.usage is not None:
            return self.usage.prompt_tokens, self.usage.completion_tokens, "reported"
        if self.request is None or self.provider is None or self.ttft is None:
            # no upstream produced anything (refused, unreachable, failed or left before its first
            # byte): there is nothing to estimate, and nothing is charged
            return None, None, "none"
        if self.prompt_estimate is None:
            self.prompt_estimate = estimate_prompt(self.request.messages)
        completion = self.counter.tokens if self.counter is not None else 0
        self.extra["tokenizer"] = self.counter.method if self.counter is not None else "estimate"
        return self.prompt_estimate, completion, "estimated"

    def take_record(self) -> LedgerRecord | None:
        """The ledger record, built once; later calls return None (so it is written exactly once)."""
        if self._done:
            return None
        self._done = True
        if self.usage is not None and self.usage.anomaly is not None:
            # clamped where it entered (schema/usage.py); said once per request, kept on its record
            self.extra["usage_anomaly"] = self.usage.anomaly
            log.warning("upstream %s reported impossible usage for %s (clamped): %s", self.provider,
                        self.request_id, self.usage.anomaly)
        prompt, completion, source = self.final_usage()
        u = self.usage
        rec = LedgerRecord(
            request_id=self.request_id, key_id=self.key_id, model=self.model, provider=self.provider,
            upstream_model=self.upstream_model, stream=self.stream, status=self.status,
            prompt_tokens=prompt, completion_tokens=completion, usage_source=source,
            ttft_ms=round(self.ttft * 1000, 3) if self.ttft is not None else None,
            duration_ms=round((time.monotonic() - self.started) * 1000, 3),
            disconnected=self.disconnected, error_code=self.error_code, attempts=self.attempts,
            created_at=self.wall_start, extra={**self.ticket.notes, **self.extra} if self.ticket.notes else self.extra,
            cached_tokens=u.cached_tokens if u is not None else None,
            cache_write_5m_tokens=u.cache_write_5m_tokens if u is not None else None,
            cache_write_1h_tokens=u.cache_write_1h_tokens if u is not None else None,
            session_id=self.session_id, account_id=self.ticket.account_id)
        self.record = rec
        return rec
