"""The fake upstream's wire dialects: the event bytes of a chat completions, Anthropic Messages or
Responses stream, and the plain replies (also embeddings), so every front door has a native upstream
to measure direct and through a pass-through, and the translated doors a native direct counterpart."""

from __future__ import annotations

import time
from typing import Any

import orjson

CREATED = int(time.time())


def now_us() -> int:
    return time.time_ns() // 1000


def sse(obj: dict[str, Any], event: str | None = None) -> bytes:
    head = b"event: %s\n" % event.encode() if event else b""
    return head + b"data: " + orjson.dumps(obj) + b"\n\n"


class Chat:
    """`chat.completion.chunk` events; usage in a last chunk when `stream_options.include_usage`."""

    def __init__(self, cid: str, model: str, usage: dict[str, int], include_usage: bool):
        self.cid, self.model, self.usage, self.include_usage = cid, model, usage, include_usage

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": self.cid, "object": "chat.completion.chunk", "created": CREATED, "model": self.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
                "bench_ts": now_us()}

    def first(self) -> bytes:
        return sse(self._chunk({"role": "assistant", "content": ""}))

    def content(self, piece: str, i: int) -> bytes:
        return sse(self._chunk({"content": piece}))

    def tail(self) -> bytes:
        out = sse(self._chunk({}, "stop"))
        if self.include_usage:
            out += sse({"id": self.cid, "object": "chat.completion.chunk", "created": CREATED,
                        "model": self.model, "choices": [], "usage": self.usage, "bench_ts": now_us()})
        return out + b"data: [DONE]\n\n"

    def reply(self, text: str) -> dict[str, Any]:
        return {"id": self.cid, "object": "chat.completion", "created": CREATED, "model": self.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "logprobs": None, "finish_reason": "stop"}], "usage": self.usage}


class Anthropic:
    """Anthropic Messages events: message_start, one text block of deltas, message_delta, message_stop."""

    def __init__(self, cid: str, model: str, usage: dict[str, int], include_usage: bool = True):
        self.cid, self.model = "msg_" + cid, model
        self.inp, self.out = usage["prompt_tokens"], usage["completion_tokens"]

    def first(self) -> bytes:
        msg: dict[str, Any] = {"id": self.cid, "type": "message", "role": "assistant", "model": self.model,
                               "content": [], "stop_reason": None, "stop_sequence": None,
                               "usage": {"input_tokens": self.inp, "output_tokens": 1}}
        return (sse({"type": "message_start", "message": msg}, "message_start")
                + sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                      "content_block_start"))

    def content(self, piece: str, i: int) -> bytes:
        return sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece},
                    "bench_ts": now_us()}, "content_block_delta")

    def tail(self) -> bytes:
        return (sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
                + sse({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                       "usage": {"output_tokens": self.out}}, "message_delta")
                + sse({"type": "message_stop"}, "message_stop"))

    def reply(self, text: str) -> dict[str, Any]:
        return {"id": self.cid, "type": "message", "role": "assistant", "model": self.model,
                "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": self.inp, "output_tokens": self.out}}


class Responses:
    """OpenAI Responses events: created, in_progress, item and part added, text deltas, the dones,
    response.completed with usage; every event numbered by sequence_number."""

    def __init__(self, cid: str, model: str, usage: dict[str, int], include_usage: bool = True):
        self.rid, self.mid, self.model, self.seq, self.text = "resp_" + cid, "msg_" + cid, model, 0, ""
        self.usage = {"input_tokens": usage["prompt_tokens"], "output_tokens": usage["completion_tokens"],
                      "total_tokens": usage["total_tokens"], "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens_details": {"reasoning_tokens": 0}}

    def _ev(self, kind: str, **fields: Any) -> bytes:
        self.seq += 1
        return sse({"type": kind, "sequence_number": self.seq - 1, **fields}, kind)

    def _response(self, status: str, output: list[Any], usage: dict[str, Any] | None) -> dict[str, Any]:
        return {"id": self.rid, "object": "response", "created_at": CREATED, "status": status,
                "model": self.model, "output": output, "usage": usage}

    def _item(self, status: str, text: str | None) -> dict[str, Any]:
        content = [] if text is None else [{"type": "output_text", "text": text, "annotations": []}]
        return {"id": self.mid, "type": "message", "status": status, "role": "assistant", "content": content}

    def first(self) -> bytes:
        part = {"type": "output_text", "text": "", "annotations": []}
        return (self._ev("response.created", response=self._response("in_progress", [], None))
                + self._ev("response.in_progress", response=self._response("in_progress", [], None))
                + self._ev("response.output_item.added", output_index=0, item=self._item("in_progress", None))
                + self._ev("response.content_part.added", item_id=self.mid, output_index=0, content_index=0,
                           part=part))

    def content(self, piece: str, i: int) -> bytes:
        self.text += piece
        return self._ev("response.output_text.delta", item_id=self.mid, output_index=0, content_index=0,
                        delta=piece, logprobs=[], bench_ts=now_us())

    def tail(self) -> bytes:
        part = {"type": "output_text", "text": self.text, "annotations": []}
        done = self._item("completed", self.text)
        return (self._ev("response.output_text.done", item_id=self.mid, output_index=0, content_index=0,
                         text=self.text, logprobs=[])
                + self._ev("response.content_part.done", item_id=self.mid, output_index=0, content_index=0,
                           part=part)
                + self._ev("response.output_item.done", output_index=0, item=done)
                + self._ev("response.completed", response=self._response("completed", [done], self.usage)))

    def reply(self, text: str) -> dict[str, Any]:
        return self._response("completed", [self._item("completed", text)], self.usage)


DIALECTS: dict[bytes, type[Chat] | type[Anthropic] | type[Responses]] = {
    b"/chat/completions": Chat, b"/messages": Anthropic, b"/responses": Responses}


def dialect_for(path: bytes) -> type[Chat] | type[Anthropic] | type[Responses] | None:
    for suffix, cls in DIALECTS.items():
        if path.endswith(suffix):
            return cls
    return None


def embeddings(model: str, inputs: Any, tokens: int) -> dict[str, Any]:
    """One small vector per input (the bench measures the hop, not the payload size)."""
    items = inputs if isinstance(inputs, list) else [inputs]
    return {"object": "list", "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            "data": [{"object": "embedding", "index": i, "embedding": [0.0125, -0.25, 0.5, 0.75] * 4}
                     for i in range(len(items))]}
