"""Inbound `POST /v1/responses` (OpenAI's Responses API, as Codex CLI and the Agents SDK speak it), served
from any upstream through the same lifecycle as chat; an upstream that speaks Responses gets it as sent.

Sluice keeps no responses: `store` is ignored (every response is stateless) and `GET /v1/responses/{id}`
is a 404 that says so. Errors before the 200 use OpenAI's envelope, after it `response.failed`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson

from sluice.dialects.responses.reply import Shell, completion_to_response, error_event, usage
from sluice.dialects.responses.request import translate_request
from sluice.dialects.responses.stream import ResponsesStreamWriter
from sluice.errors import NotFound, SluiceError
from sluice.http.asgi import (
    JSON_CT,
    Headers,
    Receive,
    Scope,
    Send,
    credentials,
    send_bytes,
)
from sluice.http.doors import RESPONSES
from sluice.http.lifecycle import Lifecycle, RequestScope
from sluice.http.streaming import send_frames
from sluice.providers.base import NativeBody
from sluice.relay import RelayStream
from sluice.routing.affinity import session_of
from sluice.schema.chat import ChatRequest, parse_json_object
from sluice.sse import KEEPALIVE_FRAME


class ResponsesRoute:
    def __init__(self, life: Lifecycle, *, heartbeat: float) -> None:
        self.life = life
        self.heartbeat = heartbeat

    async def create(self, scope: Scope, receive: Receive, send: Send, rid: str, headers: Headers) -> None:
        async with self.life.scope(scope, receive, send, rid, headers, RESPONSES, auth=credentials(scope)) as req:
            body = parse_json_object(req.raw)
            tr = translate_request(body)
            creq = ChatRequest(tr.body)
            native = NativeBody("responses", req.raw, creq.model)
            session = session_of(body)  # the translation drops prompt_cache_key; it still names the session
            shell = Shell(rid, creq.model, body)
            if creq.stream:
                rs = await req.stream(creq, native, session=session)
                frames = _native(rs) if rs.native else _translated(req, rs, ResponsesStreamWriter(shell, tr.tools))
                del body, tr, creq, native, shell  # a held stream keeps none of the body (but what the shell echoes)
                await send_frames(send, frames, [*headers, *rs.headers], self.heartbeat, KEEPALIVE_FRAME)
                return
            result, limit_headers = await req.complete(creq, native, session=session)
            await req.settle()
            out = result.body if result.native else orjson.dumps(
                completion_to_response(shell, orjson.loads(result.body), tr.tools))
            await send_bytes(send, 200, out, [JSON_CT, *headers, *limit_headers])

    async def stored(self, scope: Scope, receive: Receive, send: Send, rid: str, headers: Headers,
                     rest: str) -> None:
        """`/v1/responses/{id}[/...]` (retrieve, delete, cancel, input_items) and the other sub-endpoints
        (`compact`, `input_tokens`): authenticated, then a 404 that says what Sluice does not offer."""
        async with self.life.scope(scope, receive, send, rid, headers, RESPONSES, auth=credentials(scope),
                                   metered=False):
            first = rest.split("/", 1)[0]
            if first in ("compact", "input_tokens"):
                raise NotFound(f"Sluice does not offer POST /v1/responses/{first}.", code="unknown_url")
            raise NotFound(f"No response with id '{first}': Sluice does not store responses "
                           "(every response is served as with store: false).", param="response_id")


async def _translated(req: RequestScope, rs: RelayStream, writer: ResponsesStreamWriter) -> AsyncIterator[bytes]:
    yield writer.start()
    try:
        async for piece in rs.translated(writer.feed):
            yield piece
    except SluiceError as exc:  # already settled by the relay stream
        yield writer.fail(exc)
        return
    estimate = None
    if rs.stats.usage is None:  # the upstream reported none: the client gets what the ledger recorded
        tokens = req.tokens()
        if tokens.prompt is not None:
            estimate = usage({"prompt_tokens": tokens.prompt, "completion_tokens": tokens.completion or 0})
    yield writer.finish(estimate)


async def _native(rs: RelayStream) -> AsyncIterator[bytes]:
    try:
        async for frame in rs.passthrough():
            yield frame
    except SluiceError as exc:
        yield error_event(exc)
