"""The inbound `POST /v1/messages` request side: a checked Anthropic body -> an OpenAI chat request body.

Used when the serving upstream is not Anthropic (an Anthropic upstream gets the body as sent). What
current Claude Code sends translates: `role: system` entries inside `messages` are hoisted in order
after the top-level `system`; thinking and `output_config.effort` become `reasoning_effort`;
`cache_control`, `context_management` and thinking blocks have no OpenAI field and are dropped, as are
server tools (typed tools such as `web_search_20250305`) that only Anthropic runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from sluice.dialects.anthropic_messages.checks import check_messages_request
from sluice.errors import InvalidRequest

# output_config.effort -> OpenAI reasoning_effort (OpenAI's scale stops at high)
_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}


def request_to_openai(body: Mapping[str, Any]) -> dict[str, Any]:
    """An Anthropic Messages request body -> an OpenAI chat request body (InvalidRequest if malformed, or
    if it cannot be served by a non-Anthropic upstream)."""
    out, unservable = translate_request(body)
    if unservable is not None:
        raise unservable
    return out


def translate_request(body: Mapping[str, Any]) -> tuple[dict[str, Any], InvalidRequest | None]:
    """(the OpenAI chat body, why only an Anthropic upstream can serve it or None); InvalidRequest if
    malformed. The error is kept, not raised, because an Anthropic target serves the body as sent."""
    check_messages_request(body)
    system: list[str] = []
    if body.get("system"):
        system.append(_plain_text(body["system"], "system"))
    messages: list[dict[str, Any]] = []
    for i, m in enumerate(body["messages"]):
        if m["role"] == "system":
            system.append(_plain_text(m.get("content"), f"messages.{i}.content"))
            continue
        convert = _user_to_openai if m["role"] == "user" else _assistant_to_openai
        messages.extend(convert(m.get("content"), f"messages.{i}.content"))
    system = [s for s in system if s]
    if system:
        messages.insert(0, {"role": "system", "content": "\n\n".join(system)})
    out: dict[str, Any] = {"model": body["model"], "messages": messages, "max_tokens": body["max_tokens"]}
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("stop_sequences"):
        out["stop"] = list(body["stop_sequences"])
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}  # message_delta must carry usage
    user = (body.get("metadata") or {}).get("user_id")
    if user:
        out["user"] = user
    unservable = _tools_to_openai(body, out)
    effort = reasoning_effort(body)
    if effort is not None:
        out["reasoning_effort"] = effort
    return out, unservable


def reasoning_effort(body: Mapping[str, Any]) -> str | None:
    """OpenAI's reasoning_effort for a checked body: output_config.effort first, else the thinking budget."""
    thinking = body.get("thinking") or {}
    if thinking.get("type") == "disabled":
        return None
    effort = (body.get("output_config") or {}).get("effort")
    if effort is not None:
        return _EFFORTS[effort]
    if thinking.get("type") == "enabled":
        budget = thinking["budget_tokens"]
        return "low" if budget <= 1024 else "medium" if budget <= 4096 else "high"
    return None  # adaptive without an effort: the upstream's default


def _plain_text(content: Any, param: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text") or "" for b in content if b.get("type") == "text")
    raise InvalidRequest(f"{param}: must be a string or an array of text blocks", param=param)


def _blocks(content: Any) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def _user_to_openai(content: Any, param: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(_blocks(content)):
        kind = block["type"]
        if kind == "tool_result":
            text = _plain_text(block.get("content") or "", f"{param}.{j}.content")
            out.append({"role": "tool", "tool_call_id": block["tool_use_id"], "content": text})
        elif kind == "text":
            parts.append({"type": "text", "text": block["text"]})
        elif kind in ("image", "document"):
            parts.append(_media_part(block, f"{param}.{j}"))
        else:
            raise InvalidRequest(f"{param}.{j}: unsupported block type {kind!r}", param=f"{param}.{j}")
    if parts:
        simple = len(parts) == 1 and parts[0]["type"] == "text"
        out.append({"role": "user", "content": parts[0]["text"] if simple else parts})
    return out


def _media_part(block: Mapping[str, Any], param: str) -> dict[str, Any]:
    source = block["source"]
    if source["type"] == "base64" and isinstance(source.get("data"), str):
        url = f"data:{source.get('media_type')};base64,{source['data']}"
    elif source["type"] == "url" and block["type"] == "image" and isinstance(source.get("url"), str):
        url = source["url"]
    else:
        raise InvalidRequest(f"{param}.source: unsupported source", param=f"{param}.source")
    if block["type"] == "image":
        return {"type": "image_url", "image_url": {"url": url}}
    return {"type": "file", "file": {"file_data": url}}


def _assistant_to_openai(content: Any, param: str) -> list[dict[str, Any]]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in _blocks(content):
        if block["type"] == "text":
            texts.append(block["text"])
        elif block["type"] == "tool_use":
            calls.append({"id": block["id"], "type": "function", "function": {
                "name": block["name"], "arguments": orjson.dumps(block.get("input") or {}).decode()}})
        # thinking and server-tool blocks have no OpenAI request field: dropped
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        msg["tool_calls"] = calls
    return [msg]


def _tools_to_openai(body: Mapping[str, Any], out: dict[str, Any]) -> InvalidRequest | None:
    # A tool without a type (or `custom`) is the client's own; a typed one is an Anthropic server tool.
    tools = [t for t in body.get("tools") or [] if t.get("type") in (None, "custom")]
    if tools:
        out["tools"] = [{"type": "function", "function": {
            "name": t["name"], "description": t.get("description") or "",
            "parameters": t.get("input_schema") or {"type": "object", "properties": {}}}} for t in tools]
    choice = body.get("tool_choice")
    if choice is None:
        return None
    kind = choice["type"]
    if choice.get("disable_parallel_tool_use") and tools:
        out["parallel_tool_calls"] = False
    if kind != "tool":
        if tools or kind == "none":
            out["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[kind]
        return None
    if any(t["name"] == choice["name"] for t in tools):
        out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
        return None
    return InvalidRequest("tool_choice.name: names no client tool in `tools` (server tools run only on "
                          "Anthropic upstreams)", param="tool_choice.name")
