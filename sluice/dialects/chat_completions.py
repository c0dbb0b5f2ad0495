"""Chat completions as a front door's stream: canonical (OpenAI-shaped) chunks -> the client's SSE events.

Unchanged chunks keep their bytes (only framed); `usage` is removed unless the client asked for it; an
estimated usage chunk stands in when it asked and the upstream reported none; `[DONE]` ends a good
stream, OpenAI's error envelope a failed one.
"""

from __future__ import annotations

from typing import Any

import orjson

from sluice.errors import SluiceError
from sluice.sse import DONE_FRAME, encode_data


class ChatStreamWriter:
    __slots__ = ("_include_usage", "_last")

    def __init__(self, include_usage: bool) -> None:
        self._include_usage = include_usage
        self._last: dict[str, Any] | None = None  # the last parsed chunk: the estimated usage chunk's head

    def feed(self, payload: bytes, parsed: dict[str, Any] | None, *, has_usage: bool,
             usage_only: bool) -> bytes | None:
        """One chunk's event, or None when nothing of it is for the client (a usage chunk it did not ask for)."""
        if has_usage:
            if not self._include_usage:
                if usage_only:
                    return None
                payload = _without_usage(parsed, payload)
        elif parsed is not None:
            self._last = parsed
        return encode_data(payload)

    def wants_estimate(self, reported: bool) -> bool:
        return self._include_usage and not reported

    def estimated_usage(self, request_id: str, created: float, model: str | None, prompt: int | None,
                        completion: int | None) -> bytes:
        """The usage chunk the client asked for when the upstream sent none: what the ledger records."""
        head = self._last or {}
        chunk = {"id": head.get("id", "chatcmpl-" + request_id),
                 "object": head.get("object", "chat.completion.chunk"),
                 "created": head.get("created", int(created)),
                 "model": head.get("model", model), "choices": [],
                 "usage": {"prompt_tokens": prompt or 0, "completion_tokens": completion or 0,
                           "total_tokens": (prompt or 0) + (completion or 0)}}
        return encode_data(orjson.dumps(chunk))

    @staticmethod
    def done() -> bytes:
        return DONE_FRAME


def error_event(exc: SluiceError) -> bytes:
    """The last event of a stream that failed after its 200: OpenAI's error envelope, no `[DONE]` after it."""
    return encode_data(exc.to_body())


def _without_usage(parsed: dict[str, Any] | None, payload: bytes) -> bytes:
    obj = dict(parsed) if parsed is not None else orjson.loads(payload)
    obj.pop("usage", None)
    return orjson.dumps(obj)
