"""Inbound `POST /v1/messages` in Anthropic's format, served from any upstream through the same relay.

The Anthropic SDK authenticates with `x-api-key` (a Sluice key works there, or as a Bearer token);
errors use Anthropic's envelope, streams Anthropic's named events.
"""

from __future__ import annotations

import orjson

from sluice.errors import SluiceError
from sluice.http.asgi import JSON_CT, Headers, Receive, Scope, Send, header, send_bytes
from sluice.http.exchange import Exchange, run_exchange
from sluice.http.streaming import SSE_HEADERS, DisconnectWatch
from sluice.providers.anthropic.inbound import (
    MessagesStreamWriter,
    completion_to_message,
    error_body,
    error_event,
    request_to_openai,
)
from sluice.relay import Relay, RelayStream
from sluice.schema.chat import ChatRequest, parse_json_object


class MessagesRoute:
    def __init__(self, relay: Relay, *, max_body: int, inflight: set[DisconnectWatch]) -> None:
        self.relay = relay
        self.inflight = inflight
        self.max_body = max_body

    async def handle(self, scope: Scope, receive: Receive, send: Send, rid: str, headers: Headers) -> None:
        api_key = header(scope, b"x-api-key")

        async def serve(ex: Exchange) -> None:
            relay, meter = self.relay, ex.meter
            req = ChatRequest(request_to_openai(parse_json_object(ex.raw)))
            meter.model = req.model
            if req.stream:
                ex.stream = await relay.stream(ex.key, req, meter)
                await _stream(send, ex.stream, req.model, [*headers, *ex.stream.headers])
                return
            result, limit_headers = await relay.complete(ex.key, req, meter)
            await relay.settle(meter)
            ex.watch.done = True
            msg = completion_to_message(orjson.loads(result.body))
            await send_bytes(send, 200, orjson.dumps(msg), [JSON_CT, *headers, *limit_headers])

        await run_exchange(self.relay, scope, receive, send, rid, headers, max_body=self.max_body,
                           auth=b"Bearer " + api_key if api_key else header(scope, b"authorization"),
                           inflight=self.inflight, serve=serve, send_error=_send_error, stream_error=error_event)


async def _stream(send: Send, rs: RelayStream, model: str, headers: Headers) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + headers})
    writer = MessagesStreamWriter(model=model)
    try:
        async for chunk in rs.chunks():
            out = writer.feed(chunk)
            if out:
                await send({"type": "http.response.body", "body": out, "more_body": True})
        tail = writer.finish()
    except SluiceError as exc:
        tail = error_event(exc)
    await send({"type": "http.response.body", "body": tail, "more_body": False})


async def _send_error(send: Send, exc: SluiceError, headers: Headers) -> None:
    await send_bytes(send, exc.status, error_body(exc), [JSON_CT, *exc.headers(), *headers])
