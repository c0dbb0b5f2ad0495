"""Pure translation of an OpenAI chat request body into a Gemini `generateContent` body.

Anything Gemini cannot express is a 400 (`InvalidRequest`) naming the offending `param`; replies and
errors travel the other way in `response.py`.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from sluice.errors import InvalidRequest
from sluice.providers.gemini import wire

JSON = dict[str, Any]
_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+)((?:;[\w.+-]+=[^;,]*)*);base64,(.*)$", re.DOTALL)


def to_gemini_request(body: JSON) -> JSON:
    """An OpenAI chat request body -> a Gemini `generateContent` body (same for the stream endpoint)."""
    if body.get("logit_bias"):
        raise InvalidRequest("logit_bias is not supported by Gemini models", param="logit_bias")
    system, contents = _contents(body.get("messages") or [])
    out: JSON = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": system}
    tools = _tools(body.get("tools"))
    if tools:
        out["tools"] = tools
    choice = body.get("tool_choice")
    if choice is not None:
        out["toolConfig"] = {"functionCallingConfig": _tool_choice(choice)}
    config = _generation_config(body)
    if config:
        out["generationConfig"] = config
    return out


def _contents(messages: list[Any]) -> tuple[list[JSON], list[JSON]]:
    system: list[JSON] = []
    contents: list[JSON] = []
    call_names: dict[str, str] = {}
    for i, msg in enumerate(messages):
        role = msg.get("role")
        if role in ("system", "developer"):
            system.extend({"text": t} for t in _texts(msg.get("content"), f"messages[{i}].content") if t)
        elif role == "user":
            parts = _user_parts(msg.get("content"), i)
            if parts:
                contents.append({"role": "user", "parts": parts})
        elif role == "assistant":
            parts = _assistant_parts(msg, i, call_names)
            if parts:
                contents.append({"role": "model", "parts": parts})
        elif role == "tool":
            part = _tool_result(msg, i, call_names)
            last = contents[-1] if contents else None
            if last is not None and last.get("_tool_run"):
                last["parts"].append(part)
            else:
                contents.append({"role": "user", "parts": [part], "_tool_run": True})
        else:
            raise InvalidRequest(f"messages[{i}].role {role!r} is not supported for Gemini models",
                                 param=f"messages[{i}].role")
    for c in contents:
        c.pop("_tool_run", None)
    return system, contents


def _texts(content: Any, where: str) -> list[str]:
    """Text of a system/assistant/tool content: a string or an array of text parts."""
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        raise InvalidRequest(f"{where} must be a string or an array of content parts", param=where)
    out: list[str] = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in ("text", "refusal"):
            raise InvalidRequest(f"{where}[{j}] must be a text part here", param=f"{where}[{j}]")
        text = part.get("text") if part.get("type") == "text" else part.get("refusal")
        if not isinstance(text, str):
            raise InvalidRequest(f"{where}[{j}] has no string text", param=f"{where}[{j}]")
        out.append(text)
    return out


def _user_parts(content: Any, i: int) -> list[JSON]:
    where = f"messages[{i}].content"
    if isinstance(content, str):
        return [{"text": content}]
    if not isinstance(content, list):
        raise InvalidRequest(f"{where} must be a string or an array of content parts", param=where)
    parts: list[JSON] = []
    for j, part in enumerate(content):
        at = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append({"text": part["text"]})
        elif kind == "image_url":
            parts.append(_image(part.get("image_url"), at))
        elif kind == "input_audio":
            parts.append(_audio(part.get("input_audio"), at))
        else:
            raise InvalidRequest(f"{at}: content part type {kind!r} is not supported for Gemini models",
                                 param=f"{at}.type")
    return parts


def _image(image: Any, at: str) -> JSON:
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise InvalidRequest(f"{at}.image_url.url must be a string", param=f"{at}.image_url.url")
    m = _DATA_URL.match(url)
    if m is None:
        if url.startswith("data:"):
            raise InvalidRequest(f"{at}: only base64 data: URLs are supported", param=f"{at}.image_url.url")
        raise InvalidRequest(f"{at}: Gemini models need images inline as base64 data: URLs; remote image "
                             "URLs are not fetched", param=f"{at}.image_url.url")
    return {"inlineData": {"mimeType": m.group(1), "data": m.group(3)}}


def _audio(audio: Any, at: str) -> JSON:
    if not isinstance(audio, dict) or not isinstance(audio.get("data"), str):
        raise InvalidRequest(f"{at}.input_audio must have base64 'data'", param=f"{at}.input_audio.data")
    mime = wire.AUDIO_MIME.get(audio.get("format"))  # type: ignore[arg-type]
    if mime is None:
        raise InvalidRequest(f"{at}.input_audio.format must be 'wav' or 'mp3'",
                             param=f"{at}.input_audio.format")
    return {"inlineData": {"mimeType": mime, "data": audio["data"]}}


def _assistant_parts(msg: JSON, i: int, call_names: dict[str, str]) -> list[JSON]:
    parts: list[JSON] = [{"text": t} for t in _texts(msg.get("content"), f"messages[{i}].content") if t]
    calls = msg.get("tool_calls") or []
    if not isinstance(calls, list):
        raise InvalidRequest(f"messages[{i}].tool_calls must be an array", param=f"messages[{i}].tool_calls")
    for j, call in enumerate(calls):
        at = f"messages[{i}].tool_calls[{j}]"
        fn = call.get("function") if isinstance(call, dict) else None
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str) or not name:
            raise InvalidRequest(f"{at}.function.name must be a non-empty string",
                                 param=f"{at}.function.name")
        args = _parse_arguments(fn.get("arguments"), f"{at}.function.arguments")  # type: ignore[union-attr]
        call_id = call.get("id")
        if isinstance(call_id, str):
            call_names[call_id] = name
        parts.append({"functionCall": {"name": name, "args": args}})
    return parts


def _parse_arguments(raw: Any, where: str) -> JSON:
    if raw is None or raw == "":
        return {}
    if isinstance(raw, dict):
        return raw
    if not isinstance(raw, str):
        raise InvalidRequest(f"{where} must be a JSON string", param=where)
    try:
        args = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest(f"{where} is not valid JSON", param=where) from None
    if not isinstance(args, dict):
        raise InvalidRequest(f"{where} must encode a JSON object", param=where)
    return args


def _tool_result(msg: JSON, i: int, call_names: dict[str, str]) -> JSON:
    call_id = msg.get("tool_call_id")
    name = call_names.get(call_id) if isinstance(call_id, str) else None
    if name is None:
        raise InvalidRequest(f"messages[{i}].tool_call_id {call_id!r} does not match any earlier assistant "
                             "tool call", param=f"messages[{i}].tool_call_id")
    output = "".join(_texts(msg.get("content"), f"messages[{i}].content"))
    return {"functionResponse": {"name": name, "response": {"output": output}}}


def _tools(tools: Any) -> list[JSON]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise InvalidRequest("tools must be an array", param="tools")
    decls: list[JSON] = []
    for k, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(fn, dict):
            raise InvalidRequest(f"tools[{k}]: only function tools are supported for Gemini models",
                                 param=f"tools[{k}].type")
        if not isinstance(fn.get("name"), str) or not fn["name"]:
            raise InvalidRequest(f"tools[{k}].function.name must be a non-empty string",
                                 param=f"tools[{k}].function.name")
        decl: JSON = {"name": fn["name"]}
        if isinstance(fn.get("description"), str):
            decl["description"] = fn["description"]
        if isinstance(fn.get("parameters"), dict):
            decl["parametersJsonSchema"] = fn["parameters"]
        decls.append(decl)
    return [{"functionDeclarations": decls}] if decls else []


def _tool_choice(choice: Any) -> JSON:
    modes = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
    if isinstance(choice, str) and choice in modes:
        return {"mode": modes[choice]}
    fn = choice.get("function") if isinstance(choice, dict) else None
    name = fn.get("name") if isinstance(fn, dict) else None
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(name, str) and name:
        return {"mode": "ANY", "allowedFunctionNames": [name]}
    raise InvalidRequest("tool_choice must be 'auto', 'none', 'required' or a named function",
                         param="tool_choice")


_SIMPLE = (("temperature", "temperature"), ("top_p", "topP"), ("n", "candidateCount"), ("seed", "seed"),
           ("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty"),
           ("logprobs", "responseLogprobs"), ("top_logprobs", "logprobs"))


def _generation_config(body: JSON) -> JSON:
    config: JSON = {name: body[key] for key, name in _SIMPLE if body.get(key) is not None}
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    if max_tokens is not None:
        config["maxOutputTokens"] = max_tokens
    stop = _stop(body.get("stop"))
    if stop:
        config["stopSequences"] = stop
    config.update(_response_format(body.get("response_format")))
    effort = body.get("reasoning_effort")
    if effort is not None:
        budget = wire.THINKING_BUDGET.get(effort) if isinstance(effort, str) else None
        if budget is None:
            raise InvalidRequest("reasoning_effort must be 'low', 'medium' or 'high' for Gemini models",
                                 param="reasoning_effort")
        config["thinkingConfig"] = {"thinkingBudget": budget, "includeThoughts": True}
    return config


def _stop(stop: Any) -> list[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise InvalidRequest("stop must be a string or an array of strings", param="stop")
    if len(stop) > wire.MAX_STOP_SEQUENCES:
        raise InvalidRequest(f"stop may hold at most {wire.MAX_STOP_SEQUENCES} sequences", param="stop")
    return list(stop)


def _response_format(fmt: Any) -> JSON:
    if fmt is None:
        return {}
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return {}
    if kind == "json_object":
        return {"responseMimeType": "application/json"}
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise InvalidRequest("response_format.json_schema.schema must be an object",
                                 param="response_format.json_schema.schema")
        return {"responseMimeType": "application/json", "responseJsonSchema": schema}
    raise InvalidRequest("response_format.type must be 'text', 'json_object' or 'json_schema'",
                         param="response_format.type")
