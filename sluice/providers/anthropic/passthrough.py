"""Anthropic in, Anthropic out: the request body forwarded with only `model` rewritten, the reply's events
forwarded unchanged (thinking signatures and cache behaviour survive), usage read as the events pass.

Only `message_start`, `message_delta` and `error` events are parsed; content deltas are re-framed from
their data bytes without being decoded.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any

import orjson

from sluice.dialects.anthropic_messages import wire
from sluice.errors import UpstreamError
from sluice.providers.anthropic.translate import error_from_event, usage_from
from sluice.providers.base import Chunk, NativeBody, one_read
from sluice.providers.sse_reader import EventReader
from sluice.sse import SSEEvent, encode_event
from sluice.upstream import Response

# a JSON string (unrolled loop: fast in `re`), or a bracket that changes the depth
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[{}\[\]]')
_COLON = re.compile(rb"\s*:\s*")
_PARSED = frozenset((wire.MESSAGE_START, wire.MESSAGE_DELTA, wire.ERROR))


def native_body(native: NativeBody, upstream_model: str) -> bytes:
    """The client's body for the upstream: as sent when the model names match, else `model` rewritten."""
    if native.model == upstream_model:
        return native.raw
    return replace_model(native.raw, upstream_model)


def replace_model(raw: bytes, model: str) -> bytes:
    """Rewrite the top-level `"model"` string in place, leaving every other byte as it was."""
    depth = 0
    for m in _TOKEN.finditer(raw):
        first = m.group()[0]
        if first == 0x22:  # a string: a key when a colon follows
            if depth == 1 and m.group() == b'"model"' and (colon := _COLON.match(raw, m.end())):
                value = _TOKEN.match(raw, colon.end())
                if value is not None and value.group()[0] == 0x22:
                    return raw[:value.start()] + orjson.dumps(model) + raw[value.end():]
        elif first in b"{[":
            depth += 1
        else:
            depth -= 1
    # an escaped key spelling (`"\u006dodel"`): re-serialise as the last resort
    body = orjson.loads(raw)
    body["model"] = model
    return orjson.dumps(body)


def native_headers(base: Mapping[str, str], native: NativeBody, strip_betas: Iterable[str]) -> dict[str, str]:
    """The provider's headers plus the client's `anthropic-version` and its betas minus the stripped ones."""
    headers = dict(base)
    version = native.headers.get("anthropic-version")
    if version:
        headers["anthropic-version"] = version
    betas = native.headers.get("anthropic-beta")
    if betas:
        drop = set(strip_betas)
        kept = [b for b in (x.strip() for x in betas.split(",")) if b and b not in drop]
        if kept:
            headers["anthropic-beta"] = ",".join(kept)
    return headers


def reply_usage(raw: bytes) -> tuple[dict[str, Any], str | None]:
    """A plain Message reply's usage object and model (UpstreamError when it is no Message)."""
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamError("the upstream reply is not valid JSON") from None
    if not isinstance(msg, dict) or msg.get("type") == "error":
        raise UpstreamError("the upstream reply is not a Message")
    usage = msg.get("usage")
    model = msg.get("model")
    return (usage if isinstance(usage, dict) else {}), (model if isinstance(model, str) else None)


class EventStream:
    """A ChunkStream over one Anthropic SSE reply (subclasses give `_iterate`); the upstream response is
    closed in `finally`, also when the client goes away first."""

    def __init__(self, resp: Response) -> None:
        self._resp = resp
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

    def _iterate(self) -> AsyncGenerator[Chunk, None]:
        raise NotImplementedError

    async def _forward(self, made: Callable[[list[SSEEvent]], Iterator[Chunk]], unfinished: str
                       ) -> AsyncGenerator[Chunk, None]:
        """The chunks `made` of each read's events (marked by `one_read`), until one that finishes the
        stream; UpstreamError(`unfinished`) when the body ends before it."""
        try:
            async for events in EventReader(self._resp).batches():  # bounded; idle counts whole events
                chunks, error = one_read(made(events))
                for chunk in chunks:
                    yield chunk
                if error is not None:
                    raise error
                if chunks and chunks[-1].finish:
                    return
            raise UpstreamError(unfinished)
        finally:
            self._resp.close()


class PassthroughStream(EventStream):
    """A forwarded reply: each chunk's payload is a whole frame, as the upstream sent it."""

    def _iterate(self) -> AsyncGenerator[Chunk, None]:
        usage: dict[str, Any] = {}
        return self._forward(lambda events: _forwarded(events, usage),
                             "the upstream closed the stream before message_stop")


def _forwarded(events: list[SSEEvent], usage: dict[str, Any]) -> Iterator[Chunk]:
    """One read's events as frames, up to `message_stop`, the usage folded in as it passes."""
    for event in events:
        name = event.event or "message"
        frame = encode_event(name, event.data)
        if name not in _PARSED:
            yield Chunk(frame, finish=name == wire.MESSAGE_STOP)
            if name == wire.MESSAGE_STOP:
                return
            continue
        yield Chunk(frame, usage=_event_usage(name, parse_event(event.data), usage))


def _event_usage(name: str, data: dict[str, Any], usage: dict[str, Any]) -> Any:
    """Fold an event's usage into the running figures; message_delta's are cumulative and win."""
    if name == wire.ERROR:
        raise error_from_event(data)
    if name == wire.MESSAGE_START:
        msg = data.get("message")
        found = msg.get("usage") if isinstance(msg, dict) else None
    else:
        found = data.get("usage")
    if not isinstance(found, dict):
        return None
    usage.update({k: v for k, v in found.items() if v is not None})
    return usage_from(usage)


def parse_event(data: bytes) -> dict[str, Any]:
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise UpstreamError("the upstream sent an event that is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise UpstreamError("the upstream sent an event that is not a JSON object")
    return parsed
