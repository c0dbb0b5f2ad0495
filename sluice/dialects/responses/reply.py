"""The Responses reply side shared by plain and streamed answers: the `response` object, its usage, output
items from a chat message, and the error shapes (`response.failed`, `error` events)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from sluice.dialects.responses import reasoning as envelope
from sluice.dialects.responses.tools import CUSTOM_ARG, ToolNames
from sluice.errors import SluiceError
from sluice.schema import thinking
from sluice.sse import encode_event

# chat finish_reason -> the Responses `incomplete_details.reason` (anything else completed)
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def response_id(request_id: str) -> str:
    return "resp_" + request_id.removeprefix("req_")


def usage(u: Any) -> dict[str, Any] | None:
    """Chat usage -> Responses usage; None when the upstream reported none."""
    if not isinstance(u, Mapping) or not isinstance(u.get("prompt_tokens"), int):
        return None
    ptd, ctd = u.get("prompt_tokens_details"), u.get("completion_tokens_details")
    cached = ptd.get("cached_tokens") if isinstance(ptd, Mapping) else None
    written = ptd.get("cache_write_tokens") if isinstance(ptd, Mapping) else None
    reasoning = ctd.get("reasoning_tokens") if isinstance(ctd, Mapping) else None
    inp, out = u["prompt_tokens"], u.get("completion_tokens") or 0
    return {"input_tokens": inp,
            "input_tokens_details": {"cached_tokens": cached or 0, "cache_write_tokens": written or 0},
            "output_tokens": out, "output_tokens_details": {"reasoning_tokens": reasoning or 0},
            "total_tokens": inp + out}


class Shell:
    """The fields of a `response` object that do not depend on the answer, echoed from the request."""

    __slots__ = ("created_at", "encrypted", "fields", "id", "model")

    def __init__(self, rid: str, model: str, req: Mapping[str, Any]) -> None:
        self.id = response_id(rid)
        self.model = model
        self.created_at = int(time.time())
        self.encrypted = envelope.wanted(req)  # reasoning items carry `encrypted_content`
        reasoning = req.get("reasoning")
        if not isinstance(reasoning, Mapping):
            reasoning = {}
        self.fields: dict[str, Any] = {
            "instructions": req.get("instructions"), "max_output_tokens": req.get("max_output_tokens"),
            "parallel_tool_calls": req.get("parallel_tool_calls", True), "previous_response_id": None,
            "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
            "store": False, "temperature": req.get("temperature"), "top_p": req.get("top_p"),
            "text": req.get("text") or {"format": {"type": "text"}}, "tool_choice": req.get("tool_choice", "auto"),
            "tools": req.get("tools") or [], "truncation": "disabled", "metadata": req.get("metadata") or {}}

    def response(self, status: str, output: list[dict[str, Any]], *, use: dict[str, Any] | None = None,
                 finish: str | None = None, error: dict[str, Any] | None = None) -> dict[str, Any]:
        reason = _INCOMPLETE.get(finish or "")
        if reason is not None and status == "completed":
            status = "incomplete"
        return {"id": self.id, "object": "response", "created_at": self.created_at, "status": status,
                "error": error, "incomplete_details": {"reason": reason} if status == "incomplete" else None,
                "model": self.model, "output": output, "usage": use, **self.fields}


def call_item(item_id: str, call_id: str, name: str, arguments: str, tools: ToolNames) -> dict[str, Any]:
    """A finished tool call: `function_call`, or `custom_tool_call` with its freeform text unwrapped."""
    if name in tools.custom:
        return {"id": item_id, "type": "custom_tool_call", "status": "completed", "call_id": call_id,
                **tools.identity(name), "input": custom_input(arguments)}
    return {"id": item_id, "type": "function_call", "status": "completed", "call_id": call_id,
            **tools.identity(name), "arguments": arguments or "{}"}


def custom_input(arguments: str) -> str:
    try:
        doc = orjson.loads(arguments) if arguments else {}
    except orjson.JSONDecodeError:
        return arguments  # the model wrote the text itself rather than wrapping it: keep it as it is
    v = doc.get(CUSTOM_ARG) if isinstance(doc, dict) else None
    return v if isinstance(v, str) else arguments


def message_item(item_id: str, text: str) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}


def reasoning_item(shell: Shell, item_id: str, text: str, signed: list[Any]) -> dict[str, Any]:
    """A finished reasoning item: its text as the summary; its signed thinking blocks, if the upstream gave any
    and the client asked for them, as `encrypted_content`."""
    item: dict[str, Any] = {"id": item_id, "type": "reasoning",
                            "summary": [{"type": "summary_text", "text": text}] if text else []}
    sealed = envelope.encode(signed) if signed and shell.encrypted else None
    if sealed is not None:
        item["encrypted_content"] = sealed
    return item


def completion_to_response(shell: Shell, body: Mapping[str, Any], tools: ToolNames) -> dict[str, Any]:
    """A chat.completion -> a finished `response` object."""
    choice = (body.get("choices") or [{}])[0]
    msg = choice.get("message") or {}
    output: list[dict[str, Any]] = []
    suffix = shell.id.removeprefix("resp_")
    text = msg.get("reasoning_content")
    text = text if isinstance(text, str) else ""
    signed = msg.get(thinking.FIELD)
    signed = signed if isinstance(signed, list) else []
    if text or signed:
        output.append(reasoning_item(shell, f"rs_{suffix}", text, signed))
    text = msg.get("content") or msg.get("refusal")
    if isinstance(text, str) and text:
        output.append(message_item(f"msg_{suffix}", text))
    for i, call in enumerate(msg.get("tool_calls") or []):
        fn = call.get("function") or {}
        name = str(fn.get("name") or "")
        output.append(call_item(f"fc_{suffix}_{i}", str(call.get("id") or f"call_{suffix}_{i}"), name,
                                str(fn.get("arguments") or ""), tools))
    return shell.response("completed", output, use=usage(body.get("usage")), finish=choice.get("finish_reason"))


def error_object(exc: SluiceError) -> dict[str, Any]:
    """`response.error`: its `code` is a closed set in the SDKs' types, so Sluice's codes are folded into it
    (Codex retries `rate_limit_exceeded` and `server_error`, and gives up on `invalid_prompt`)."""
    code = "rate_limit_exceeded" if exc.status == 429 else "invalid_prompt" if 400 <= exc.status < 500 \
        else "server_error"
    return {"code": code, "message": exc.message}


def error_event(exc: SluiceError) -> bytes:
    """A stream's last event when nothing else is known of it (the server's shutdown cut it short)."""
    return event("error", {"type": "error", "code": exc.code or exc.type, "message": exc.message,
                           "param": exc.param, "sequence_number": 0})


def event(kind: str, data: dict[str, Any]) -> bytes:
    return encode_event(kind, orjson.dumps(data))
