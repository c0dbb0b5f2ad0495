"""The inbound `POST /v1/messages` endpoint's reply side: Anthropic in, served from any upstream.

OpenAI chat.completion -> Anthropic Message; OpenAI chunks -> Anthropic SSE bytes (`MessagesStreamWriter`);
sluice errors -> Anthropic error bodies and `error` events. The request side is `request.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from sluice.dialects.anthropic_messages import wire
from sluice.errors import SluiceError
from sluice.sse import encode_event


def _message_id(openai_id: Any) -> str:
    text = str(openai_id or "")
    return text if text.startswith("msg_") else "msg_" + text.removeprefix("chatcmpl-")


def _usage(u: Any) -> dict[str, int]:
    """OpenAI usage -> Anthropic usage: Anthropic's input_tokens excludes cache reads."""
    if not isinstance(u, dict):
        return {"input_tokens": 0, "output_tokens": 0}
    details = u.get("prompt_tokens_details")
    cached = (details.get("cached_tokens") if isinstance(details, dict) else 0) or 0
    return {"input_tokens": max(0, (u.get("prompt_tokens") or 0) - cached),
            "output_tokens": u.get("completion_tokens") or 0,
            "cache_read_input_tokens": cached, "cache_creation_input_tokens": 0}


def _stop_reason(finish: Any) -> str:
    return wire.STOP_REASONS.get(finish, "end_turn") if isinstance(finish, str) else "end_turn"


def completion_to_message(body: Mapping[str, Any]) -> dict[str, Any]:
    """An OpenAI chat.completion -> an Anthropic Message."""
    choice = (body.get("choices") or [{}])[0]
    msg = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if msg.get("reasoning_content"):
        content.append({"type": "thinking", "thinking": msg["reasoning_content"], "signature": ""})
    text = msg.get("content") or msg.get("refusal")
    if text:
        content.append({"type": "text", "text": text})
    for call in msg.get("tool_calls") or []:
        fn = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id"), "name": fn.get("name"),
                        "input": _parse_args(fn.get("arguments"))})
    return {"id": _message_id(body.get("id")), "type": "message", "role": "assistant",
            "model": body.get("model"), "content": content,
            "stop_reason": _stop_reason(choice.get("finish_reason")), "stop_sequence": None,
            "usage": _usage(body.get("usage"))}


def _parse_args(raw: Any) -> Any:
    try:
        parsed = orjson.loads(raw or "{}")
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


# Anthropic's keep-alive event (its clients ignore SSE comments), exactly as Anthropic sends it
PING_FRAME = encode_event(wire.PING, b'{"type": "ping"}')


def error_type(err: SluiceError) -> str:
    return wire.ERROR_TYPES.get(err.status, "api_error" if err.status >= 500 else "invalid_request_error")


def error_body(err: SluiceError) -> bytes:
    """The Anthropic error envelope for a sluice error (sent with `err.status`)."""
    return orjson.dumps({"type": "error", "error": {"type": error_type(err), "message": err.message}})


def error_event(err: SluiceError) -> bytes:
    """An `event: error` frame for a failure after the 200 was sent (the Anthropic SDK raises on it)."""
    return encode_event(wire.ERROR, error_body(err))


class MessagesStreamWriter:
    """OpenAI chunk dicts in (`feed`), Anthropic SSE bytes out; `finish()` once the upstream ended cleanly."""

    def __init__(self, *, model: str) -> None:
        self.model = model
        self._started = False
        self._finished = False
        self._block = -1                 # index of the open block, -1 when none is open
        self._block_kind: str | None = None
        self._next_block = 0
        self._tools: dict[int, int] = {}  # OpenAI tool-call index -> Anthropic block index
        self._stop_reason = "end_turn"
        self._usage: dict[str, int] = {"input_tokens": 0, "output_tokens": 0}

    def feed(self, chunk: Mapping[str, Any]) -> bytes:
        out: list[bytes] = []
        if not self._started:
            out.append(self._start(chunk))
        if isinstance(chunk.get("usage"), dict):
            self._usage = _usage(chunk["usage"])
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue  # Anthropic has one reply per message
            out.extend(self._delta(choice.get("delta") or {}))
            if choice.get("finish_reason"):
                self._stop_reason = _stop_reason(choice["finish_reason"])
                out.extend(self._close())
        return b"".join(out)

    def finish(self) -> bytes:
        if self._finished:
            return b""
        self._finished = True
        out = [] if self._started else [self._start({})]
        out.extend(self._close())
        out.append(_ev(wire.MESSAGE_DELTA, {"type": wire.MESSAGE_DELTA, "delta": {
            "stop_reason": self._stop_reason, "stop_sequence": None}, "usage": self._usage}))
        out.append(_ev(wire.MESSAGE_STOP, {"type": wire.MESSAGE_STOP}))
        return b"".join(out)

    def _start(self, chunk: Mapping[str, Any]) -> bytes:
        self._started = True
        self.model = chunk.get("model") or self.model
        message: dict[str, Any] = {"id": _message_id(chunk.get("id")), "type": "message", "role": "assistant",
                                   "model": self.model, "content": [], "stop_reason": None,
                                   "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}
        return _ev(wire.MESSAGE_START, {"type": wire.MESSAGE_START, "message": message})

    def _delta(self, delta: Mapping[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        if delta.get("reasoning_content"):
            out.extend(self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""}))
            out.append(self._block_delta({"type": "thinking_delta", "thinking": delta["reasoning_content"]}))
        text = delta.get("content") or delta.get("refusal")
        if text:
            out.extend(self._open("text", {"type": "text", "text": ""}))
            out.append(self._block_delta({"type": "text_delta", "text": text}))
        for call in delta.get("tool_calls") or []:
            out.extend(self._tool_delta(call))
        return out

    def _tool_delta(self, call: Mapping[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        k = call.get("index", 0)
        fn = call.get("function") or {}
        if k not in self._tools:
            out.extend(self._open("tool_use", {"type": "tool_use", "id": call.get("id") or f"toolu_{k}",
                                               "name": fn.get("name") or "", "input": {}}, force=True))
            self._tools[k] = self._block
        if fn.get("arguments") and self._tools[k] == self._block:
            out.append(self._block_delta({"type": "input_json_delta", "partial_json": fn["arguments"]}))
        return out

    def _open(self, kind: str, block: dict[str, Any], *, force: bool = False) -> list[bytes]:
        if self._block_kind == kind and not force:
            return []
        out = self._close()
        self._block, self._block_kind = self._next_block, kind
        self._next_block += 1
        out.append(_ev(wire.BLOCK_START, {"type": wire.BLOCK_START, "index": self._block,
                                          "content_block": block}))
        return out

    def _close(self) -> list[bytes]:
        if self._block_kind is None:
            return []
        self._block_kind = None
        return [_ev(wire.BLOCK_STOP, {"type": wire.BLOCK_STOP, "index": self._block})]

    def _block_delta(self, delta: dict[str, Any]) -> bytes:
        return _ev(wire.BLOCK_DELTA, {"type": wire.BLOCK_DELTA, "index": self._block, "delta": delta})


def _ev(name: str, data: dict[str, Any]) -> bytes:
    return encode_event(name, orjson.dumps(data))
