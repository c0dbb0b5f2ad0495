"""Responses request -> canonical chat-completions body: `input` items become messages, `instructions` the
first system message, flat function tools chat tools, freeform `custom` tools a one-string-argument function.

Fields no chat upstream understands (`store`, `include`, `reasoning.summary`, `prompt_cache_key`, ...) are
dropped here instead of forwarded; state Sluice does not keep (`previous_response_id`) is a clear 400.
A reasoning item Sluice made (`reasoning.py`) gives its signed thinking back to the assistant turn after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from sluice.dialects.responses.reasoning import Decoder
from sluice.dialects.responses.tools import CUSTOM_ARG, ToolNames, chat_name, chat_tool_choice, chat_tools
from sluice.errors import InvalidRequest
from sluice.schema import thinking

# Responses reasoning.effort -> the chat scale every translating provider accepts (low, medium, high)
_EFFORT = {"minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}
# chat parameters with the same name and meaning in both APIs, and their ranges
_SAME = {"temperature": 2.0, "top_p": 1.0}
# state Sluice does not keep: named in a 400 rather than silently ignored
_STATEFUL = ("previous_response_id", "conversation")


@dataclass(slots=True)
class Translated:
    """The canonical body, and what the reply side needs to turn it back into Responses items."""

    body: dict[str, Any]
    tools: ToolNames = field(default_factory=ToolNames)


def translate_request(req: dict[str, Any]) -> Translated:
    for name in _STATEFUL:
        if req.get(name) is not None:
            raise InvalidRequest(f"'{name}' is not supported: Sluice keeps no responses; send the whole "
                                 "conversation in 'input' (with store: false).", param=name,
                                 code="unsupported_parameter")
    if req.get("background"):
        raise InvalidRequest("'background' responses are not supported.", param="background",
                             code="unsupported_parameter")
    model = req.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("you must provide a model parameter", param="model")
    stream = req.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean", param="stream", code="invalid_type")
    tools, names = chat_tools(req.get("tools"))
    messages = _instructions(req.get("instructions")) + _messages(req.get("input"))
    body: dict[str, Any] = {"model": model, "messages": messages}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    for name, top in _SAME.items():
        v = req.get(name)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= top:
            raise InvalidRequest(f"'{name}' must be a number from 0 to {top:g}", param=name, code="invalid_value")
        body[name] = v
    limit = req.get("max_output_tokens")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000_000:
            raise InvalidRequest("'max_output_tokens' must be an integer from 1 to 10000000",
                                 param="max_output_tokens", code="invalid_value")
        body["max_completion_tokens"] = limit
    if tools:
        body["tools"] = tools
        if isinstance(req.get("parallel_tool_calls"), bool):  # OpenAI rejects it on a request without tools
            body["parallel_tool_calls"] = req["parallel_tool_calls"]
        choice = chat_tool_choice(req.get("tool_choice"))
        if choice is not None:
            body["tool_choice"] = choice
    effort = _effort(req.get("reasoning"))
    if effort is not None:
        body["reasoning_effort"] = effort
    fmt = _response_format(req.get("text"))
    if fmt is not None:
        body["response_format"] = fmt
    return Translated(body, names)


def _instructions(v: Any) -> list[dict[str, Any]]:
    if v is None or v == "":
        return []
    if not isinstance(v, str):
        raise InvalidRequest("'instructions' must be a string", param="instructions", code="invalid_type")
    return [{"role": "system", "content": v}]


def _messages(v: Any) -> list[dict[str, Any]]:
    if isinstance(v, str):
        return [{"role": "user", "content": v}]
    if not isinstance(v, list) or not v:
        raise InvalidRequest("'input' must be a string or a non-empty array of items", param="input",
                             code="invalid_type")
    out: list[dict[str, Any]] = []
    decoder = Decoder()
    signed: list[dict[str, str]] = []  # thinking from reasoning items, for the assistant turn that follows
    for i, item in enumerate(v):
        if not isinstance(item, dict):
            raise InvalidRequest(f"input[{i}] must be an object", param=f"input[{i}]", code="invalid_type")
        kind = item.get("type", "message")
        if kind == "reasoning":
            signed += decoder.decode(item.get("encrypted_content"), f"input[{i}].encrypted_content")
            continue  # its summary is not taken back: only the signed blocks mean anything upstream
        if kind == "message":
            out.append(_message(item, i))
        elif kind in ("function_call", "custom_tool_call"):
            _add_call(out, item, i)
        elif kind in ("function_call_output", "custom_tool_call_output"):
            out.append({"role": "tool", "tool_call_id": _str(item, "call_id", i),
                        "content": _output_text(item.get("output"), i)})
        else:
            raise InvalidRequest(f"input[{i}]: items of type '{kind}' are not supported", param=f"input[{i}].type",
                                 code="invalid_value")
        if signed and out[-1]["role"] == "assistant":
            out[-1].setdefault(thinking.FIELD, []).extend(signed)
        signed = []  # thinking followed by no assistant output belongs to no turn
    return out


def _message(item: dict[str, Any], i: int) -> dict[str, Any]:
    role = item.get("role")
    if role not in ("user", "assistant", "system", "developer"):
        raise InvalidRequest(f"input[{i}].role must be user, assistant, system or developer",
                             param=f"input[{i}].role", code="invalid_value")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": "system" if role == "developer" else role, "content": content}
    if not isinstance(content, list):
        raise InvalidRequest(f"input[{i}].content must be a string or an array", param=f"input[{i}].content",
                             code="invalid_type")
    parts: list[dict[str, Any]] = []
    for j, p in enumerate(content):
        kind = p.get("type") if isinstance(p, dict) else None
        if kind in ("input_text", "output_text", "text") and isinstance(p.get("text"), str):
            parts.append({"type": "text", "text": p["text"]})
        elif kind == "refusal":
            parts.append({"type": "text", "text": str(p.get("refusal", ""))})
        elif kind == "input_image" and isinstance(p.get("image_url"), str):
            parts.append({"type": "image_url", "image_url": {"url": p["image_url"],
                                                             "detail": p.get("detail") or "auto"}})
        else:
            raise InvalidRequest(f"input[{i}].content[{j}]: unsupported content part",
                                 param=f"input[{i}].content[{j}]", code="invalid_value")
    if role == "assistant":  # one answer cut into parts: its text joined as it was
        return {"role": role, "content": "".join(p.get("text", "") for p in parts)}
    if role != "user":  # only user turns take images; instruction blocks stay apart as paragraphs
        return {"role": "system", "content": "\n\n".join(p.get("text", "") for p in parts)}
    return {"role": "user", "content": parts}


def _add_call(out: list[dict[str, Any]], item: dict[str, Any], i: int) -> None:
    if item.get("type") == "custom_tool_call":
        args = orjson.dumps({CUSTOM_ARG: _str(item, "input", i, empty=True)}).decode()
    else:
        args = _str(item, "arguments", i, empty=True) or "{}"
    call = {"id": _str(item, "call_id", i), "type": "function",
            "function": {"name": chat_name(item.get("namespace"), _str(item, "name", i)), "arguments": args}}
    last = out[-1] if out else None
    # consecutive calls are one assistant turn with parallel tool calls, as chat upstreams expect
    if last is not None and last["role"] == "assistant" and "tool_calls" in last:
        last["tool_calls"].append(call)
    elif last is not None and last["role"] == "assistant" and isinstance(last.get("content"), str):
        last["tool_calls"] = [call]
    else:
        out.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _output_text(v: Any, i: int) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, list):
        return "".join(p.get("text", "") for p in v if isinstance(p, dict) and isinstance(p.get("text"), str))
    raise InvalidRequest(f"input[{i}].output must be a string or an array", param=f"input[{i}].output",
                         code="invalid_type")


def _str(item: dict[str, Any], name: str, i: int, *, empty: bool = False) -> str:
    v = item.get(name)
    if not isinstance(v, str) or (not v and not empty):
        raise InvalidRequest(f"input[{i}].{name} must be a string", param=f"input[{i}].{name}",
                             code="invalid_type")
    return v


def _effort(v: Any) -> str | None:
    if v is None:
        return None
    if not isinstance(v, dict):
        raise InvalidRequest("'reasoning' must be an object", param="reasoning", code="invalid_type")
    effort = v.get("effort")
    if effort is None or effort == "none":
        return None
    if effort not in _EFFORT:
        raise InvalidRequest("'reasoning.effort' must be one of none, minimal, low, medium, high, xhigh",
                             param="reasoning.effort", code="invalid_value")
    return _EFFORT[effort]


def _response_format(v: Any) -> dict[str, Any] | None:
    fmt = v.get("format") if isinstance(v, dict) else None
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return None
    if fmt.get("type") == "json_object":
        return {"type": "json_object"}
    if fmt.get("type") == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": schema}
    raise InvalidRequest("'text.format.type' must be text, json_object or json_schema", param="text.format.type",
                         code="invalid_value")
