"""Canonical chat chunks -> the Responses event stream: `response.created` ... `response.completed`, every
event numbered by `sequence_number`, each output item opened, filled and closed as the chunks arrive.

Text is a `message` item, `reasoning_content` a `reasoning` item with a summary (and the signed
`thinking_blocks` that close it as its `encrypted_content`), each tool call a `function_call` item (or
`custom_tool_call` for a freeform tool, whose text is unwrapped at the end).
"""

from __future__ import annotations

from typing import Any

from sluice.dialects.responses.reply import (
    Shell,
    call_item,
    custom_input,
    error_object,
    event,
    message_item,
    reasoning_item,
    usage,
)
from sluice.dialects.responses.tools import ToolNames
from sluice.errors import SluiceError
from sluice.schema import thinking


class _Item:
    __slots__ = ("call_id", "id", "kind", "name", "parts", "position", "signed")

    def __init__(self, kind: str, item_id: str, position: int, call_id: str = "", name: str = "") -> None:
        self.kind = kind            # "message", "reasoning", "call", "custom"
        self.id = item_id
        self.position = position    # output_index
        self.call_id = call_id
        self.name = name
        self.parts: list[str] = []  # text, summary or arguments, as it arrived
        self.signed: list[Any] = []  # a reasoning item's signed thinking blocks


class ResponsesStreamWriter:
    """Feed it parsed chat chunks; it returns the bytes of the Responses events they make (maybe none)."""

    def __init__(self, shell: Shell, tools: ToolNames) -> None:
        self._shell = shell
        self._tools = tools
        self._seq = 0
        self._output: list[dict[str, Any] | None] = []  # finished items by output_index
        self._open: _Item | None = None                   # the text or reasoning item being written
        self._calls: dict[int, _Item] = {}                # tool calls by chat index, closed at the end
        self._finish: str | None = None
        self._usage: dict[str, Any] | None = None
        self._out: list[bytes] = []

    def start(self) -> bytes:
        created = self._shell.response("in_progress", [])
        self._emit("response.created", {"response": created})
        self._emit("response.in_progress", {"response": created})
        return self._flush()

    def feed(self, chunk: dict[str, Any]) -> bytes:
        if chunk.get("usage"):
            self._usage = usage(chunk["usage"])
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # Responses has one answer; n > 1 is not a Responses concept
            delta = choice.get("delta") or {}
            if isinstance(delta.get("reasoning_content"), str) and delta["reasoning_content"]:
                self._text("reasoning", delta["reasoning_content"])
            if isinstance(delta.get(thinking.FIELD), list):
                self._item("reasoning").signed.extend(delta[thinking.FIELD])
            if isinstance(delta.get("content"), str) and delta["content"]:
                self._text("message", delta["content"])
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    self._call(call)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return self._flush()

    def finish(self, fallback_usage: dict[str, Any] | None = None) -> bytes:
        """Close every item and end with `response.completed` (or `response.incomplete`)."""
        self._close_all()
        body = self._shell.response("completed", self._items(), use=self._usage or fallback_usage,
                                    finish=self._finish)
        self._emit("response.completed" if body["status"] == "completed" else "response.incomplete",
                   {"response": body})
        return self._flush()

    def fail(self, exc: SluiceError) -> bytes:
        """After the 200 a failure is the stream's last event, `response.failed`, never a bare envelope."""
        body = self._shell.response("failed", self._items(), use=self._usage, error=error_object(exc))
        self._emit("response.failed", {"response": body})
        return self._flush()

    # --- items ---
    def _item(self, kind: str) -> _Item:
        """The open text or reasoning item, opened now if another kind (or none) is open."""
        item = self._open
        if item is not None and item.kind == kind:
            return item
        self._close_open()
        item = self._open = self._add(kind, "rs" if kind == "reasoning" else "msg")
        if kind == "message":
            self._emit("response.output_item.added", {"output_index": item.position, "item": {
                "id": item.id, "type": "message", "status": "in_progress", "role": "assistant", "content": []}})
            self._emit("response.content_part.added", {**self._where(item), "content_index": 0,
                       "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}})
        else:
            self._emit("response.output_item.added", {"output_index": item.position, "item": {
                "id": item.id, "type": "reasoning", "summary": []}})
        return item

    def _text(self, kind: str, text: str) -> None:
        item = self._item(kind)
        if kind == "reasoning" and not item.parts:  # a redacted block alone has no summary part
            self._emit("response.reasoning_summary_part.added", {**self._where(item), "summary_index": 0,
                       "part": {"type": "summary_text", "text": ""}})
        item.parts.append(text)
        if kind == "message":
            self._emit("response.output_text.delta", {**self._where(item), "content_index": 0, "delta": text,
                                                      "logprobs": []})
        else:
            self._emit("response.reasoning_summary_text.delta", {**self._where(item), "summary_index": 0,
                                                                 "delta": text})

    def _call(self, call: dict[str, Any]) -> None:
        index = call.get("index", 0)
        fn = call.get("function") or {}
        item = self._calls.get(index)
        if item is None:
            self._close_open()
            name = str(fn.get("name") or "")
            custom = name in self._tools.custom
            item = self._calls[index] = self._add("custom" if custom else "call", "ctc" if custom else "fc",
                                                  str(call.get("id") or ""), name)
            who = self._tools.identity(name)
            if custom:
                head = {"id": item.id, "type": "custom_tool_call", "status": "in_progress",
                        "call_id": item.call_id, **who, "input": ""}
            else:
                head = {"id": item.id, "type": "function_call", "status": "in_progress",
                        "call_id": item.call_id, **who, "arguments": ""}
            self._emit("response.output_item.added", {"output_index": item.position, "item": head})
        args = fn.get("arguments")
        if isinstance(args, str) and args:
            item.parts.append(args)
            if item.kind == "call":  # a custom tool's input is unwrapped from its JSON only at the end
                self._emit("response.function_call_arguments.delta", {**self._where(item), "delta": args})

    def _add(self, kind: str, prefix: str, call_id: str = "", name: str = "") -> _Item:
        position = len(self._output)
        self._output.append(None)
        item_id = f"{prefix}_{self._shell.id.removeprefix('resp_')}_{position}"
        return _Item(kind, item_id, position, call_id or f"call_{item_id}", name)

    def _close_open(self) -> None:
        item, self._open = self._open, None
        if item is None:
            return
        text = "".join(item.parts)
        where = self._where(item)
        if item.kind == "message":
            done = message_item(item.id, text)
            self._emit("response.output_text.done", {**where, "content_index": 0, "text": text, "logprobs": []})
            self._emit("response.content_part.done", {**where, "content_index": 0, "part": done["content"][0]})
        else:
            done = reasoning_item(self._shell, item.id, text, item.signed)
            if text:
                self._emit("response.reasoning_summary_text.done", {**where, "summary_index": 0, "text": text})
                self._emit("response.reasoning_summary_part.done", {**where, "summary_index": 0,
                                                                    "part": done["summary"][0]})
        self._done(item, done)

    def _close_all(self) -> None:
        self._close_open()
        for item in self._calls.values():
            args = "".join(item.parts)
            done = call_item(item.id, item.call_id, item.name, args, self._tools)
            if item.kind == "custom":
                text = custom_input(args)
                self._emit("response.custom_tool_call_input.delta", {**self._where(item), "delta": text})
                self._emit("response.custom_tool_call_input.done", {**self._where(item), "input": text})
            else:
                self._emit("response.function_call_arguments.done", {**self._where(item), "name": done["name"],
                                                                     "arguments": done["arguments"]})
            self._done(item, done)
        self._calls.clear()

    def _done(self, item: _Item, done: dict[str, Any]) -> None:
        self._output[item.position] = done
        self._emit("response.output_item.done", {"output_index": item.position, "item": done})

    def _items(self) -> list[dict[str, Any]]:
        return [i for i in self._output if i is not None]

    @staticmethod
    def _where(item: _Item) -> dict[str, Any]:
        return {"item_id": item.id, "output_index": item.position}

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        self._out.append(event(kind, {"type": kind, "sequence_number": self._seq, **data}))
        self._seq += 1

    def _flush(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out
