"""Responses in, Responses out, for OpenAI-compatible upstreams configured with `apis = ["chat", "responses"]`:
the body forwarded with only `model` rewritten, the reply's events forwarded unchanged, usage read from the
terminal `response.completed` / `response.incomplete` as it passes. Other events are framed, never decoded.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator
from typing import Any

import orjson

from sluice.errors import UpstreamError
from sluice.providers.anthropic.passthrough import EventStream, parse_event
from sluice.providers.base import Chunk
from sluice.schema.usage import Usage
from sluice.sse import SSEEvent, encode_event

# events that end a Responses stream; their `response` carries the usage
_TERMINAL = frozenset(("response.completed", "response.incomplete", "response.failed"))


def usage_from(u: Any) -> Usage | None:
    """A Responses `usage` object -> Usage; None when absent or malformed (never zero)."""
    if not isinstance(u, dict):
        return None
    inp, out = u.get("input_tokens"), u.get("output_tokens")
    if not isinstance(inp, int) or not isinstance(out, int) or inp < 0 or out < 0:
        return None
    itd, otd = u.get("input_tokens_details"), u.get("output_tokens_details")
    cached = itd.get("cached_tokens") if isinstance(itd, dict) else None
    reasoning = otd.get("reasoning_tokens") if isinstance(otd, dict) else None
    return Usage(inp, out, min(cached, inp) if isinstance(cached, int) and cached > 0 else 0,
                 reasoning if isinstance(reasoning, int) and reasoning > 0 else 0)


def reply_usage(raw: bytes) -> tuple[Usage | None, str | None]:
    """A plain `response` object's usage and model (UpstreamError when it is not one)."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamError("the upstream reply is not valid JSON") from None
    if not isinstance(doc, dict) or doc.get("object") != "response":
        raise UpstreamError("the upstream reply is not a Responses `response` object")
    model = doc.get("model")
    return usage_from(doc.get("usage")), model if isinstance(model, str) else None


class ResponsesStream(EventStream):
    """A forwarded Responses event stream: each chunk's payload is a whole frame, as the upstream sent it."""

    def _iterate(self) -> AsyncGenerator[Chunk, None]:
        return self._forward(_forwarded, "the upstream closed the stream before response.completed")


def _forwarded(events: list[SSEEvent]) -> Iterator[Chunk]:
    """One read's events as frames, up to the terminal one (whose `response` carries the usage)."""
    for event in events:
        name = event.event or ""
        if not name:  # a server that only puts the type in the data
            name = str(parse_event(event.data).get("type") or "")
        if name == "error":
            raise _stream_error(parse_event(event.data))
        frame = encode_event(name, event.data)
        if name in _TERMINAL:
            response = parse_event(event.data).get("response")
            use = usage_from(response.get("usage")) if isinstance(response, dict) else None
            yield Chunk(frame, usage=use, finish=True)
            return
        yield Chunk(frame)


def _stream_error(doc: dict[str, Any]) -> UpstreamError:
    err = doc.get("error") if isinstance(doc.get("error"), dict) else doc
    message = err.get("message") if isinstance(err, dict) else None
    return UpstreamError(str(message or "the upstream reported an error")[:500])
