"""One request's ledger record, assembled in one place (`assemble`) from the values its parts report: who
asked and when (`Asked`, the request's scope), what admission granted (`Ticket`), what served (`Served`,
failover), what the upstream's answer amounted to (`Stats`, the stream's metering loop or the completion)
and how the request ended (`Outcome`, the scope)."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from sluice.metering.ticket import Ticket
from sluice.metering.tokens import estimate_prompt
from sluice.routing.fallback import Served
from sluice.schema.chat import ChatRequest
from sluice.schema.chunk import payload_text
from sluice.schema.usage import Usage
from sluice.storage.base import KeyRecord, LedgerRecord

if TYPE_CHECKING:
    from sluice.metering.tokenizer import Counter


class Asked(NamedTuple):
    """Who asked for what through which front door, and when (on the app's clock). `request` is None when
    the request never got as far as the relay (its body was refused)."""

    request_id: str
    route: str                  # the front door, e.g. chat_completions (a metrics label and log field)
    key: KeyRecord
    started: float              # monotonic: the record's durations count from here
    created_at: float           # wall clock: the record's timestamp
    request: ChatRequest | None = None
    session_id: str | None = None


# the payloads of unread chunks one stream keeps (bytes): ~8-12 OpenAI chunks. A stream whose usage comes
# within them reads none; a longer one reads its oldest as each new one comes (one a chunk, never a batch
# that would stall the loop), and holds no more than this. 8 KiB took 5,000 held 20-chunk streams from
# ~19-21 to ~23-25 KB each (the target is 20); agents' streams run to hundreds of chunks, so only their
# last few are spared the read whatever the bound
DEFERRED_BYTES = 2 << 10


class Stats:
    """What the upstream's answer amounted to, written by the one loop that reads it (`RelayStream.written`)
    or by the relay for a completion: when its first token came (on the app's clock), the usage it
    reported, and its text counted for an estimate when it reports none. Plain attributes: the
    per-chunk loop updates them in place.

    An OpenAI chunk whose text was left unread (`Chunk.text` None) is `defer`red: its payload is kept and
    its text read (`schema.chunk.payload_text`) and counted only when the count is asked for (`counted`) with no
    usage reported, or, oldest first, as far as the kept payloads pass `DEFERRED_BYTES`. A count is a sum
    over the pieces, so counting some later gives what counting each as it came would."""

    __slots__ = ("counter", "deferred", "deferred_size", "first_at", "usage")

    def __init__(self, counter: Counter | None = None, first_at: float | None = None,
                 usage: Usage | None = None) -> None:
        self.counter = counter
        self.first_at = first_at
        self.usage = usage
        self.deferred: list[bytes] = []
        self.deferred_size = 0

    def defer(self, payload: bytes) -> None:
        """Keep an OpenAI chunk's payload whose text was left unread: it counts only if no usage is reported."""
        counter = self.counter
        if self.usage is not None or counter is None:
            return  # reported usage is what the record says: no text of this stream is ever counted
        deferred = self.deferred
        deferred.append(payload)
        self.deferred_size += len(payload)
        while self.deferred_size > DEFERRED_BYTES:
            oldest = deferred.pop(0)  # a short list: moving its pointers costs less than one parse
            self.deferred_size -= len(oldest)
            counter.feed(payload_text(oldest))

    def report(self, usage: Usage) -> None:
        """The upstream reported usage: it is what the record says, so no kept payload is ever read."""
        self.usage = usage
        self.deferred = []
        self.deferred_size = 0

    def counted(self) -> Counter | None:
        """The counter, with every deferred payload's text counted into it."""
        if self.deferred:
            self._count_deferred()
        return self.counter

    def _count_deferred(self) -> None:
        counter = self.counter
        if counter is not None:
            for payload in self.deferred:
                counter.feed(payload_text(payload))
        self.deferred = []
        self.deferred_size = 0


class Outcome(NamedTuple):
    """How the request ended, as its scope saw it."""

    status: int                 # 0: it ended before any answer could be given
    error_code: str | None = None
    disconnected: bool = False


class Tokens(NamedTuple):
    """The token counts a record carries: reported when the upstream said, else estimated, else none."""

    prompt: int | None
    completion: int | None
    source: str                 # reported | estimated | none
    method: str | None = None   # what estimated them (the tokenizer), when estimated


def tokens_of(stats: Stats, ticket: Ticket, request: ChatRequest | None) -> Tokens:
    """What the record will say was used (front doors tell a client the same estimate)."""
    if stats.usage is not None:
        return Tokens(stats.usage.prompt_tokens, stats.usage.completion_tokens, "reported")
    if stats.first_at is None or request is None:
        # no upstream produced anything (refused, unreachable, failed or left before its first byte):
        # there is nothing to estimate, and nothing is charged
        return Tokens(None, None, "none")
    prompt = ticket.prompt_estimate if ticket.prompt_estimate is not None else estimate_prompt(request.messages)
    counter = stats.counted()
    if counter is None:
        return Tokens(prompt, 0, "estimated", "estimate")
    return Tokens(prompt, counter.tokens, "estimated", counter.method)


def assemble(asked: Asked, ticket: Ticket, served: Served, stats: Stats, outcome: Outcome,
             ended: float) -> LedgerRecord:
    """The request's ledger record (unpriced: settlement prices it from the ticket). `ended` is the
    monotonic time it ended, on the clock `asked.started` was read from."""
    req, usage = asked.request, stats.usage
    extra: dict[str, object] = dict(ticket.notes)
    if req is not None and req.endpoint != ChatRequest.endpoint:
        extra["endpoint"] = req.endpoint
    if usage is not None and usage.anomaly is not None:
        extra["usage_anomaly"] = usage.anomaly  # clamped where it entered (schema/usage.py), kept on its record
    tokens = tokens_of(stats, ticket, req)
    if tokens.method is not None:
        extra["tokenizer"] = tokens.method
    return LedgerRecord(
        request_id=asked.request_id, key_id=asked.key.id, model=req.model if req is not None else "",
        provider=served.provider, upstream_model=served.upstream_model, stream=req is not None and req.stream,
        status=outcome.status, prompt_tokens=tokens.prompt, completion_tokens=tokens.completion,
        usage_source=tokens.source,
        ttft_ms=round((stats.first_at - asked.started) * 1000, 3) if stats.first_at is not None else None,
        duration_ms=round((ended - asked.started) * 1000, 3), disconnected=outcome.disconnected,
        error_code=outcome.error_code, attempts=served.attempts, created_at=asked.created_at, extra=extra,
        cached_tokens=usage.cached_tokens if usage is not None else None,
        cache_write_5m_tokens=usage.cache_write_5m_tokens if usage is not None else None,
        cache_write_1h_tokens=usage.cache_write_1h_tokens if usage is not None else None,
        session_id=asked.session_id, account_id=ticket.account_id)
