"""OpenAI-compatible upstreams (OpenAI, DeepSeek, vLLM, Ollama, ...): bytes pass through, parsed only to meter.

Each streamed event is parsed with orjson (cheaper than any substring check that could tell the same) to see
usage, finish and errors; its text is read only if the stream ends without usage (`schema.chunk`). The
client gets the upstream's bytes: nothing is re-serialised unless it must change.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from sluice.config import ProviderConfig
from sluice.errors import InvalidRequest, SluiceError, UpstreamError, error_for_upstream_status
from sluice.providers.anthropic.passthrough import native_body
from sluice.providers.base import Call, Chunk, Completion
from sluice.providers.openai_responses import ResponsesStream, reply_usage
from sluice.providers.sse_reader import EventReader
from sluice.schema.chunk import delta_text
from sluice.schema.thinking import without_thinking
from sluice.schema.usage import Usage
from sluice.sse import DONE, SSEEvent
from sluice.upstream import Response, Transport, retry_after_seconds


class OpenAICompatProvider:
    endpoints = frozenset({"embeddings", "completions"})  # passed through as they are, besides chat

    def __init__(self, cfg: ProviderConfig, client: Transport) -> None:
        self.name = cfg.name
        self._cfg = cfg
        self._client = client
        base = (cfg.base_url or "").rstrip("/")
        self._urls = {e: f"{base}/{e}" for e in ("chat/completions", *self.endpoints)}
        self._responses_url = base + "/responses"
        # `/v1/responses` requests pass through when the upstream has that API (see NativeProvider)
        self.dialect = "responses" if "responses" in cfg.apis else "chat"
        headers = {"content-type": "application/json", "accept-encoding": "identity"}
        if cfg.api_key:
            headers["authorization"] = f"Bearer {cfg.api_key}"
        headers.update(cfg.headers)
        self._headers = headers
        self._stream_headers = {**headers, "accept": "text/event-stream"}

    def _body(self, call: Call, stream: bool) -> bytes:
        body = dict(call.request.body)
        body["model"] = call.upstream_model
        messages = without_thinking(body.get("messages"))  # Anthropic's signed thinking: no use here
        if messages is not None:
            body["messages"] = messages
        if stream:
            if self._cfg.stream_options:
                opts = body.get("stream_options")
                body["stream_options"] = {**opts, "include_usage": True} if isinstance(opts, dict) else {
                    "include_usage": True}
            else:
                body.pop("stream_options", None)
        else:
            body.pop("stream_options", None)  # OpenAI rejects it without stream
            body.pop("stream", None)
        return orjson.dumps(body)

    async def complete(self, call: Call) -> Completion:
        resp = await self._client.request("POST", self._urls[call.request.endpoint],
                                          headers=_keyed(self._headers, call),
                                          body=self._body(call, False), timeouts=call.timeouts)
        if resp.status != 200:
            raise await _error_from(resp)
        if "text/event-stream" in resp.headers.get("content-type", ""):
            resp.close()  # an event stream can run forever: refuse it rather than buffer it
            raise UpstreamError("the upstream answered a plain request with an event stream")
        raw = await resp.read()
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamError("the upstream returned a reply that is not JSON") from None
        if not isinstance(doc, dict):
            raise UpstreamError("the upstream returned a reply that is not a JSON object")
        if doc.get("error"):
            raise _error_from_body(doc, 502, None)
        return Completion(raw, Usage.from_openai(doc.get("usage")), _reply_text(doc), doc.get("model"))

    async def stream(self, call: Call) -> OpenAIStream:
        resp = await self._client.request("POST", self._urls[call.request.endpoint],
                                          headers=_keyed(self._stream_headers, call),
                                          body=self._body(call, True), timeouts=call.timeouts)
        if resp.status != 200:
            raise await _error_from(resp)
        ctype = resp.headers.get("content-type", "")
        if "text/event-stream" not in ctype:
            # some servers answer a stream request with plain JSON (an error, or no streaming support)
            raw = await resp.read()
            try:
                doc = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise UpstreamError("the upstream answered a stream request without an event stream") from None
            if isinstance(doc, dict) and doc.get("error"):
                raise _error_from_body(doc, 502, None)
            raise UpstreamError("the upstream answered a stream request without an event stream")
        return OpenAIStream(resp)

    async def complete_native(self, call: Call) -> Completion:
        assert call.native is not None
        resp = await self._client.request("POST", self._responses_url, headers=_keyed(self._headers, call),
                                          body=native_body(call.native, call.upstream_model), timeouts=call.timeouts)
        if resp.status != 200:
            raise await _error_from(resp)
        raw = await resp.read()
        usage, model = reply_usage(raw)
        return Completion(raw, usage, model=model, native=True)

    async def stream_native(self, call: Call) -> ResponsesStream:
        assert call.native is not None
        resp = await self._client.request("POST", self._responses_url, headers=_keyed(self._stream_headers, call),
                                          body=native_body(call.native, call.upstream_model), timeouts=call.timeouts)
        if resp.status != 200:
            raise await _error_from(resp)
        if "text/event-stream" not in resp.headers.get("content-type", ""):
            resp.close()
            raise UpstreamError("the upstream answered a stream request without an event stream")
        return ResponsesStream(resp)

    async def count_tokens(self, call: Call) -> bytes:
        raise InvalidRequest("token counting is an Anthropic API; this upstream does not offer it")

    async def aclose(self) -> None:
        return None


def _keyed(headers: dict[str, str], call: Call) -> dict[str, str]:
    return headers if call.api_key is None else {**headers, "authorization": f"Bearer {call.api_key}"}


class OpenAIStream:
    """Frames upstream SSE into events; yields each event's payload bytes untouched."""

    def __init__(self, resp: Response) -> None:
        self._resp = resp

    def __aiter__(self) -> AsyncIterator[Chunk]:
        return self._events()

    async def _events(self) -> AsyncIterator[Chunk]:
        finished = False
        async for events in EventReader(self._resp).batches():
            chunks, end = _read(events)
            for chunk in chunks:
                finished = finished or chunk.finish
                yield chunk
            if end is not None:
                if isinstance(end, UpstreamError):
                    raise end
                return
        if not finished:
            raise UpstreamError("the upstream closed the stream before it finished (no finish_reason)")

    async def aclose(self) -> None:
        self._resp.close()


def _read(events: list[SSEEvent]) -> tuple[list[Chunk], UpstreamError | bool | None]:
    """The chunks of one upstream read, each but the last marked `more`, and how the stream ends in it:
    True at `[DONE]`, the error an event reported (after the chunks before it), or None (it goes on).
    Each chunk is parsed for its usage, finish and errors; its text is left unread (`text` None)."""
    chunks: list[Chunk] = []
    end: UpstreamError | bool | None = None
    for ev in events:
        payload = ev.data
        if payload[:6] == DONE:
            end = True
            break
        if not payload:
            continue
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            end = UpstreamError("the upstream sent an event that is not JSON")
            break
        if not isinstance(obj, dict):
            end = UpstreamError("the upstream sent an event that is not a JSON object")
            break
        if obj.get("error"):
            end = _error_from_body(obj, 502, None)
            break
        if chunks:
            chunks[-1].more = True
        chunks.append(_chunk(payload, obj))
    return chunks, end


def _chunk(payload: bytes, obj: dict[str, Any]) -> Chunk:
    choices = obj.get("choices")
    finish = False
    if choices:
        for c in choices:
            if isinstance(c, dict) and c.get("finish_reason"):
                finish = True
    if not obj.get("usage"):  # nearly every chunk: `"usage":null` or none at all
        return Chunk(payload, parsed=obj, finish=finish, text=None)
    usage = Usage.from_openai(obj["usage"])
    return Chunk(payload, parsed=obj, usage=usage, usage_only=usage is not None and not choices, finish=finish,
                 text=None)


def _reply_text(doc: dict[str, Any]) -> str:
    out = ""
    for c in doc.get("choices") or ():
        m = c.get("message") if isinstance(c, dict) else None
        if isinstance(m, dict):
            out += delta_text(m)
        elif isinstance(c, dict) and isinstance(c.get("text"), str):  # a legacy completion
            out += c["text"]
    return out


async def _error_from(resp: Response) -> SluiceError:
    raw = await resp.read_error_body()
    retry_after = retry_after_seconds(resp.headers)
    try:
        doc = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict):
        return _error_from_body(doc, resp.status, retry_after)
    text = raw[:300].decode("utf-8", "replace").strip() or f"HTTP {resp.status}"
    return error_for_upstream_status(resp.status, f"upstream error: {text}", retry_after=retry_after)


def _error_from_body(doc: dict[str, Any], status: int, retry_after: float | None) -> UpstreamError:
    err = doc.get("error")
    if isinstance(err, dict):
        msg = str(err.get("message") or "the upstream reported an error")
        code = err.get("code")
        param = err.get("param")
        etype = err.get("type")
        # vLLM sends an integer code carrying the HTTP status
        if isinstance(code, int) and status >= 500 and 400 <= code < 600 and code != status:
            status = code
        return error_for_upstream_status(
            status, msg, type=etype if isinstance(etype, str) and status < 500 else None,
            code=str(code) if code is not None and not isinstance(code, bool) else None,
            param=param if isinstance(param, str) else None, retry_after=retry_after)
    msg = err if isinstance(err, str) else str(doc.get("message") or doc.get("detail") or "upstream error")
    return error_for_upstream_status(status, msg[:500], retry_after=retry_after)
