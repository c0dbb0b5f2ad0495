"""AnthropicProvider: the Provider protocol over the Anthropic Messages API (`POST {base_url}/messages`)."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import orjson

from sluice.config import ProviderConfig
from sluice.errors import UpstreamError
from sluice.providers.anthropic import wire
from sluice.providers.anthropic.stream import StreamTranslator
from sluice.providers.anthropic.translate import (
    error_from_response,
    from_message,
    to_messages_request,
    usage_from,
)
from sluice.providers.base import Call, Chunk, Completion
from sluice.sse import SSEDecoder
from sluice.upstream import UpstreamClient, UpstreamResponse


class AnthropicProvider:
    """Translates each call to a Messages request and the reply (plain or SSE) back to OpenAI chat."""

    def __init__(self, cfg: ProviderConfig, client: UpstreamClient) -> None:
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

    async def aclose(self) -> None:
        """The client pool belongs to the lifespan, not to this provider: nothing to release."""

    async def _send(self, call: Call, *, stream: bool, accept: str = "application/json") -> UpstreamResponse:
        body = to_messages_request(call.request.body, upstream_model=call.upstream_model,
                                   max_tokens_default=self._cfg.max_tokens_default, stream=stream)
        headers = {"accept": accept, **self._headers}
        if call.api_key is not None:
            headers["x-api-key"] = call.api_key
        resp = await self._client.request("POST", self._url, headers=headers, body=orjson.dumps(body),
                                          timeouts=call.timeouts)
        if resp.status != 200:
            try:
                err_body = await resp.read_error_body()
            finally:
                resp.close()
            raise error_from_response(resp.status, err_body, resp.headers)
        return resp


class AnthropicChunkStream:
    """The ChunkStream of one Anthropic SSE reply; the upstream response is closed in `finally`."""

    def __init__(self, resp: UpstreamResponse, translator: StreamTranslator) -> None:
        self._resp = resp
        self._translator = translator
        self._gen: AsyncGenerator[Chunk, None] | None = None

    def __aiter__(self) -> AsyncIterator[Chunk]:
        if self._gen is None:
            self._gen = self._iterate()
        return self._gen

    async def aclose(self) -> None:
        gen, self._gen = self._gen, None
        try:
            if gen is not None:
                await gen.aclose()
        finally:
            self._resp.close()

    async def _iterate(self) -> AsyncGenerator[Chunk, None]:
        decoder = SSEDecoder()
        sm = self._translator
        try:
            async for data in self._resp.iter_chunks():
                for event in decoder.feed(data):
                    for chunk in sm.feed(event.event, _parse(event.data)):
                        yield chunk
                    if sm.done:
                        return
            sm.eof()
        finally:
            self._resp.close()


def _parse(data: bytes) -> dict[str, Any]:
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise UpstreamError("the upstream sent an event that is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise UpstreamError("the upstream sent an event that is not a JSON object")
    return parsed
