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

from sluice.dialects.anthropic_messages.checks import check_messages_request
from sluice.dialects.anthropic_messages.reply import (
    PING_FRAME,
    MessagesStreamWriter,
    completion_to_message,
    error_event,
)
from sluice.dialects.anthropic_messages.request import translate_request
from sluice.errors import SluiceError
from sluice.http.asgi import (
    JSON_CT,
    Headers,
    Receive,
    Scope,
    Send,
    credentials,
    header,
    send_bytes,
)
from sluice.http.doors import ANTHROPIC
from sluice.http.lifecycle import Lifecycle
from sluice.http.streaming import send_frames
from sluice.providers.base import NativeBody
from sluice.relay import Relay, RelayStream
from sluice.schema.chat import ChatRequest, parse_json_object

log = logging.getLogger("sluice.http")

# request headers an Anthropic upstream should see as the client sent them
_FORWARDED = (b"anthropic-version", b"anthropic-beta")


class MessagesRoute:
    def __init__(self, life: Lifecycle, *, heartbeat: float) -> None:
        self.life = life
        self.relay: Relay = life.relay
        self.heartbeat = heartbeat

    async def handle(self, scope: Scope, receive: Receive, send: Send, rid: str, headers: Headers) -> None:
        headers = [*headers, (b"request-id", rid.encode())]
        async with self.life.scope(scope, receive, send, rid, headers, ANTHROPIC, auth=credentials(scope)) as req:
            creq, native = _requests(scope, req.raw, parse_json_object(req.raw))
            if creq.stream:
                rs = await req.stream(creq, native)
                frames = rs.passthrough() if rs.native else _translated(rs, creq.model)
                del creq, native  # a held stream keeps none of the body (decisions.md, "What a held stream keeps")
                await send_frames(send, _ended(frames), [*headers, *rs.headers], self.heartbeat, PING_FRAME)
                return
            result, limit_headers = await req.complete(creq, native)
            await req.settle()
            body = result.body if result.native else orjson.dumps(completion_to_message(orjson.loads(result.body)))
            await send_bytes(send, 200, body, [JSON_CT, *headers, *limit_headers])

    async def count_tokens(self, scope: Scope, receive: Receive, send: Send, rid: str, headers: Headers) -> None:
        """Authenticated, never billed or recorded: Claude Code calls it dozens of times at start."""
        headers = [*headers, (b"request-id", rid.encode())]
        async with self.life.scope(scope, receive, send, rid, headers, ANTHROPIC, auth=credentials(scope),
                                   metered=False) as req:
            body = parse_json_object(req.raw)
            check_messages_request(body, count_only=True)
            creq, native = _requests(scope, req.raw, {**body, "max_tokens": 1})
            out, estimated = await self.relay.count_tokens(req.key, creq, native, rid)
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
    async for piece in rs.translated(writer.feed):
        yield piece
    yield writer.finish()


async def _ended(frames: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The frames, and after a failure (already settled by the relay stream) Anthropic's `error` event."""
    try:
        async for frame in frames:
            yield frame
    except SluiceError as exc:
        yield error_event(exc)
