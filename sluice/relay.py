"""The use case: authenticate -> admit -> route -> call provider -> meter -> settle. No web framework here.

`Relay.complete()` serves a plain request; `Relay.stream()` returns a `RelayStream` only once an
upstream has answered: it yields the upstream's chunks metered (the front door's dialect writes them
for its client), and its `close()` releases the upstream and settles, however the stream ended.
"""

from __future__ import annotations

import itertools
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
from sluice.metering.meter import Meter
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
from sluice.routing.affinity import SessionAffinity, session_of
from sluice.routing.fallback import Cooldowns, with_failover
from sluice.routing.table import ModelTable, Route, Target
from sluice.schema.chat import ChatRequest
from sluice.storage.base import KeyRecord, LedgerRecord, Store

Headers = list[tuple[bytes, bytes]]
T = TypeVar("T")


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
        self.table = table
        self.ledger = ledger
        self.auth = auth
        self.admission = admission
        self.durable = durable
        self.cooldowns = Cooldowns(on_change=metrics.target_state, clock=clock)
        self.labels = metrics.Labels(table.names(), list(providers))
        self.channels = channels
        self.affinity = SessionAffinity()

    def meter(self, request_id: str, route: str = "") -> Meter:
        metrics.request_started()
        return Meter(request_id, route)

    async def settle(self, meter: Meter, *, durable: bool | None = None) -> LedgerRecord | None:
        """Price the request, free its limits and reservation, write its record. Once; later calls no-op."""
        rec = meter.take_record()
        if rec is None:
            return None
        self.admission.price_record(meter.ticket, rec)
        metrics.settled(self.labels, meter, rec)
        access_line(meter, rec)
        if meter.ticket.limits:
            await self.admission.release_limits(meter.ticket, (rec.prompt_tokens or 0) + (rec.completion_tokens or 0))
        if self.durable if durable is None else durable:
            await self.ledger.commit(rec)
        else:
            self.ledger.submit(rec)
        return rec

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

    async def _start(self, meter: Meter, key: KeyRecord, req: ChatRequest, stream: bool) -> tuple[Route, Headers]:
        meter.key_id = key.id
        meter.model = req.model
        meter.request = req
        meter.stream = stream
        if meter.session_id is None:  # the header, when sent, was read by the route
            meter.session_id = session_of(req.body)
        if req.endpoint != ChatRequest.endpoint:
            meter.extra["endpoint"] = req.endpoint
        route = self.route_for(key, req.model)
        ticket = await self.admission.admit(key, req, meter.ticket)
        meter.prompt_estimate = ticket.prompt_estimate
        return route, ticket.headers

    def targets(self, route: Route, meter: Meter) -> list[Target]:
        """The order to try: the session's last target first while it serves, else the weighted pick;
        only targets whose provider serves the request's endpoint (every one serves chat)."""
        order = self.affinity.prefer(route.name, meter.session_id, route.order())
        endpoint = meter.request.endpoint if meter.request is not None else ChatRequest.endpoint
        if endpoint != ChatRequest.endpoint:
            order = [t for t in order if serves(self.providers[t.provider], endpoint)]
            if not order:
                raise InvalidRequest(f"The model `{route.name}` does not support /v1/{endpoint}: none of its "
                                     "upstreams can serve it.", param="model", code="unsupported_endpoint")
        return order

    def served(self, meter: Meter) -> None:
        """Pin the session to the target that answered (a cooled-down pin moves to its replacement)."""
        self.affinity.remember(meter.model, meter.session_id, meter.provider, meter.upstream_model)

    def _attempt_meta(self, meter: Meter, target: Target, n: int, timeouts: Timeouts,
                      native: NativeBody | None, api_key: str | None) -> Call:
        meter.attempts = n
        if n > 1 and (meter.provider, meter.upstream_model) != (target.provider, target.model):
            meter.failovers += 1
        meter.provider = target.provider
        meter.upstream_model = target.model
        return Call(meter.request, target.model, meter.request_id, timeouts,  # type: ignore[arg-type]
                    native, api_key=api_key)

    async def _keyed(self, target: Target, fn: Callable[[str | None], Awaitable[T]]) -> T:
        """`fn` with a key from the target provider's pool (moving on past refused keys), if it has one."""
        return await fn(None) if self.channels is None else await self.channels.call(target.provider, fn)

    def native_provider(self, target: Target, native: NativeBody | None) -> NativeProvider | None:
        """The target's provider when it speaks the request's own wire format (a pass-through serves it);
        None when the translated request serves, which raises what makes a translation unservable."""
        if native is None:
            return None
        prov = self.providers[target.provider]
        if isinstance(prov, NativeProvider) and prov.dialect == native.dialect:
            return prov
        if native.unservable is not None:
            raise native.unservable
        return None

    async def complete(self, key: KeyRecord, req: ChatRequest, meter: Meter,
                       native: NativeBody | None = None) -> tuple[Completion, Headers]:
        route, headers = await self._start(meter, key, req, False)

        async def attempt(target: Target, n: int, timeouts: Timeouts) -> Completion:
            async def one(api_key: str | None) -> Completion:
                call = self._attempt_meta(meter, target, n, timeouts, native, api_key)
                if (prov := self.native_provider(target, native)) is not None:
                    return await prov.complete_native(call)
                return await self.providers[target.provider].complete(call)
            return await self._keyed(target, one)

        result = await with_failover(self.targets(route, meter), attempt, self.cooldowns)
        self.served(meter)
        meter.first_token()
        meter.usage = result.usage
        if result.usage is None:
            meter.counter = self.counter_factory()
            meter.counter.feed(result.text)
            if req.endpoint == "embeddings":
                result.body = _with_estimated_usage(result.body, meter)
        meter.status = 200
        return result, headers

    async def count_tokens(self, key: KeyRecord, req: ChatRequest, native: NativeBody,
                           request_id: str) -> tuple[bytes, bool]:
        """(reply body, estimated): the first target's own count when it speaks the request's format,
        else (or when that upstream is unavailable) a local count. Neither billed nor written to the ledger."""
        target = self.route_for(key, req.model).order()[0]
        prov = self.native_provider(target, native)
        if prov is not None:
            try:
                return await self._keyed(target, lambda api_key: prov.count_tokens(
                    Call(req, target.model, request_id, target.timeouts, native, api_key=api_key))), False
            except SluiceError as exc:
                if not exc.retryable:
                    raise
        tokens = count_request(req.body, self.counter_factory())
        return orjson.dumps({"input_tokens": tokens}), True

    async def stream(self, key: KeyRecord, req: ChatRequest, meter: Meter,
                     native: NativeBody | None = None) -> RelayStream:
        route, headers = await self._start(meter, key, req, True)
        served_native = False

        async def attempt(target: Target, n: int, timeouts: Timeouts) -> ChunkStream:
            async def one(api_key: str | None) -> ChunkStream:
                nonlocal served_native
                call = self._attempt_meta(meter, target, n, timeouts, native, api_key)
                if (prov := self.native_provider(target, native)) is not None:
                    served_native = True
                    return await prov.stream_native(call)
                served_native = False
                return await self.providers[target.provider].stream(call)
            return await self._keyed(target, one)

        upstream = await with_failover(self.targets(route, meter), attempt, self.cooldowns)
        self.served(meter)
        meter.status = 200
        meter.counter = self.counter_factory()
        metrics.stream_opened()
        rs = RelayStream(self, upstream, meter, req.include_usage, headers)
        rs.native = served_native
        return rs


class RelayStream:
    """An open upstream stream, metered in one loop (`metered()`) whatever the front door makes of it; the
    front door calls `finish()` before its last byte (the record is safe before the client sees the end)
    and a failure settles through `fail(exc)`. `close()` releases the upstream and settles if not yet."""

    def __init__(self, relay: Relay, upstream: ChunkStream, meter: Meter, include_usage: bool,
                 headers: Headers) -> None:
        self._relay = relay
        self._upstream = upstream
        self.meter = meter
        self.headers = headers
        self.include_usage = include_usage
        self.native = False  # the upstream speaks the front door's format: `passthrough()`, not `chunks()`

    async def metered(self) -> AsyncIterator[Chunk]:
        """Every upstream chunk as it comes, metered (first token, text counted, usage kept). A failure is
        settled, then raised (SluiceError) for the front door to end its stream with its error event."""
        meter = self.meter
        counter = meter.counter
        assert counter is not None
        try:
            async for chunk in self._upstream:
                if meter.ttft is None:
                    meter.first_token()
                if chunk.text:
                    counter.feed(chunk.text)
                if chunk.usage is not None:
                    meter.usage = chunk.usage
                yield chunk
        except SluiceError as exc:  # after the 200, failures travel as an error event, never a fake stop
            await self.fail(exc)
            raise

    async def chunks(self) -> AsyncIterator[dict[str, Any]]:
        """Parsed chunks, usage chunk included, for translating writers (e.g. Anthropic's format).
        Ends normally on a clean finish (already settled); raises SluiceError on a failure (settled)."""
        async for chunk in self.metered():
            yield chunk.parsed if chunk.parsed is not None else orjson.loads(chunk.payload)
        await self.finish()

    async def passthrough(self) -> AsyncIterator[bytes]:
        """A native stream's frames as the upstream sent them, metered as they pass; settled before the
        last frame. Raises SluiceError on a failure (settled)."""
        async for chunk in self.metered():
            if chunk.finish:
                await self.finish()
            yield chunk.payload
        await self.finish()

    async def finish(self) -> LedgerRecord | None:
        """Settle a stream that ended well (a no-op when already settled)."""
        return await self._relay.settle(self.meter)

    async def fail(self, exc: SluiceError) -> None:
        self.meter.error_code = exc.code or "upstream_error"
        await self._relay.settle(self.meter)

    async def close(self, *, disconnected: bool = False) -> None:
        """Release the upstream, then settle (a no-op when the stream already did)."""
        try:
            await self._upstream.aclose()
        finally:
            if disconnected:
                self.meter.disconnected = True
            await self._relay.settle(self.meter, durable=False)


def _with_estimated_usage(body: bytes, meter: Meter) -> bytes:
    """An embeddings reply from an upstream that reports no usage (Gemini) gets the estimate the ledger
    records, as OpenAI's SDKs expect `usage` there."""
    doc = orjson.loads(body)
    prompt, _, _ = meter.final_usage()
    doc["usage"] = {"prompt_tokens": prompt or 0, "total_tokens": prompt or 0}
    return orjson.dumps(doc)
