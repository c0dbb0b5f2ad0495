"""Pure translation of what Gemini sends back: replies, usage and error bodies, into OpenAI terms.

Shared by the plain path (`to_openai_completion`) and the stream state machine (usage, tool calls,
error mapping). No I/O.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from sluice.errors import UpstreamError, error_for_upstream_status
from sluice.providers.gemini import wire
from sluice.schema.usage import Usage, count
from sluice.upstream import retry_after_seconds

JSON = dict[str, Any]
IdFactory = Callable[[], str]
_DELAY = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


def usage_from(meta: Any) -> Usage | None:
    """Gemini `usageMetadata` -> Usage; thoughts count as completion (and reasoning) tokens."""
    if not isinstance(meta, dict):
        return None
    bad: list[str] = []
    candidates = count("candidatesTokenCount", meta.get("candidatesTokenCount") or 0, bad)
    thoughts = count("thoughtsTokenCount", meta.get("thoughtsTokenCount") or 0, bad)
    # a cachedContentTokenCount left out is "not reported", which is not "no cache hit"
    return Usage.checked(meta.get("promptTokenCount") or 0, candidates + thoughts,
                         meta.get("cachedContentTokenCount"), thoughts, noted=bad)


def tool_call(part: JSON, new_id: IdFactory) -> JSON:
    """A whole `functionCall` part -> one OpenAI tool call (`arguments` a compact JSON string)."""
    fc = part["functionCall"]
    args = fc.get("args")
    arguments = orjson.dumps(args).decode() if isinstance(args, dict) else "{}"
    name = fc.get("name") if isinstance(fc.get("name"), str) else ""
    return {"id": new_id(), "type": "function", "function": {"name": name, "arguments": arguments}}


def part_kind(part: Any) -> str | None:
    """'call', 'thought', 'text' or None (a part Sluice does not surface)."""
    if not isinstance(part, dict):
        return None
    if isinstance(part.get("functionCall"), dict):
        return "call"
    if isinstance(part.get("text"), str):
        return "thought" if part.get("thought") is True else "text"
    return None


def candidate_parts(cand: JSON) -> list[Any]:
    content = cand.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    return parts if isinstance(parts, list) else []


def completion_id(resp: JSON) -> str:
    rid = resp.get("responseId")
    return "chatcmpl-" + (rid if isinstance(rid, str) and rid else secrets.token_hex(12))


def to_openai_completion(resp: JSON, *, upstream_model: str, created: int,
                         new_id: IdFactory = new_call_id) -> JSON:
    """A non-streaming `GenerateContentResponse` -> an OpenAI `chat.completion` object."""
    if isinstance(resp.get("error"), dict):
        raise error_from_body(resp, status=None)
    cands = [c for c in resp.get("candidates") or [] if isinstance(c, dict)]
    if cands:
        choices = [_choice(c, pos, new_id) for pos, c in enumerate(cands)]
        choices.sort(key=lambda c: c["index"])
    elif blocked(resp):
        choices = [{"index": 0, "message": {"role": "assistant", "content": ""}, "logprobs": None,
                    "finish_reason": "content_filter"}]
    else:
        raise UpstreamError("Gemini returned no candidates and no block reason")
    model = resp.get("modelVersion")
    out: JSON = {"id": completion_id(resp), "object": "chat.completion", "created": created,
                 "model": model if isinstance(model, str) and model else upstream_model, "choices": choices}
    usage = usage_from(resp.get("usageMetadata"))
    if usage is not None:
        out["usage"] = usage.to_openai()
    return out


def blocked(resp: JSON) -> bool:
    fb = resp.get("promptFeedback")
    return isinstance(fb, dict) and bool(fb.get("blockReason"))


def _choice(cand: JSON, pos: int, new_id: IdFactory) -> JSON:
    text: list[str] = []
    thoughts: list[str] = []
    calls: list[JSON] = []
    for part in candidate_parts(cand):
        kind = part_kind(part)
        if kind == "text":
            text.append(part["text"])
        elif kind == "thought":
            thoughts.append(part["text"])
        elif kind == "call":
            calls.append(tool_call(part, new_id))
    message: JSON = {"role": "assistant", "content": "".join(text) if text or not calls else None}
    if thoughts:
        message["reasoning_content"] = "".join(thoughts)
    if calls:
        message["tool_calls"] = calls
    reason = cand.get("finishReason")
    finish = wire.finish_reason(reason if isinstance(reason, str) else "STOP", has_tool_calls=bool(calls))
    index = cand.get("index")
    return {"index": index if isinstance(index, int) else pos, "message": message, "logprobs": None,
            "finish_reason": finish}


def completion_text(body: JSON) -> str:
    """Every character the reply adds (content, reasoning, tool arguments), for usage estimates."""
    out: list[str] = []
    for choice in body.get("choices", []):
        msg = choice.get("message", {})
        out.extend(v for v in (msg.get("reasoning_content"), msg.get("content")) if isinstance(v, str))
        out.extend(c["function"]["name"] + c["function"]["arguments"] for c in msg.get("tool_calls", []))
    return "".join(out)


# ---------------------------------------------------------------------------------------------------
# (c) Gemini error bodies -> sluice errors


def error_from_body(body: bytes | JSON, *, status: int | None,
                    headers: Mapping[str, str] | None = None) -> UpstreamError:
    """`{"error":{"code":int,"message","status"}}` (or anything else) -> the mapped `UpstreamError`.

    `status` is the HTTP status when known (None for an error event inside a 200 stream). The
    envelope's `code` never carries Gemini's integer.
    """
    err = _error_object(body)
    rpc = err.get("status") if isinstance(err.get("status"), str) else None
    message = err.get("message") if isinstance(err.get("message"), str) and err.get("message") else None
    http = wire.STATUS_HTTP.get(rpc or "")
    if http is None:
        code = err.get("code")
        http = status or (code if isinstance(code, int) and 400 <= code < 600 else 502)
    if http == 200:  # an error object inside a successful reply
        http = 502
    if message is None:
        message = f"Gemini answered {rpc or http} without an error message"
    retry_after = retry_after_seconds(headers) if headers is not None else None
    if retry_after is None and http in (429, 503):
        retry_after = _retry_delay(err.get("details"))
    return error_for_upstream_status(http, message, retry_after=retry_after)


def _error_object(body: bytes | JSON) -> JSON:
    if isinstance(body, bytes):
        try:
            parsed: Any = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, list) and parsed:  # the non-SSE stream endpoint wraps replies in an array
            parsed = parsed[0]
        body = parsed if isinstance(parsed, dict) else {}
    err = body.get("error")
    return err if isinstance(err, dict) else {}


def _retry_delay(details: Any) -> float | None:
    """`google.rpc.RetryInfo.retryDelay` ("37s") from the error details, when present."""
    for d in details if isinstance(details, list) else []:
        delay = d.get("retryDelay") if isinstance(d, dict) else None
        m = _DELAY.match(delay) if isinstance(delay, str) else None
        if m:
            return float(m.group(1))
    return None
