"""The stream state machine: parsed Gemini `alt=sse` events in, OpenAI `chat.completion.chunk`s out.

Per choice: one role chunk, content / reasoning / whole-tool-call deltas, one finish chunk; after EOF
one usage chunk (`choices: []`). An error event or EOF before every started choice finished raises.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from sluice.errors import UpstreamError
from sluice.providers.base import Chunk
from sluice.providers.gemini import wire
from sluice.providers.gemini.response import (
    JSON,
    IdFactory,
    blocked,
    candidate_parts,
    completion_id,
    error_from_body,
    new_call_id,
    part_kind,
    tool_call,
    usage_from,
)
from sluice.schema.usage import Usage


class _Choice:
    __slots__ = ("finished", "tool_calls")

    def __init__(self) -> None:
        self.finished = False
        self.tool_calls = 0


class GeminiStreamState:
    """Feed each parsed event to `feed()`; call `end()` at EOF. Both return the chunks to send, in order."""

    def __init__(self, *, upstream_model: str, created: int | None = None,
                 new_id: IdFactory = new_call_id) -> None:
        self._model = upstream_model
        self._created = int(time.time()) if created is None else created
        self._new_id = new_id
        self._id: str | None = None
        self._choices: dict[int, _Choice] = {}
        self._usage: Usage | None = None
        self._ended = False

    @property
    def usage(self) -> Usage | None:
        """The last (cumulative) usage Gemini reported so far: partial usage if the stream breaks."""
        return self._usage

    def feed(self, event: Any) -> list[Chunk]:
        if not isinstance(event, dict):
            raise UpstreamError("Gemini sent a stream event that is not a JSON object")
        if isinstance(event.get("error"), dict):
            raise error_from_body(event, status=None)
        if self._id is None:
            self._id = completion_id(event)
            model = event.get("modelVersion")
            if isinstance(model, str) and model:
                self._model = model
        usage = usage_from(event.get("usageMetadata"))
        if usage is not None:
            self._usage = usage  # cumulative: the last one wins, never a sum
        cands = [c for c in event.get("candidates") or [] if isinstance(c, dict)]
        out: list[Chunk] = []
        if not cands and blocked(event) and not self._choices:
            out.append(self._start(0))
            out.append(self._finish(0, "content_filter"))
        for pos, cand in enumerate(cands):
            index = cand.get("index")
            out.extend(self._candidate(index if isinstance(index, int) else pos, cand))
        return out

    def end(self) -> list[Chunk]:
        """At EOF: the usage chunk, or `UpstreamError` when the reply was cut short."""
        if self._ended:
            return []
        self._ended = True
        if not self._choices or not all(c.finished for c in self._choices.values()):
            raise UpstreamError("the Gemini stream ended before its finishReason: the reply is truncated")
        if self._usage is None:
            return []  # not reported is not zero: the relay estimates instead
        chunk = self._envelope([])
        chunk["usage"] = self._usage.to_openai()
        return [Chunk(orjson.dumps(chunk), parsed=chunk, usage=self._usage, usage_only=True)]

    def _candidate(self, index: int, cand: JSON) -> list[Chunk]:
        out: list[Chunk] = []
        state = self._choices.get(index)
        if state is None:
            out.append(self._start(index))
            state = self._choices[index]
        if state.finished:
            return out  # nothing may follow a finish chunk
        for part in candidate_parts(cand):
            kind = part_kind(part)
            if kind == "text" and part["text"]:
                out.append(self._delta(index, {"content": part["text"]}, part["text"]))
            elif kind == "thought" and part["text"]:
                out.append(self._delta(index, {"reasoning_content": part["text"]}, part["text"]))
            elif kind == "call":
                call = tool_call(part, self._new_id)
                fn = call["function"]
                frag = {"index": state.tool_calls, **call}
                state.tool_calls += 1
                out.append(self._delta(index, {"tool_calls": [frag]}, fn["name"] + fn["arguments"]))
        reason = cand.get("finishReason")
        if isinstance(reason, str) and reason:
            out.append(self._finish(index, wire.finish_reason(reason, has_tool_calls=state.tool_calls > 0)))
        return out

    def _start(self, index: int) -> Chunk:
        self._choices[index] = _Choice()
        return self._delta(index, {"role": "assistant", "content": ""}, "")

    def _finish(self, index: int, reason: str) -> Chunk:
        self._choices[index].finished = True
        chunk = self._envelope([{"index": index, "delta": {}, "logprobs": None, "finish_reason": reason}])
        return Chunk(orjson.dumps(chunk), parsed=chunk, finish=True)

    def _delta(self, index: int, delta: JSON, text: str) -> Chunk:
        chunk = self._envelope([{"index": index, "delta": delta, "logprobs": None, "finish_reason": None}])
        return Chunk(orjson.dumps(chunk), parsed=chunk, text=text)

    def _envelope(self, choices: list[JSON]) -> JSON:
        return {"id": self._id, "object": "chat.completion.chunk", "created": self._created,
                "model": self._model, "choices": choices}
