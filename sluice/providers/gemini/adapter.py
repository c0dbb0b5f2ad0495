"""GeminiProvider: the Provider protocol over Gemini's REST API (plain JSON and `alt=sse` streams).

I/O lives here and only here; the shapes are translated by `translate`, `response` and `stream`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson

from sluice.config import ProviderConfig
from sluice.errors import UpstreamError
from sluice.providers.base import Call, Chunk, ChunkStream, Completion, Provider, one_read
from sluice.providers.gemini import wire
from sluice.providers.gemini.embeddings import from_batch_embed, to_batch_embed
from sluice.providers.gemini.response import (
    completion_text,
    error_from_body,
    to_openai_completion,
    usage_from,
)
from sluice.providers.gemini.stream import GeminiStreamState
from sluice.providers.gemini.translate import to_gemini_request
from sluice.providers.sse_reader import EventReader
from sluice.upstream import Response, Transport


class GeminiProvider:
    """One configured Gemini endpoint; `base_url` like `https://generativelanguage.googleapis.com/v1beta`."""

    endpoints = frozenset({"embeddings"})  # besides chat: OpenAI embeddings over batchEmbedContents

    def __init__(self, cfg: ProviderConfig, client: Transport) -> None:
        if not cfg.base_url:
            raise ValueError(f"provider {cfg.name!r}: base_url is required for Gemini")
        self.name = cfg.name
        self._base = cfg.base_url.rstrip("/")
        self._client = client
        headers = {"content-type": "application/json"}
        if cfg.api_key:
            headers[wire.API_KEY_HEADER] = cfg.api_key
        headers.update(cfg.headers)
        self._headers = headers

    def _url(self, model: str, method: str) -> str:
        model = model.removeprefix("models/")
        return f"{self._base}/models/{quote(model, safe='-._~')}{method}"

    async def _send(self, call: Call, method: str, accept: str, body: bytes | None = None) -> Response:
        body = body if body is not None else orjson.dumps(to_gemini_request(call.request.body))
        headers = {**self._headers, "accept": accept}
        if call.api_key is not None:
            headers[wire.API_KEY_HEADER] = call.api_key
        resp = await self._client.request("POST", self._url(call.upstream_model, method), headers=headers, body=body,
                                          timeouts=call.timeouts)
        if resp.status != 200:
            raw = await resp.read_error_body()
            raise error_from_body(raw, status=resp.status, headers=resp.headers)
        return resp

    async def _json(self, call: Call, method: str, body: bytes | None = None) -> dict[str, Any]:
        resp = await self._send(call, method, "application/json", body)
        try:
            raw = await resp.read()
        finally:
            resp.close()
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamError("Gemini sent a reply that is not valid JSON") from None
        if not isinstance(data, dict):
            raise UpstreamError("Gemini sent a reply that is not a JSON object")
        return data

    async def complete(self, call: Call) -> Completion:
        if call.request.endpoint == "embeddings":
            return await self._embed(call)
        data = await self._json(call, wire.GENERATE)
        body = to_openai_completion(data, upstream_model=call.upstream_model, created=int(time.time()))
        return Completion(orjson.dumps(body), usage_from(data.get("usageMetadata")),
                          text=completion_text(body), model=body["model"])

    async def _embed(self, call: Call) -> Completion:
        """Gemini reports no token usage for embeddings: the relay estimates it from the input."""
        req = to_batch_embed(call.request.body, call.upstream_model)
        data = await self._json(call, wire.BATCH_EMBED, orjson.dumps(req))
        doc = from_batch_embed(data, call.request.body, call.upstream_model, len(req["requests"]))
        return Completion(orjson.dumps(doc), None, model=call.upstream_model)

    async def stream(self, call: Call) -> GeminiChunkStream:
        resp = await self._send(call, wire.STREAM_GENERATE, "text/event-stream")
        return GeminiChunkStream(resp, GeminiStreamState(upstream_model=call.upstream_model))

    async def aclose(self) -> None:
        """The client pool is shared and belongs to the lifespan; nothing of our own to release."""


class GeminiChunkStream:
    """The OpenAI chunks of one upstream stream. Close it with `aclose()` in a `finally`."""

    def __init__(self, resp: Response, state: GeminiStreamState) -> None:
        self._resp = resp
        self._state = state
        self._gen: AsyncGenerator[Chunk, None] | None = None

    @property
    def state(self) -> GeminiStreamState:
        return self._state

    def __aiter__(self) -> AsyncIterator[Chunk]:
        if self._gen is None:
            self._gen = self._run()
        return self._gen

    async def _run(self) -> AsyncGenerator[Chunk, None]:
        reader = EventReader(self._resp)
        try:
            state = self._state
            async for events in reader.batches():
                chunks, error = one_read(c for event in events for c in state.feed(_parse(event.data)))
                for chunk in chunks:
                    yield chunk
                if error is not None:
                    raise error
            for event in reader.finish():  # an event whose blank line never came; JSON decides
                for chunk in self._state.feed(_parse(event.data)):
                    yield chunk
            for chunk in self._state.end():
                yield chunk
        finally:
            self._resp.close()

    async def aclose(self) -> None:
        try:
            if self._gen is not None:
                await self._gen.aclose()
        finally:
            self._resp.close()


def _parse(data: bytes) -> object:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise UpstreamError("Gemini sent a stream event that is not valid JSON") from None


if TYPE_CHECKING:
    def _conforms(p: GeminiProvider, s: GeminiChunkStream) -> tuple[Provider, ChunkStream]:
        return p, s  # mypy proves both satisfy the protocols
