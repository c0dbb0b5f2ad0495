"""Pure translation between OpenAI chat and Anthropic Messages: request body, reply body, errors.

No I/O here: the adapter feeds these functions dicts and bytes and sends what they return.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from sluice.dialects.anthropic_messages import wire
from sluice.errors import InvalidRequest, UpstreamError, error_for_upstream_status
from sluice.schema import thinking
from sluice.schema.usage import Usage, count
from sluice.upstream import retry_after_seconds

_UNSUPPORTED_IF_SET = ("logit_bias", "seed", "top_logprobs")
_ZERO_OK = ("presence_penalty", "frequency_penalty")


def to_messages_request(body: Mapping[str, Any], *, upstream_model: str, max_tokens_default: int,
                        stream: bool) -> dict[str, Any]:
    """OpenAI chat request body -> Anthropic Messages request body; InvalidRequest (400) if impossible."""
    _reject_unsupported(body)
    effort = body.get("reasoning_effort")
    # signed thinking goes back only when thinking is on: with it off, Anthropic refuses it in a prefill
    system, messages = _convert_messages(body.get("messages") or [], keep_thinking=effort not in (None, "none"))
    out: dict[str, Any] = {"model": upstream_model, "messages": messages}
    if system:
        out["system"] = system
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or max_tokens_default
    out["max_tokens"] = max_tokens
    temperature = body.get("temperature")
    if temperature is not None:
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
                or not 0 <= temperature <= 1:
            raise InvalidRequest("'temperature' must be between 0 and 1 for this model", param="temperature",
                                 code="invalid_value")
        out["temperature"] = temperature
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    stop = _stop_sequences(body.get("stop"))
    if stop:
        out["stop_sequences"] = stop
    _add_tools(body, out)
    user = body.get("user")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    _add_thinking(effort, out)
    if stream:
        out["stream"] = True
    return out


def _reject_unsupported(body: Mapping[str, Any]) -> None:
    n = body.get("n")
    if n is not None and n != 1:
        raise InvalidRequest("'n' greater than 1 is not supported by this model", param="n",
                             code="unsupported_parameter")
    if body.get("logprobs"):
        raise InvalidRequest("'logprobs' is not supported by this model", param="logprobs",
                             code="unsupported_parameter")
    for name in _UNSUPPORTED_IF_SET:
        if body.get(name) not in (None, {}):
            raise InvalidRequest(f"'{name}' is not supported by this model", param=name,
                                 code="unsupported_parameter")
    for name in _ZERO_OK:
        if body.get(name) not in (None, 0):
            raise InvalidRequest(f"'{name}' is not supported by this model", param=name,
                                 code="unsupported_parameter")
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
        raise InvalidRequest("'response_format' other than text is not supported by this model",
                             param="response_format", code="unsupported_parameter")


def _stop_sequences(stop: Any) -> list[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop]
    if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) for s in stop):
        raise InvalidRequest("'stop' must be a string or an array of at most 4 strings", param="stop",
                             code="invalid_value")
    return list(stop)


def _add_tools(body: Mapping[str, Any], out: dict[str, Any]) -> None:
    tools = body.get("tools")
    if not tools:
        return
    if not isinstance(tools, list):
        raise InvalidRequest("'tools' must be an array", param="tools", code="invalid_type")
    converted = []
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or tool.get("type", "function") != "function" \
                or not isinstance(fn.get("name"), str):
            raise InvalidRequest("only function tools with a name are supported", param=f"tools[{i}]")
        entry: dict[str, Any] = {"name": fn["name"]}
        if fn.get("description"):
            entry["description"] = fn["description"]
        entry["input_schema"] = fn.get("parameters") or {"type": "object", "properties": {}}
        converted.append(entry)
    out["tools"] = converted
    choice = _tool_choice(body.get("tool_choice"))
    if body.get("parallel_tool_calls") is False and (choice is None or choice["type"] != "none"):
        choice = choice or {"type": "auto"}
        choice["disable_parallel_tool_use"] = True
    if choice is not None:
        out["tool_choice"] = choice


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    simple = {"auto": "auto", "required": "any", "none": "none"}
    if isinstance(choice, str) and choice in simple:
        return {"type": simple[choice]}
    if isinstance(choice, dict) and choice.get("type") == "function":
        fn = choice.get("function")
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            return {"type": "tool", "name": fn["name"]}
    raise InvalidRequest("'tool_choice' must be auto, required, none or a named function",
                         param="tool_choice", code="invalid_value")


def _add_thinking(effort: Any, out: dict[str, Any]) -> None:
    if effort is None or effort == "none":
        return
    budget = wire.THINKING_BUDGETS.get(effort) if isinstance(effort, str) else None
    if budget is None:
        raise InvalidRequest("'reasoning_effort' must be one of low, medium, high", param="reasoning_effort",
                             code="invalid_value")
    out["thinking"] = {"type": "enabled", "budget_tokens": budget}
    if out["max_tokens"] <= budget:
        # the budget counts against max_tokens: keep the caller's limit for the visible answer
        out["max_tokens"] = budget + out["max_tokens"]


def _convert_messages(messages: list[Any], *, keep_thinking: bool) -> tuple[str, list[dict[str, Any]]]:
    system: list[str] = []
    out: list[dict[str, Any]] = []
    merge_into_tool_turn = False  # the last user turn holds tool_results: later tool/user parts join it
    for i, m in enumerate(messages):
        role = m.get("role")
        if role in ("system", "developer"):
            system.append(_text_of(m.get("content"), f"messages[{i}].content"))
        elif role == "tool":
            block = {"type": "tool_result", "tool_use_id": m.get("tool_call_id") or "",
                     "content": _text_of(m.get("content"), f"messages[{i}].content")}
            if merge_into_tool_turn:
                out[-1]["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
                merge_into_tool_turn = True
        elif role == "user":
            blocks = _user_blocks(m.get("content"), i)
            if merge_into_tool_turn:
                out[-1]["content"].extend(blocks)
            else:
                out.append({"role": "user", "content": blocks})
            merge_into_tool_turn = False
        elif role == "assistant":
            blocks = _assistant_blocks(m, i, keep_thinking)
            if blocks:
                out.append({"role": "assistant", "content": blocks})
            merge_into_tool_turn = False
        else:
            raise InvalidRequest(f"unsupported message role {role!r}", param=f"messages[{i}].role",
                                 code="invalid_value")
    return "\n\n".join(s for s in system if s), out


def _text_of(content: Any, param: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") not in ("text", "refusal"):
                raise InvalidRequest("only text parts are allowed here", param=f"{param}[{j}]")
            parts.append(str(part.get("text") or part.get("refusal") or ""))
        return "".join(parts)
    raise InvalidRequest("content must be a string or an array of parts", param=param, code="invalid_type")


def _user_blocks(content: Any, i: int) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise InvalidRequest("content must be a string or an array of parts", param=f"messages[{i}].content",
                             code="invalid_type")
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        param = f"messages[{i}].content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            blocks.append({"type": "text", "text": part.get("text") or ""})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            blocks.append({"type": "image", "source": _image_source(url, f"{param}.image_url.url")})
        elif kind == "file":
            blocks.append(_document(part.get("file"), param))
        elif kind == "input_audio":
            raise InvalidRequest("audio input is not supported by this model", param=param,
                                 code="unsupported_content")
        else:
            raise InvalidRequest(f"unsupported content part type {kind!r}", param=param, code="invalid_value")
    return blocks


def _image_source(url: Any, param: str) -> dict[str, Any]:
    if isinstance(url, str) and url.startswith("data:"):
        media_type, data = _parse_data_url(url, param)
        return {"type": "base64", "media_type": media_type, "data": data}
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        return {"type": "url", "url": url}
    raise InvalidRequest("image URL must be a data: URL or an http(s) URL", param=param, code="invalid_value")


def _parse_data_url(url: str, param: str) -> tuple[str, str]:
    head, sep, data = url[5:].partition(",")
    media_type, _, encoding = head.partition(";")
    if not sep or encoding != "base64" or not media_type:
        raise InvalidRequest("data URL must be data:<media type>;base64,<data>", param=param,
                             code="invalid_value")
    return media_type, data


def _document(file: Any, param: str) -> dict[str, Any]:
    data = file.get("file_data") if isinstance(file, dict) else None
    if not isinstance(data, str):
        raise InvalidRequest("only inline file_data is supported for files", param=f"{param}.file")
    media_type, payload = _parse_data_url(data, f"{param}.file.file_data")
    return {"type": "document", "source": {"type": "base64", "media_type": media_type, "data": payload}}


def _assistant_blocks(m: Mapping[str, Any], i: int, keep_thinking: bool) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    signed = m.get(thinking.FIELD)
    if signed is not None:  # checked even when dropped: a malformed field is the client's error either way
        checked = thinking.checked_blocks(signed, f"messages[{i}].{thinking.FIELD}")
        if keep_thinking:
            blocks.extend(checked)  # first, in order: Anthropic wants a tool turn to start with its thinking
    text = _text_of(m.get("content"), f"messages[{i}].content")
    if text:
        blocks.append({"type": "text", "text": text})
    for j, call in enumerate(m.get("tool_calls") or []):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict):
            raise InvalidRequest("tool call must have a function", param=f"messages[{i}].tool_calls[{j}]")
        param = f"messages[{i}].tool_calls[{j}].function.arguments"
        raw = fn.get("arguments") or "{}"
        try:
            args = orjson.loads(raw)
        except (orjson.JSONDecodeError, TypeError):
            raise InvalidRequest("tool call arguments are not valid JSON", param=param,
                                 code="invalid_value") from None
        if not isinstance(args, dict):
            raise InvalidRequest("tool call arguments must be a JSON object", param=param,
                                 code="invalid_value")
        blocks.append({"type": "tool_use", "id": call.get("id") or "", "name": fn.get("name") or "",
                       "input": args})
    return blocks


def usage_from(u: Any) -> Usage | None:
    """Anthropic usage -> Usage; the one reader of Anthropic usage, translated and passed-through alike.

    input_tokens excludes cache reads and writes, so they are added back into prompt_tokens; cache
    writes are split into 5-minute and 1-hour entries (all 5-minute when no breakdown is given). Every
    figure is range-checked (`Usage.checked`); a cache field the upstream left out stays None (not
    reported), distinct from a reported 0.
    """
    if not isinstance(u, dict) or u.get("output_tokens") is None:
        return None
    bad: list[str] = []
    read_raw, write_raw = u.get("cache_read_input_tokens"), u.get("cache_creation_input_tokens")
    read = count("cache_read_input_tokens", read_raw or 0, bad)
    write = count("cache_creation_input_tokens", write_raw or 0, bad)
    inp = count("input_tokens", u.get("input_tokens") or 0, bad)
    detail = u.get("cache_creation")
    write_5m: Any
    write_1h: Any
    if isinstance(detail, dict):
        write_5m = detail.get("ephemeral_5m_input_tokens")
        write_1h = detail.get("ephemeral_1h_input_tokens")
    else:
        write_5m, write_1h = (write if write_raw is not None else None), None
    return Usage.checked(inp + read + write, u["output_tokens"], read if read_raw is not None else None,
                         write_5m=write_5m, write_1h=write_1h, noted=bad)


def from_message(msg: Mapping[str, Any], *, created: int, model: str) -> dict[str, Any]:
    """An Anthropic Message -> an OpenAI chat.completion object."""
    texts: list[str] = []
    thoughts: list[str] = []
    signed: list[dict[str, str]] = []
    calls: list[dict[str, Any]] = []
    for block in msg.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind in ("thinking", "redacted_thinking"):
            signed.append(signed_block(block))
            if kind == "thinking":
                thoughts.append(block.get("thinking") or "")
        elif kind == "tool_use":
            args = block.get("input")
            calls.append({"id": block.get("id"), "type": "function", "function": {
                "name": block.get("name"), "arguments": orjson.dumps(args).decode() if args else "{}"}})
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None,
                               "refusal": None}
    if calls:
        message["tool_calls"] = calls
    if thoughts:
        message["reasoning_content"] = "".join(thoughts)
    if signed:
        message[thinking.FIELD] = signed
    out: dict[str, Any] = {
        "id": "chatcmpl-" + str(msg.get("id") or ""), "object": "chat.completion", "created": created,
        "model": msg.get("model") or model,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": finish_for(msg.get("stop_reason"), bool(calls))}],
    }
    usage = usage_from(msg.get("usage"))
    if usage is not None:
        out["usage"] = usage.to_openai()
    return out


def signed_block(block: Mapping[str, Any]) -> dict[str, str]:
    """An upstream thinking or redacted_thinking block as the canonical `thinking_blocks` entry."""
    if block.get("type") == "redacted_thinking":
        return {"type": "redacted_thinking", "data": str(block.get("data") or "")}
    return {"type": "thinking", "thinking": str(block.get("thinking") or ""),
            "signature": str(block.get("signature") or "")}


def finish_for(stop_reason: Any, called_tools: bool) -> str:
    """The OpenAI finish_reason; `tool_calls` whenever tools were called and the turn ended normally."""
    reason = wire.finish_reason(stop_reason)
    return "tool_calls" if called_tools and reason == "stop" else reason


_TYPE_STATUS = {"overloaded_error": 529, "rate_limit_error": 429, "api_error": 500,
                "invalid_request_error": 400, "authentication_error": 401, "permission_error": 403,
                "not_found_error": 404, "request_too_large": 413}


def error_from_response(status: int, body: bytes, headers: Mapping[str, str]) -> UpstreamError:
    """A non-200 Anthropic reply -> the sluice error the client sees (529 -> 503, 429 keeps retry-after)."""
    kind, message = _error_fields(body)
    return _mapped(status, kind, message or f"the upstream answered {status}", retry_after_seconds(headers))


def error_from_event(data: Mapping[str, Any]) -> UpstreamError:
    """A mid-stream `error` event -> the sluice error, with the status its type would have had."""
    err = data.get("error")
    kind = err.get("type") if isinstance(err, dict) else None
    message = err.get("message") if isinstance(err, dict) else None
    status = _TYPE_STATUS.get(kind, 500) if isinstance(kind, str) else 500
    text = message if isinstance(message, str) and message else "the upstream reported an error"
    return _mapped(status, kind if isinstance(kind, str) else None, text, None)


def _error_fields(body: bytes) -> tuple[str | None, str | None]:
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None, body[:300].decode("utf-8", "replace") or None
    err = data.get("error") if isinstance(data, dict) else None
    if not isinstance(err, dict):
        return None, None
    kind, message = err.get("type"), err.get("message")
    return (kind if isinstance(kind, str) else None), (message if isinstance(message, str) else None)


def _mapped(status: int, kind: str | None, message: str, retry_after: float | None) -> UpstreamError:
    if kind == "overloaded_error":
        status = 529
    elif kind == "rate_limit_error":
        status = 429
    if 400 <= status < 500 and status != 429:
        code = None if kind in (None, "invalid_request_error") else kind
        return error_for_upstream_status(status, message, type="invalid_request_error", code=code)
    return error_for_upstream_status(status, message, retry_after=retry_after)
