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
    ClientGone,
    Headers,
    Receive,
    Scope,
    Send,
    credentials,
    read_body,
    send_bytes,
    send_error,
)
from sluice.http.exchange import Exchange, run_exchange
from sluice.http.streaming import DisconnectWatch, send_frames
from sluice.providers.base import NativeBody
from sluice.relay import Relay, RelayStream
from sluice.routing.affinity import session_of
from sluice.schema.chat import ChatRequest, parse_json_object
from sluice.sse import KEEPALIVE_FRAME


class ResponsesRoute:
    def __init__(self, relay: Relay, *, max_body: int, heartbeat: float, inflight: set[DisconnectWatch]) -> None:
        self.relay = relay
        self.inflight = inflight
        self.max_body = max_body
        self.heartbeat = heartbeat

    async def create(self, scope: Scope, receive: Receive, send: Send, rid: str, headers: Headers) -> None:
        async def serve(ex: Exchange) -> None:
            relay, meter = self.relay, ex.meter
            body = parse_json_object(ex.raw)
            tr = translate_request(body)
            req = ChatRequest(tr.body)
            native = NativeBody("responses", ex.raw, req.model)
            meter.model = req.model
            if meter.session_id is None:  # the translation drops prompt_cache_key; it still names the session
                meter.session_id = session_of(body)
            shell = Shell(rid, req.model, body)
            if req.stream:
                ex.stream = rs = await relay.stream(ex.key, req, meter, native)
                frames = _native(rs) if rs.native else _translated(rs, ResponsesStreamWriter(shell, tr.tools))
                await send_frames(send, frames, [*headers, *rs.headers], self.heartbeat, KEEPALIVE_FRAME)
                return
            result, limit_headers = await relay.complete(ex.key, req, meter, native)
            await relay.settle(meter)
            ex.watch.done = True
            out = result.body if result.native else orjson.dumps(
                completion_to_response(shell, orjson.loads(result.body), tr.tools))
            await send_bytes(send, 200, out, [JSON_CT, *headers, *limit_headers])

        await run_exchange(self.relay, scope, receive, send, rid, headers, max_body=self.max_body,
                           auth=credentials(scope), inflight=self.inflight, serve=serve, send_error=send_error,
                           stream_error=error_event)

    async def stored(self, scope: Scope, receive: Receive, send: Send, headers: Headers, rest: str) -> None:
        """`/v1/responses/{id}[/...]` (retrieve, delete, cancel, input_items) and the other sub-endpoints
        (`compact`, `input_tokens`): authenticated, then a 404 that says what Sluice does not offer."""
        try:
            await read_body(scope, receive, self.max_body)
            await self.relay.auth.authenticate(credentials(scope))
            first = rest.split("/", 1)[0]
            if first in ("compact", "input_tokens"):
                raise NotFound(f"Sluice does not offer POST /v1/responses/{first}.", code="unknown_url")
            raise NotFound(f"No response with id '{first}': Sluice does not store responses "
                           "(every response is served as with store: false).", param="response_id")
        except ClientGone:
            return
        except SluiceError as exc:
            await send_error(send, exc, headers)


async def _translated(rs: RelayStream, writer: ResponsesStreamWriter) -> AsyncIterator[bytes]:
    yield writer.start()
    try:
        async for chunk in rs.chunks():
            out = writer.feed(chunk)
            if out:
                yield out
    except SluiceError as exc:  # already settled by the relay stream
        yield writer.fail(exc)
        return
    estimate = None
    if rs.meter.usage is None:  # the upstream reported none: the client gets what the ledger recorded
        prompt, completion, _ = rs.meter.final_usage()
        if prompt is not None:
            estimate = usage({"prompt_tokens": prompt, "completion_tokens": completion or 0})
    yield writer.finish(estimate)


async def _native(rs: RelayStream) -> AsyncIterator[bytes]:
    try:
        async for frame in rs.passthrough():
            yield frame
    except SluiceError as exc:
        yield error_event(exc)
