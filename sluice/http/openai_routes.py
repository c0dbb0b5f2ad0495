"""OpenAI routes: `POST /v1/chat/completions` and legacy `/v1/completions` (JSON and SSE), `POST /v1/embeddings`,
and `GET /v1/models[/{id}]` (in Anthropic's shape and envelope when the request carries `anthropic-version`,
as Claude Code's model discovery does)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from sluice.errors import ModelNotFound, SluiceError
from sluice.http.account_routes import caller_prices
from sluice.http.asgi import (
    JSON_CT,
    Headers,
    Receive,
    Scope,
    Send,
    credentials,
    header,
    send_bytes,
    send_error,
    send_json,
)
from sluice.http.exchange import Exchange, run_exchange
from sluice.http.streaming import DisconnectWatch, error_frame, send_stream
from sluice.metering.meter import Meter
from sluice.metering.pricing import fmt_money
from sluice.providers.anthropic.inbound import error_body
from sluice.providers.anthropic.models import model_info, models_page
from sluice.relay import Relay
from sluice.routing.table import Route
from sluice.schema.chat import ChatRequest
from sluice.schema.endpoints import CompletionsRequest, EmbeddingsRequest
from sluice.storage.base import KeyRecord, LedgerRecord

STARTED = int(time.time())


class OpenAIRoutes:
    def __init__(self, relay: Relay, *, max_body: int, heartbeat: float, inflight: set[DisconnectWatch]) -> None:
        self.relay = relay
        self.inflight = inflight
        self.max_body = max_body
        self.heartbeat = heartbeat

    async def chat_completions(self, scope: Scope, receive: Receive, send: Send, rid: str,
                               headers: Headers) -> None:
        await self._relay(scope, receive, send, rid, headers, ChatRequest.parse)

    async def completions(self, scope: Scope, receive: Receive, send: Send, rid: str, headers: Headers) -> None:
        await self._relay(scope, receive, send, rid, headers, CompletionsRequest.parse)

    async def embeddings(self, scope: Scope, receive: Receive, send: Send, rid: str, headers: Headers) -> None:
        await self._relay(scope, receive, send, rid, headers, EmbeddingsRequest.parse)

    async def _relay(self, scope: Scope, receive: Receive, send: Send, rid: str, headers: Headers,
                     parse: Callable[[bytes], ChatRequest]) -> None:
        """One OpenAI endpoint served by passing its body through: the upstream's reply bytes unchanged."""
        async def serve(ex: Exchange) -> None:
            relay, meter = self.relay, ex.meter
            req = parse(ex.raw)
            meter.model = req.model
            if req.stream:
                ex.stream = await relay.stream(ex.key, req, meter)
                await send_stream(send, ex.stream, [*headers, *ex.stream.headers, *_served_by(meter)],
                                  self.heartbeat)
                return
            result, limit_headers = await relay.complete(ex.key, req, meter)
            rec = await relay.settle(meter)
            ex.watch.done = True
            await send_bytes(send, 200, result.body,
                             [JSON_CT, *headers, *limit_headers, *_served_by(meter), *_charged(rec)])

        await run_exchange(self.relay, scope, receive, send, rid, headers, max_body=self.max_body,
                           auth=header(scope, b"authorization"), inflight=self.inflight, serve=serve,
                           send_error=send_error, stream_error=error_frame)

    async def list_models(self, scope: Scope, send: Send, headers: Headers) -> None:
        key = await self._auth(scope, send, headers)
        if key is None:
            return
        routes = self.relay.models_for(key)
        if not _anthropic(scope):
            prices = {p["model"]: p for p in await caller_prices(self.relay, key)}
            data = [_model(r, prices.get(r.name)) for r in routes]
            await send_json(send, 200, {"object": "list", "data": data}, headers)
            return
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        try:
            page = models_page([r.name for r in routes], query, STARTED)
        except SluiceError as exc:
            await _send_error(scope, send, exc, headers)
            return
        await send_json(send, 200, page, headers)

    async def get_model(self, scope: Scope, send: Send, headers: Headers, model_id: str) -> None:
        key = await self._auth(scope, send, headers)
        if key is None:
            return
        try:
            route = self.relay.route_for(key, model_id)
        except SluiceError:  # never reveal models the key can't use
            await _send_error(scope, send, ModelNotFound(model_id), headers)
            return
        if _anthropic(scope):
            await send_json(send, 200, model_info(route.name, STARTED), headers)
            return
        prices = {p["model"]: p for p in await caller_prices(self.relay, key)}
        await send_json(send, 200, _model(route, prices.get(route.name)), headers)

    async def _auth(self, scope: Scope, send: Send, headers: Headers) -> KeyRecord | None:
        try:
            return await self.relay.auth.authenticate(credentials(scope))
        except SluiceError as exc:
            await _send_error(scope, send, exc, headers)
            return None


def _anthropic(scope: Scope) -> bool:
    return header(scope, b"anthropic-version") is not None


async def _send_error(scope: Scope, send: Send, exc: SluiceError, headers: Headers) -> None:
    if _anthropic(scope):
        await send_bytes(send, exc.status, error_body(exc), [JSON_CT, *exc.headers(), *headers])
    else:
        await send_error(send, exc, headers)


def _served_by(meter: Meter) -> Headers:
    if meter.upstream_model is None:
        return []
    return [(b"x-sluice-upstream-model", meter.upstream_model.encode()),
            (b"x-sluice-provider", (meter.provider or "").encode())]


def _charged(rec: LedgerRecord | None) -> Headers:
    if rec is None:
        return []
    out = [(b"x-sluice-usage-source", rec.usage_source.encode())]
    if rec.cost is not None:
        out.append((b"x-sluice-cost", (fmt_money(rec.cost) or "0").encode()))
    return out


def _model(route: Route, price: dict[str, Any] | None = None) -> dict[str, object]:
    doc: dict[str, object] = {"id": route.name, "object": "model", "created": STARTED, "owned_by": route.owned_by}
    if price is not None and price["priced"]:   # what this caller pays, per million tokens (an extension)
        doc["pricing"] = {k: price[k] for k in ("input", "cached_input", "output", "multiplier")}
    return doc
