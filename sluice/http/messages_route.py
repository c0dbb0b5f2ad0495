"""Inbound `POST /v1/messages` in Anthropic's format, served from any upstream through the same relay.

The Anthropic SDK authenticates with `x-api-key` (a Sluice key works there, or as a Bearer token);
errors use Anthropic's envelope, streams Anthropic's named events.
"""

from __future__ import annotations

import asyncio
import logging

import orjson

from sluice.errors import SluiceError
from sluice.http.asgi import JSON_CT, ClientGone, Headers, Receive, Scope, Send, header, read_body, send_bytes
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

log = logging.getLogger("sluice.http")


class MessagesRoute:
    def __init__(self, relay: Relay, *, max_body: int) -> None:
        self.relay = relay
        self.max_body = max_body

    async def handle(self, scope: Scope, receive: Receive, send: Send, rid: str, headers: Headers) -> None:
        try:
            raw = await read_body(scope, receive, self.max_body)
            api_key = header(scope, b"x-api-key")
            auth = b"Bearer " + api_key if api_key else header(scope, b"authorization")
            key = await self.relay.auth.authenticate(auth)
        except ClientGone:
            return
        except SluiceError as exc:
            await _send_error(send, exc, headers)
            return
        meter = self.relay.meter(rid)
        meter.key_id = key.id
        watch = DisconnectWatch(receive)
        rs: RelayStream | None = None
        try:
            req = ChatRequest(request_to_openai(parse_json_object(raw)))
            meter.model = req.model
            if req.stream:
                rs = await self.relay.stream(key, req, meter)
                await _stream(send, rs, req.model, [*headers, *rs.headers])
            else:
                result, limit_headers = await self.relay.complete(key, req, meter)
                await self.relay.settle(meter)
                watch.done = True
                msg = completion_to_message(orjson.loads(result.body))
                await send_bytes(send, 200, orjson.dumps(msg), [JSON_CT, *headers, *limit_headers])
        except asyncio.CancelledError:
            if not watch.absorb():
                raise
            meter.disconnected = True
            if meter.status == 0:
                meter.status = 499
        except SluiceError as exc:
            meter.error_code = exc.code or exc.type
            if meter.status == 0:
                meter.status = exc.status
                await _send_error(send, exc, headers)
        except Exception:
            log.exception("unexpected error in /v1/messages %s", rid)
            if meter.status == 0:
                meter.status = 500
                await _send_error(send, SluiceError("The server had an error processing your request."), headers)
        finally:
            watch.stop()
            if rs is not None:
                await asyncio.shield(rs.close(disconnected=meter.disconnected))
            else:
                await asyncio.shield(self.relay.settle(meter, durable=False))


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
