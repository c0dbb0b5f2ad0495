"""The use case: admit -> route -> call provider -> meter -> settle. No web framework here.

`Relay.complete()` serves a plain request and returns what its answer amounted to (`Stats`);
`Relay.stream()` returns a `RelayStream` only once an upstream has answered: it yields the upstream's
chunks metered (the front door's dialect writes them for its client) into the `Stats` it owns. Failover
reports what served through `Tries`. `Relay.record()` assembles, prices and counts the record and
`Relay.settle()` writes it; the request's scope (`http/lifecycle.py`) calls both, once per request.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import orjson

from sluice.auth.principal import Authenticator
from sluice.channels.hub import ChannelHub
from sluice.clock import SYSTEM_CLOCK, Clock
from sluice.errors import InvalidRequest, ModelNotFound, PermissionDenied, SluiceError
from sluice.metering.admission import Admission
from sluice.metering.ledger import LedgerWriter
from sluice.metering.record import Asked, Outcome, Stats, assemble
from sluice.metering.ticket import Ticket
from sluice.metering.tokenizer import Counter, count_request
from sluice.metering.tokens import TokenCounter
from sluice.observability import metrics
from sluice.observability.access_log import access_line
from sluice.providers.base import (
    Call,
    Chunk,
    ChunkStream,
    Completion,
    NativeBody,
    NativeProvider,
    Provider,
    Timeouts,
    serves,
)
from sluice.routing.affinity import session_order
from sluice.routing.fallback import Cooldowns, Served, Tries, with_failover
from sluice.routing.table import ModelTable, Route, Target
from sluice.schema.chat import ChatRequest
from sluice.storage.base import KeyRecord, LedgerRecord, Store

log = logging.getLogger("sluice.meter")

Headers = list[tuple[bytes, bytes]]
T = TypeVar("T")

Settle = Callable[[str | None], Awaitable[LedgerRecord]]
"""The request scope's one settlement, for a stream to end it: with the error code it failed with, or
None when it ended well; it returns the record (the same one, whoever called first)."""


_RID_PREFIX = "req_" + os.urandom(8).hex()
_rid_seq = itertools.count(1)


def new_request_id() -> str:
    """Unique across processes and instances: 64 random bits per process, then a counter (no syscall)."""
    return f"{_RID_PREFIX}{next(_rid_seq):08x}"


class Relay:
    def __init__(self, *, store: Store, providers: dict[str, Provider], table: ModelTable,
                 ledger: LedgerWriter, auth: Authenticator, admission: Admission, durable: bool = True,
                 counter_factory: Callable[[], Counter] = TokenCounter, channels: ChannelHub | None = None,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.counter_factory = counter_factory
        self.store = store
        self.providers = providers
        self._natives: dict[str, tuple[Provider, NativeProvider | None]] = {}  # by provider name
        self.table = table
        self.ledger = ledger
        self.auth = auth
        self.admission = admission
        self.durable = durable
        self.clock = clock  # the records' times: when a request started, its first token, when it ended
        self.cooldowns = Cooldowns(on_change=metrics.target_state, clock=clock)
        self.labels = metrics.Labels(table.names(), list(providers))
        self.channels = channels

    def record(self, asked: Asked, ticket: Ticket, served: Served, stats: Stats, outcome: Outcome) -> LedgerRecord:
        """The request's record: assembled from its values, priced from its ticket, counted and logged. Not
        idempotent: the request's scope makes it once, then `settle`s it."""
        rec = assemble(asked, ticket, served, stats, outcome, self.clock.monotonic())
        usage = stats.usage
        if usage is not None and usage.anomaly is not None:  # said once per request
            log.warning("upstream %s reported impossible usage for %s (clamped): %s", served.provider,
                        asked.request_id, usage.anomaly)
        self.admission.price_record(ticket, rec)
        reasoning = usage.reasoning_tokens if usage is not None else None
        metrics.settled(self.labels, rec, asked.route, reasoning, served.failovers)
        access_line(rec, asked.route, asked.key.name, ticket.account_id or asked.key.owner, reasoning)
        return rec

    async def settle(self, rec: LedgerRecord, ticket: Ticket, *, durable: bool | None = None) -> None:
        """Free the ticket's limits (and with the record its reservation) and write the record: before the
        client sees the end when `durable`, else queued."""
        if ticket.limits:
            await self.admission.release_limits(ticket, (rec.prompt_tokens or 0) + (rec.completion_tokens or 0))
        if self.durable if durable is None else durable:
            await self.ledger.commit(rec)
        else:
            self.ledger.submit(rec)

    def route_for(self, key: KeyRecord, model: str) -> Route:
        route = self.table.get(model)
        if route is None:
            raise ModelNotFound(model)
        if not key.may_use(model):
            raise PermissionDenied(f"This API key is not allowed to use the model `{model}`.", param="model")
        return route

    def models_for(self, key: KeyRecord) -> list[Route]:
        """Exact names, then what the patterns make of the upstreams' own model lists."""
        names = self.table.names()
        if self.channels is not None:
            names += self.table.listed(self.channels.offered)
        return [r for n in names if key.may_use(n) and (r := self.table.get(n)) is not None]

    async def _targets(self, asked: Asked, req: ChatRequest, ticket: Ticket) -> list[Target]:
        """Admit the request (filling `ticket`), then the order to try: a session's own order (the same on
        every instance), else the weighted pick; only targets whose provider serves the request's endpoint
        (every one serves chat)."""
        route = self.route_for(asked.key, req.model)
        await self.admission.admit(asked.key, req, ticket)
        order = route.order() if asked.session_id is None else session_order(route, asked.session_id)
        if req.endpoint != ChatRequest.endpoint:
            order = [t for t in order if serves(self.providers[t.provider], req.endpoint)]
            if not order:
                raise InvalidRequest(f"The model `{route.name}` does not support /v1/{req.endpoint}: none of "
                                     "its upstreams can serve it.", param="model", code="unsupported_endpoint")
        return order

    async def _keyed(self, target: Target, fn: Callable[[str | None], Awaitable[T]], session: str | None) -> T:
        """`fn` with a key from the target provider's pool (moving on past refused keys), if it has one; a
        session's own key first."""
        return await fn(None) if self.channels is None else await self.channels.call(target.provider, fn, session)

    def native_provider(self, target: Target, native: NativeBody | None) -> NativeProvider | None:
        """The target's provider when it speaks the request's own wire format (a pass-through serves it);
        None when the translated request serves, which raises what makes a translation unservable."""
        if native is None:
            return None
        prov = self.providers[target.provider]
        known = self._natives.get(target.provider)
        if known is None or known[0] is not prov:  # a Protocol isinstance costs ~30 µs: once per provider
            known = self._natives[target.provider] = (prov, prov if isinstance(prov, NativeProvider) else None)
        if known[1] is not None and known[1].dialect == native.dialect:
            return known[1]
        if native.unservable is not None:
            raise native.unservable
        return None

    async def complete(self, asked: Asked, req: ChatRequest, ticket: Ticket, tries: Tries,
                       native: NativeBody | None = None) -> tuple[Completion, Stats]:
        """The upstream's whole reply, and what it amounted to (its usage, else its text counted)."""
        async def attempt(target: Target, n: int, timeouts: Timeouts) -> Completion:
            async def one(api_key: str | None) -> Completion:
                call = Call(req, target.model, asked.request_id, timeouts, native, api_key=api_key)
                if (prov := self.native_provider(target, native)) is not None:
                    return await prov.complete_native(call)
                return await self.providers[target.provider].complete(call)
            return await self._keyed(target, one, asked.session_id)

        result = await with_failover(await self._targets(asked, req, ticket), attempt, self.cooldowns, tries)
        stats = Stats(first_at=self.clock.monotonic(), usage=result.usage)
        if result.usage is None:
            stats.counter = self.counter_factory()
            stats.counter.feed(result.text)
        return result, stats

    async def count_tokens(self, key: KeyRecord, req: ChatRequest, native: NativeBody,
                           request_id: str) -> tuple[bytes, bool]:
        """(reply body, estimated): the first target's own count when it speaks the request's format,
        else (or when that upstream is unavailable) a local count. Neither billed nor written to the ledger."""
        target = self.route_for(key, req.model).order()[0]
        prov = self.native_provider(target, native)
        if prov is not None:
            try:
                return await self._keyed(target, lambda api_key: prov.count_tokens(
                    Call(req, target.model, request_id, target.timeouts, native, api_key=api_key)), None), False
            except SluiceError as exc:
                if not exc.retryable:
                    raise
        tokens = count_request(req.body, self.counter_factory())
        return orjson.dumps({"input_tokens": tokens}), True

    async def stream(self, asked: Asked, req: ChatRequest, ticket: Ticket, tries: Tries, settle: Settle,
                     native: NativeBody | None = None) -> RelayStream:
        """The open upstream stream, once a target answered; `settle` is the scope's, for its end."""
        served_native = False

        async def attempt(target: Target, n: int, timeouts: Timeouts) -> ChunkStream:
            async def one(api_key: str | None) -> ChunkStream:
                nonlocal served_native
                call = Call(req, target.model, asked.request_id, timeouts, native, api_key=api_key)
                if (prov := self.native_provider(target, native)) is not None:
                    served_native = True
                    return await prov.stream_native(call)
                served_native = False
                return await self.providers[target.provider].stream(call)
            return await self._keyed(target, one, asked.session_id)

        upstream = await with_failover(await self._targets(asked, req, ticket), attempt, self.cooldowns, tries)
        metrics.stream_opened()
        return RelayStream(upstream, Stats(self.counter_factory()), self.clock, settle, req.include_usage,
                           ticket.headers, served_native)


class RelayStream:
    """An open upstream stream, metered in one loop (`written()`) into the `stats` it owns, whatever the front
    door makes of it; the front door calls `finish()` before its last byte (the record is safe before the
    client sees the end) and a failure settles through `fail(exc)`. `close()` releases the upstream."""

    __slots__ = ("_clock", "_settle", "_upstream", "headers", "include_usage", "native", "stats")

    def __init__(self, upstream: ChunkStream, stats: Stats, clock: Clock, settle: Settle, include_usage: bool,
                 headers: Headers, native: bool) -> None:
        self._upstream = upstream
        self.stats = stats
        self._clock = clock
        self._settle = settle
        self.headers = headers
        self.include_usage = include_usage
        self.native = native  # the upstream speaks the front door's format: `passthrough()`, not `translated()`

    async def written(self, write: Callable[[Chunk], bytes | None], *, settle_at_finish: bool = False
                      ) -> AsyncIterator[bytes]:
        """What `write` makes of each upstream chunk, metered as it passes (first token, text counted, usage
        kept), the output of one upstream read joined into one piece (nothing is held past a read's last
        chunk, so nothing waits for the network). With `settle_at_finish` the stream is settled at the chunk
        that finishes it, before its piece goes. A failure is settled, then raised (SluiceError) after the
        pieces before it, for the front door to end its stream with its error event. One loop, one
        generator for the chunks: the metering is not a layer of its own. A chunk whose text was not read
        (`text` None) is kept by the stats, read only if the stream ends without usage."""
        stats = self.stats
        counter = stats.counter
        clock = self._clock
        assert counter is not None
        held: list[bytes] = []
        try:
            async for chunk in self._upstream:
                if stats.first_at is None:
                    stats.first_at = clock.monotonic()
                text = chunk.text
                if text is None:  # an OpenAI chunk whose text was left unread: it counts only without usage
                    stats.defer(chunk.payload)
                elif text:
                    counter.feed(text)
                if chunk.usage is not None:
                    stats.report(chunk.usage)
                out = write(chunk)
                if out:
                    held.append(out)
                if chunk.more or not held:
                    continue
                if chunk.finish and settle_at_finish:
                    await self.finish()
                yield held[0] if len(held) == 1 else b"".join(held)
                held.clear()
        except SluiceError as exc:  # after the 200, failures travel as an error event, never a fake stop
            await self.fail(exc)
            if held:
                yield b"".join(held)
            raise
        if held:  # a stream that ended on a chunk marked `more` (its provider stopped reading)
            yield b"".join(held)

    async def translated(self, feed: Callable[[dict[str, Any]], bytes | None]) -> AsyncIterator[bytes]:
        """What `feed` makes of each parsed chunk (usage chunk included), for translating writers, one piece
        per upstream read. Ends normally on a clean finish, settled; raises SluiceError on a failure
        (settled) after the pieces before it."""
        async for piece in self.written(
                lambda c: feed(c.parsed if c.parsed is not None else orjson.loads(c.payload))):
            yield piece
        await self.finish()

    async def passthrough(self) -> AsyncIterator[bytes]:
        """A native stream's frames as the upstream sent them, metered as they pass, one piece per upstream
        read; settled before the last frame. Raises SluiceError on a failure (settled)."""
        async for piece in self.written(_payload, settle_at_finish=True):
            yield piece
        await self.finish()

    async def finish(self) -> LedgerRecord:
        """Settle a stream that ended well (the scope's record when it already settled)."""
        return await self._settle(None)

    async def fail(self, exc: SluiceError) -> LedgerRecord:
        return await self._settle(exc.code or "upstream_error")

    async def close(self) -> None:
        """Release the upstream (the scope settles after, if nothing did)."""
        await self._upstream.aclose()


def _payload(chunk: Chunk) -> bytes:
    return chunk.payload
