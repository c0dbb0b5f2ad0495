"""The Anthropic stream state machine: parsed Messages SSE events in, OpenAI chat.completion.chunk out.

Pure: the adapter decodes SSE and feeds `(event name, data dict)`; this class knows the event grammar.
Thinking streams as `reasoning_content`; each signed block also comes whole, as `thinking_blocks`, in one
chunk when the upstream closes it (`sluice/schema/thinking.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from sluice.dialects.anthropic_messages import wire
from sluice.errors import UpstreamError
from sluice.providers.anthropic.translate import error_from_event, finish_for, signed_block, usage_from
from sluice.providers.base import Chunk
from sluice.schema import thinking
from sluice.schema.usage import Usage


class StreamTranslator:
    """Feed events in order with `feed()`; call `eof()` when the body ends (raises if unfinished)."""

    def __init__(self, *, created: int, model: str) -> None:
        self.created = created
        self.model = model
        self.id = "chatcmpl-"
        self.started = False
        self.done = False
        self._tool_index: dict[int, int] = {}   # Anthropic block index -> OpenAI tool-call index
        self._tool_has_args: dict[int, bool] = {}
        self._signed: dict[int, dict[str, Any]] = {}  # thinking blocks being written, by Anthropic block index
        self._thought: dict[int, list[str]] = {}      # their text as it arrived
        self._stop_reason: str | None = None
        self._usage: dict[str, Any] = {}

    def feed(self, event: str | None, data: Mapping[str, Any]) -> list[Chunk]:
        name = event or data.get("type")
        if name == wire.ERROR:
            raise error_from_event(data)
        if name == wire.PING or self.done:
            return []
        if name == wire.MESSAGE_START:
            return self._start(data.get("message") or {})
        if not self.started:
            raise UpstreamError(f"the upstream sent {name!r} before message_start")
        if name == wire.BLOCK_START:
            return self._block_start(data.get("index"), data.get("content_block") or {})
        if name == wire.BLOCK_DELTA:
            return self._block_delta(data.get("index"), data.get("delta") or {})
        if name == wire.BLOCK_STOP:
            return self._block_stop(data.get("index"))
        if name == wire.MESSAGE_DELTA:
            self._message_delta(data)
            return []
        if name == wire.MESSAGE_STOP:
            return self._stop()
        return []  # unknown events are ignored, as the Anthropic SDK does

    def eof(self) -> None:
        if not self.done:
            raise UpstreamError("the upstream stream ended before finishing")

    def _start(self, message: Mapping[str, Any]) -> list[Chunk]:
        if self.started:
            raise UpstreamError("the upstream sent message_start twice")
        self.started = True
        self.id = "chatcmpl-" + str(message.get("id") or "")
        if isinstance(message.get("model"), str) and message["model"]:
            self.model = message["model"]
        if isinstance(message.get("usage"), dict):
            self._usage.update(message["usage"])
        return [self._chunk({"role": "assistant", "content": ""})]

    def _block_start(self, index: Any, block: Mapping[str, Any]) -> list[Chunk]:
        kind = block.get("type")
        if kind == "tool_use":
            k = len(self._tool_index)
            self._tool_index[index] = k
            self._tool_has_args[index] = False
            call = {"index": k, "id": block.get("id"), "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""}}
            return [self._chunk({"tool_calls": [call]}, text=str(block.get("name") or ""))]
        if kind == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]}, text=block["text"])]
        if kind in ("thinking", "redacted_thinking"):
            self._signed[index] = dict(block)
            self._thought[index] = [block.get("thinking") or ""]
        if kind == "thinking" and block.get("thinking"):
            return [self._chunk({"reasoning_content": block["thinking"]}, text=block["thinking"])]
        return []

    def _block_delta(self, index: Any, delta: Mapping[str, Any]) -> list[Chunk]:
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return [self._chunk({"content": delta["text"]}, text=delta["text"])]
        if kind == "thinking_delta" and delta.get("thinking"):
            if index in self._thought:
                self._thought[index].append(delta["thinking"])
            return [self._chunk({"reasoning_content": delta["thinking"]}, text=delta["thinking"])]
        if kind == "signature_delta" and index in self._signed:
            self._signed[index]["signature"] = str(self._signed[index].get("signature") or "") + \
                str(delta.get("signature") or "")
            return []
        if kind == "input_json_delta" and index in self._tool_index and delta.get("partial_json"):
            self._tool_has_args[index] = True
            return [self._args_chunk(index, delta["partial_json"])]
        return []  # citations and empty deltas carry nothing for an OpenAI client

    def _block_stop(self, index: Any) -> list[Chunk]:
        block = self._signed.pop(index, None)
        if block is not None:
            block["thinking"] = "".join(self._thought.pop(index))
            return [self._chunk({thinking.FIELD: [signed_block(block)]})]
        if index in self._tool_has_args and not self._tool_has_args[index]:
            self._tool_has_args[index] = True
            return [self._args_chunk(index, "{}")]
        return []

    def _message_delta(self, data: Mapping[str, Any]) -> None:
        delta = data.get("delta")
        if isinstance(delta, dict) and delta.get("stop_reason"):
            self._stop_reason = delta["stop_reason"]
        usage = data.get("usage")
        if isinstance(usage, dict):
            # cumulative totals: overwrite, never add; absent fields keep their message_start value
            self._usage.update({k: v for k, v in usage.items() if v is not None})

    def _stop(self) -> list[Chunk]:
        self.done = True
        finish = finish_for(self._stop_reason, bool(self._tool_index))
        out = [self._chunk({}, finish_reason=finish)]
        usage = usage_from(self._usage)
        if usage is not None:
            out.append(self._usage_chunk(usage))
        return out

    def _args_chunk(self, index: int, fragment: str) -> Chunk:
        call = {"index": self._tool_index[index], "function": {"arguments": fragment}}
        return self._chunk({"tool_calls": [call]}, text=fragment)

    def _envelope(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "choices": choices}

    def _chunk(self, delta: dict[str, Any], *, text: str = "", finish_reason: str | None = None) -> Chunk:
        parsed = self._envelope([{"index": 0, "delta": delta, "logprobs": None,
                                  "finish_reason": finish_reason}])
        return Chunk(orjson.dumps(parsed), parsed=parsed, text=text, finish=finish_reason is not None)

    def _usage_chunk(self, usage: Usage) -> Chunk:
        parsed = self._envelope([])
        parsed["usage"] = usage.to_openai()
        return Chunk(orjson.dumps(parsed), parsed=parsed, usage=usage, usage_only=True)
