"""The use case: authenticate -> admit -> route -> call provider -> meter -> settle. No web framework here.

`Relay.complete()` serves a plain request; `Relay.stream()` returns a `RelayStream` only once an
upstream has answered, whose `frames()` yields the exact bytes for the client and whose `close()`
releases the upstream and writes the ledger record exactly once, however the stream ended.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import orjson

from sluice.auth.principal import Authenticator
from sluice.errors import ModelNotFound, PermissionDenied, SluiceError
from sluice.metering.ledger import LedgerWriter
from sluice.metering.meter import Meter
from sluice.metering.tokens import TokenCounter
from sluice.providers.base import Call, ChunkStream, Completion, Provider
from sluice.routing.fallback import Cooldowns, with_failover
from sluice.routing.table import ModelTable, Route, Target
from sluice.schema.chat import ChatRequest
from sluice.sse import DONE_FRAME
from sluice.storage.base import KeyRecord, Store


def new_request_id() -> str:
    return "req_" + os.urandom(12).hex()


class Relay:
    def __init__(self, *, store: Store, providers: dict[str, Provider], table: ModelTable,
                 ledger: LedgerWriter, auth: Authenticator) -> None:
        self.store = store
        self.providers = providers
        self.table = table
        self.ledger = ledger
        self.auth = auth
        self.cooldowns = Cooldowns()

    def meter(self, request_id: str) -> Meter:
        return Meter(request_id, self.ledger.submit)

    def route_for(self, key: KeyRecord, model: str) -> Route:
        route = self.table.get(model)
        if route is None:
            raise ModelNotFound(model)
        if not key.may_use(model):
            raise PermissionDenied(f"This API key is not allowed to use the model `{model}`.", param="model")
        return route

    def models_for(self, key: KeyRecord) -> list[Route]:
        return [r for n in self.table.names() if key.may_use(n) and (r := self.table.get(n)) is not None]

    def _start(self, meter: Meter, key: KeyRecord, req: ChatRequest, stream: bool) -> Route:
        meter.key_id = key.id
        meter.model = req.model
        meter.request = req
        meter.stream = stream
        return self.route_for(key, req.model)

    def _attempt_meta(self, meter: Meter, target: Target, n: int) -> Call:
        meter.attempts = n
        meter.provider = target.provider
        meter.upstream_model = target.model
        return Call(meter.request, target.model, meter.request_id, target.timeouts)  # type: ignore[arg-type]

    async def complete(self, key: KeyRecord, req: ChatRequest, meter: Meter) -> Completion:
        route = self._start(meter, key, req, False)

        async def attempt(target: Target, n: int) -> Completion:
            return await self.providers[target.provider].complete(self._attempt_meta(meter, target, n))

        result = await with_failover(route.order(), attempt, self.cooldowns)
        meter.first_token()
        meter.usage = result.usage
        if result.usage is None:
            meter.counter = TokenCounter()
            meter.counter.feed(result.text)
        meter.status = 200
        return result

    async def stream(self, key: KeyRecord, req: ChatRequest, meter: Meter) -> RelayStream:
        route = self._start(meter, key, req, True)

        async def attempt(target: Target, n: int) -> ChunkStream:
            return await self.providers[target.provider].stream(self._attempt_meta(meter, target, n))

        upstream = await with_failover(route.order(), attempt, self.cooldowns)
        meter.status = 200
        return RelayStream(upstream, meter, req.include_usage)


class RelayStream:
    """Turns provider chunks into client frames; strips the usage chunk unless the client asked."""

    def __init__(self, upstream: ChunkStream, meter: Meter, include_usage: bool) -> None:
        self._upstream = upstream
        self.meter = meter
        self._include_usage = include_usage
        self._last: dict[str, Any] | None = None
        meter.counter = TokenCounter()

    async def frames(self) -> AsyncIterator[bytes]:
        """Every frame ends in a blank line; the last is `[DONE]` or an error event."""
        meter = self.meter
        counter = meter.counter
        assert counter is not None
        include_usage = self._include_usage
        try:
            async for chunk in self._upstream:
                if meter.ttft is None:
                    meter.first_token()
                if chunk.text:
                    counter.feed(chunk.text)
                payload = chunk.payload
                if chunk.usage is not None:
                    meter.usage = chunk.usage
                    if not include_usage:
                        if chunk.usage_only:
                            continue
                        payload = _without_usage(chunk.parsed, payload)
                elif chunk.parsed is not None:
                    self._last = chunk.parsed
                yield b"data: " + payload + b"\n\n"
        except SluiceError as exc:  # after the 200, failures travel as an error event, never a fake stop
            meter.error_code = exc.code or "upstream_error"
            yield b"data: " + exc.to_body() + b"\n\n"
            return
        if include_usage and meter.usage is None:
            yield self._estimated_usage_frame()
        yield DONE_FRAME

    def _estimated_usage_frame(self) -> bytes:
        prompt, completion, _ = self.meter.final_usage()
        head = self._last or {}
        chunk = {"id": head.get("id", "chatcmpl-" + self.meter.request_id), "object": "chat.completion.chunk",
                 "created": head.get("created", int(self.meter.wall_start)),
                 "model": head.get("model", self.meter.upstream_model), "choices": [],
                 "usage": {"prompt_tokens": prompt or 0, "completion_tokens": completion or 0,
                           "total_tokens": (prompt or 0) + (completion or 0)}}
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    async def close(self, *, disconnected: bool = False, error: SluiceError | None = None) -> None:
        """Release the upstream, then write the ledger record (once)."""
        try:
            await self._upstream.aclose()
        finally:
            if disconnected:
                self.meter.disconnected = True
            if error is not None and self.meter.error_code is None:
                self.meter.error_code = error.code or "error"
            self.meter.finish()


def _without_usage(parsed: dict[str, Any] | None, payload: bytes) -> bytes:
    obj = dict(parsed) if parsed is not None else orjson.loads(payload)
    obj.pop("usage", None)
    return orjson.dumps(obj)
