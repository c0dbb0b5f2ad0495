"""Inbound `POST /v1/messages` and `POST /v1/messages/count_tokens` in Anthropic's format, served from any
upstream through the same relay; an Anthropic upstream gets the request as sent (a pass-through).

The Anthropic SDK authenticates with `x-api-key` (a Sluice key works there, or as a Bearer token);
errors use Anthropic's envelope, streams Anthropic's named events and `ping` keep-alives.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson

from sluice.errors import SluiceError
from sluice.http.asgi import (
    JSON_CT,
    ClientGone,
    Headers,
    Receive,
    Scope,
    Send,
    credentials,
    header,
    read_body,
    send_bytes,
)
from sluice.http.exchange import Exchange, run_exchange
from sluice.http.streaming import DisconnectWatch, send_frames
from sluice.providers.anthropic.checks import check_messages_request
from sluice.providers.anthropic.inbound import (
    PING_FRAME,
    MessagesStreamWriter,
    completion_to_message,
    error_body,
    error_event,
)
from sluice.providers.anthropic.inbound_request import translate_request
from sluice.providers.base import NativeBody
from sluice.relay import Relay, RelayStream
from sluice.schema.chat import ChatRequest, parse_json_object

log = logging.getLogger("sluice.http")

# request headers an Anthropic upstream should see as the client sent them
_FORWARDED = (b"anthropic-version", b"anthropic-beta")


class MessagesRoute:
    def __init__(self, relay: Relay, *, max_body: int, heartbeat: float, inflight: set[DisconnectWatch]) -> None:
        self.relay = relay
        self.inflight = inflight
        self.max_body = max_body
        self.heartbeat = heartbeat

    async def handle(self, scope: Scope, receive: Receive, send: Send, rid: str, headers: Headers) -> None:
        headers = [*headers, (b"request-id", rid.encode())]

        async def serve(ex: Exchange) -> None:
            relay, meter = self.relay, ex.meter
            req, native = _requests(scope, ex.raw, parse_json_object(ex.raw))
            meter.model = req.model
            if req.stream:
                ex.stream = rs = await relay.stream(ex.key, req, meter, native)
                frames = rs.passthrough() if rs.native else _translated(rs, req.model)
                await send_frames(send, _ended(frames), [*headers, *rs.headers], self.heartbeat, PING_FRAME)
                return
            result, limit_headers = await relay.complete(ex.key, req, meter, native)
            await relay.settle(meter)
            ex.watch.done = True
            body = result.body if result.native else orjson.dumps(completion_to_message(orjson.loads(result.body)))
            await send_bytes(send, 200, body, [JSON_CT, *headers, *limit_headers])

        await run_exchange(self.relay, scope, receive, send, rid, headers, max_body=self.max_body,
                           auth=credentials(scope), inflight=self.inflight, serve=serve, send_error=_send_error,
                           stream_error=error_event)

    async def count_tokens(self, scope: Scope, receive: Receive, send: Send, rid: str, headers: Headers) -> None:
        """Authenticated, never billed or recorded: Claude Code calls it dozens of times at start."""
        headers = [*headers, (b"request-id", rid.encode())]
        try:
            raw = await read_body(scope, receive, self.max_body)
            key = await self.relay.auth.authenticate(credentials(scope))
            body = parse_json_object(raw)
            check_messages_request(body, count_only=True)
            req, native = _requests(scope, raw, {**body, "max_tokens": 1})
            out, estimated = await self.relay.count_tokens(key, req, native, rid)
        except ClientGone:
            return
        except SluiceError as exc:
            await _send_error(send, exc, headers)
            return
        except Exception:
            log.exception("unexpected error in count_tokens %s", rid)
            await _send_error(send, SluiceError("The server had an error processing your request."), headers)
            return
        source = b"estimated" if estimated else b"upstream"
        await send_bytes(send, 200, out, [JSON_CT, *headers, (b"x-sluice-token-count", source)])


def _requests(scope: Scope, raw: bytes, body: dict[str, Any]) -> tuple[ChatRequest, NativeBody]:
    """The canonical request (admission, routing, translated upstreams) and the body as sent (pass-through)."""
    translated, unservable = translate_request(body)
    req = ChatRequest(translated)
    return req, NativeBody("anthropic", raw, req.model, _protocol_headers(scope), unservable)


def _protocol_headers(scope: Scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in _FORWARDED:
        value = header(scope, name)
        if value is not None:
            out[name.decode()] = value.decode("latin-1")
    return out


async def _translated(rs: RelayStream, model: str) -> AsyncIterator[bytes]:
    writer = MessagesStreamWriter(model=model)
    async for chunk in rs.chunks():
        out = writer.feed(chunk)
        if out:
            yield out
    yield writer.finish()


async def _ended(frames: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The frames, and after a failure (already settled by the relay stream) Anthropic's `error` event."""
    try:
        async for frame in frames:
            yield frame
    except SluiceError as exc:
        yield error_event(exc)


async def _send_error(send: Send, exc: SluiceError, headers: Headers) -> None:
    await send_bytes(send, exc.status, error_body(exc), [JSON_CT, *exc.headers(), *headers])
