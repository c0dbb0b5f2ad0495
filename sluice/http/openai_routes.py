"""OpenAI routes: `POST /v1/chat/completions` and legacy `/v1/completions` (JSON and SSE), `POST /v1/embeddings`,
each its dialect's translation (`dialects/chat_completions.py`, `completions.py`, `embeddings.py`) over one
relay path, and `GET /v1/models[/{id}]` (in Anthropic's shape and envelope when the request carries
`anthropic-version`, as Claude Code's model discovery does)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qsl

from sluice.dialects.anthropic_messages.models import model_info, models_page
from sluice.dialects.chat_completions import ChatStreamWriter
from sluice.dialects.chat_completions import error_event as chat_error_event
from sluice.dialects.completions import CompletionsRequest
from sluice.dialects.embeddings import EmbeddingsRequest, with_estimated_usage
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
    send_json,
)
from sluice.http.doors import ANTHROPIC, OPENAI
from sluice.http.lifecycle import Lifecycle, RequestScope
from sluice.http.streaming import send_frames
from sluice.metering.pricing import fmt_money
from sluice.providers.base import Chunk
from sluice.relay import Relay, RelayStream
from sluice.routing.fallback import Served
from sluice.routing.table import Route
from sluice.schema.chat import ChatRequest
from sluice.sse import KEEPALIVE_FRAME
from sluice.storage.base import LedgerRecord

STARTED = int(time.time())


class OpenAIRoutes:
    def __init__(self, life: Lifecycle, *, heartbeat: float) -> None:
        self.life = life
        self.relay: Relay = life.relay
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
        async with self.life.scope(scope, receive, send, rid, headers, OPENAI,
                                   auth=header(scope, b"authorization")) as req:
            creq = parse(req.raw)
            if creq.stream:
                rs = await req.stream(creq)
                del creq  # a held stream keeps none of the body (docs/decisions.md, "What a held stream keeps")
                await send_frames(send, _chat_events(req, rs), [*headers, *rs.headers, *_served_by(req.served)],
                                  self.heartbeat, KEEPALIVE_FRAME)
                return
            result, limit_headers = await req.complete(creq)
            body = result.body
            if result.usage is None and creq.endpoint == EmbeddingsRequest.endpoint:
                body = with_estimated_usage(body, req.tokens().prompt)
            rec = await req.settle()
            await send_bytes(send, 200, body,
                             [JSON_CT, *headers, *limit_headers, *_served_by(req.served), *_charged(rec)])

    async def list_models(self, scope: Scope, receive: Receive, send: Send, rid: str, headers: Headers) -> None:
        async with self._side(scope, receive, send, rid, headers) as req:
            routes = self.relay.models_for(req.key)
            if not _anthropic(scope):
                prices = {p["model"]: p for p in await caller_prices(self.relay, req.key)}
                data = [_model(r, prices.get(r.name)) for r in routes]
                await send_json(send, 200, {"object": "list", "data": data}, headers)
                return
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            page = models_page([r.name for r in routes], query, STARTED)
            await send_json(send, 200, page, headers)

    async def get_model(self, scope: Scope, receive: Receive, send: Send, rid: str, headers: Headers,
                        model_id: str) -> None:
        async with self._side(scope, receive, send, rid, headers) as req:
            try:
                route = self.relay.route_for(req.key, model_id)
            except SluiceError:  # never reveal models the key can't use
                raise ModelNotFound(model_id) from None
            if _anthropic(scope):
                await send_json(send, 200, model_info(route.name, STARTED), headers)
                return
            prices = {p["model"]: p for p in await caller_prices(self.relay, req.key)}
            await send_json(send, 200, _model(route, prices.get(route.name)), headers)

    def _side(self, scope: Scope, receive: Receive, send: Send, rid: str, headers: Headers) -> RequestScope:
        """Authenticated, never metered; errors in Anthropic's envelope when the client speaks it."""
        door = ANTHROPIC if _anthropic(scope) else OPENAI
        return self.life.scope(scope, receive, send, rid, headers, door, auth=credentials(scope), metered=False)


def _anthropic(scope: Scope) -> bool:
    return header(scope, b"anthropic-version") is not None


async def _chat_events(req: RequestScope, rs: RelayStream) -> AsyncIterator[bytes]:
    """The client's events: each chunk's bytes as they came unless its usage must go, the events of one
    upstream read written together; settled before `[DONE]`."""
    writer = ChatStreamWriter(rs.include_usage)

    def event(chunk: Chunk) -> bytes | None:
        return writer.feed(chunk.payload, chunk.parsed, has_usage=chunk.usage is not None,
                           usage_only=chunk.usage_only)
    try:
        async for piece in rs.written(event):
            yield piece
    except SluiceError as exc:  # already settled by the relay stream
        yield chat_error_event(exc)
        return
    if writer.wants_estimate(rs.stats.usage is not None):
        tokens = req.tokens()
        yield writer.estimated_usage(req.rid, req.created_at, req.served.upstream_model, tokens.prompt,
                                     tokens.completion)
    await rs.finish()
    yield writer.done()


def _served_by(served: Served) -> Headers:
    if served.upstream_model is None:
        return []
    return [(b"x-sluice-upstream-model", served.upstream_model.encode()),
            (b"x-sluice-provider", (served.provider or "").encode())]


def _charged(rec: LedgerRecord) -> Headers:
    out = [(b"x-sluice-usage-source", rec.usage_source.encode())]
    if rec.cost is not None:
        out.append((b"x-sluice-cost", (fmt_money(rec.cost) or "0").encode()))
    return out


def _model(route: Route, price: dict[str, Any] | None = None) -> dict[str, object]:
    doc: dict[str, object] = {"id": route.name, "object": "model", "created": STARTED, "owned_by": route.owned_by}
    if price is not None and price["priced"]:   # what this caller pays, per million tokens (an extension)
        doc["pricing"] = {k: price[k] for k in ("input", "cached_input", "output", "multiplier")}
    return doc
