"""AnthropicProvider: the Provider protocol over the Anthropic Messages API (`POST {base_url}/messages`),
translating OpenAI-shaped calls, and forwarding Anthropic-shaped ones (`call.native`) as they came."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Iterator

import orjson

from sluice.config import ProviderConfig
from sluice.dialects.anthropic_messages import wire
from sluice.errors import UpstreamError
from sluice.providers.anthropic.passthrough import (
    EventStream,
    PassthroughStream,
    native_body,
    native_headers,
    parse_event,
    reply_usage,
)
from sluice.providers.anthropic.stream import StreamTranslator
from sluice.providers.anthropic.translate import (
    error_from_response,
    from_message,
    to_messages_request,
    usage_from,
)
from sluice.providers.base import Call, Chunk, Completion, NativeBody, one_read
from sluice.providers.sse_reader import EventReader
from sluice.sse import SSEEvent
from sluice.upstream import Response, Transport


class AnthropicProvider:
    """Translates each call to a Messages request and the reply (plain or SSE) back to OpenAI chat;
    a native call (from the Anthropic front door) is a pass-through instead."""

    dialect = "anthropic"

    def __init__(self, cfg: ProviderConfig, client: Transport) -> None:
        self.name = cfg.name
        self._cfg = cfg
        self._client = client
        self._url = (cfg.base_url or "https://api.anthropic.com/v1").rstrip("/") + "/messages"
        headers = {"anthropic-version": wire.API_VERSION, "content-type": "application/json"}
        if cfg.api_key:
            headers["x-api-key"] = cfg.api_key
        headers.update(cfg.headers)
        self._headers = headers

    async def complete(self, call: Call) -> Completion:
        resp = await self._send(call, stream=False)
        try:
            raw = await resp.read()
        finally:
            resp.close()
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamError("the upstream reply is not valid JSON") from None
        if not isinstance(msg, dict) or msg.get("type") == "error":
            raise error_from_response(502, raw, resp.headers)
        body = from_message(msg, created=int(time.time()), model=call.upstream_model)
        message = body["choices"][0]["message"]
        return Completion(orjson.dumps(body), usage_from(msg.get("usage")), text=message.get("content") or "",
                          model=body["model"])

    async def stream(self, call: Call) -> AnthropicChunkStream:
        resp = await self._send(call, stream=True, accept="text/event-stream")
        translator = StreamTranslator(created=int(time.time()), model=call.upstream_model)
        return AnthropicChunkStream(resp, translator)

    async def complete_native(self, call: Call) -> Completion:
        resp = await self._send_native(call, self._url, "application/json")
        try:
            raw = await resp.read()
        finally:
            resp.close()
        usage, model = reply_usage(raw)
        return Completion(raw, usage_from(usage), model=model, native=True)

    async def stream_native(self, call: Call) -> PassthroughStream:
        return PassthroughStream(await self._send_native(call, self._url, "text/event-stream"))

    async def count_tokens(self, call: Call) -> bytes:
        resp = await self._send_native(call, self._url + "/count_tokens", "application/json")
        try:
            return await resp.read(1 << 20)
        finally:
            resp.close()

    async def aclose(self) -> None:
        """The client pool belongs to the lifespan, not to this provider: nothing to release."""

    async def _send_native(self, call: Call, url: str, accept: str) -> Response:
        native = call.native
        assert isinstance(native, NativeBody)
        headers = native_headers({"accept": accept, **self._headers}, native, self._cfg.strip_betas)
        headers.update(self._cfg.headers)  # what the operator pinned (a version, betas) wins over the client
        return await self._post(call, url, headers, native_body(native, call.upstream_model))

    async def _send(self, call: Call, *, stream: bool, accept: str = "application/json") -> Response:
        body = to_messages_request(call.request.body, upstream_model=call.upstream_model,
                                   max_tokens_default=self._cfg.max_tokens_default, stream=stream)
        return await self._post(call, self._url, {"accept": accept, **self._headers}, orjson.dumps(body))

    async def _post(self, call: Call, url: str, headers: dict[str, str], body: bytes) -> Response:
        if call.api_key is not None:   # a key from the provider's pool replaces the configured one
            headers = {**headers, "x-api-key": call.api_key}
        resp = await self._client.request("POST", url, headers=headers, body=body, timeouts=call.timeouts)
        if resp.status != 200:
            try:
                err_body = await resp.read_error_body()
            finally:
                resp.close()
            raise error_from_response(resp.status, err_body, resp.headers)
        return resp


class AnthropicChunkStream(EventStream):
    """A translated reply: Anthropic events in, OpenAI chunks out through the stream state machine."""

    def __init__(self, resp: Response, translator: StreamTranslator) -> None:
        super().__init__(resp)
        self._translator = translator

    async def _iterate(self) -> AsyncGenerator[Chunk, None]:
        sm = self._translator
        try:
            async for events in EventReader(self._resp).batches():
                chunks, error = one_read(_translated(sm, events))
                for chunk in chunks:
                    yield chunk
                if error is not None:
                    raise error
                if sm.done:
                    return
            sm.eof()
        finally:
            self._resp.close()


def _translated(sm: StreamTranslator, events: list[SSEEvent]) -> Iterator[Chunk]:
    """The chat chunks of one read's events, up to `message_stop`."""
    for event in events:
        yield from sm.feed(event.event, parse_event(event.data))
        if sm.done:
            return
