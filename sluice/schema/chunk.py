"""What an OpenAI `chat.completion.chunk` says that the relay must know (usage, finish, an error, its text),
and which chunks can pass without being parsed: most carry only a content delta, seen from their raw bytes.

A chunk passes unparsed (`plain`) when its bytes show none of what must be read at once. The check is sound
for any valid JSON: inside a JSON string every `"` is escaped, so a key spelled literally shows as `"key"`
in the bytes, and a key spelled with `\\u` escapes (the only escapes that make letters) never passes. Its
text is then read only if the stream ends without usage (`payload_text`), with the same reading as a
parsed chunk's (`text_of`).
"""

from __future__ import annotations

from typing import Any

import orjson

_USAGE = b'"usage"'
_FINISH = b'"finish_reason"'
# OpenAI sends `"usage":null` on every chunk but the last when asked for usage, `"finish_reason":null` on
# every chunk but the one that finishes; a null is what "not there" means to a parsed read too
_USAGE_NULL, _USAGE_NULL_SPACED = b'"usage":null', b'"usage": null'
_FINISH_NULL, _FINISH_NULL_SPACED = b'"finish_reason":null', b'"finish_reason": null'
_TEXT_KEYS = ("content", "reasoning_content", "reasoning", "refusal")


def plain(payload: bytes) -> bool:
    """True when the chunk can pass unparsed: a JSON object (by its ends: one whose inside is broken goes
    to the client as the upstream sent it) without a top-level `error`, with every `usage` and every
    `finish_reason` null. False for anything that needs a parse to tell (a false False costs a parse)."""
    if payload[:1] != b"{" or payload[-1:] != b"}" or b"\\u" in payload or b'"error"' in payload:
        return False
    n = payload.count(_USAGE)
    if n and n != payload.count(_USAGE_NULL) + payload.count(_USAGE_NULL_SPACED):
        return False
    n = payload.count(_FINISH)
    return not n or n == payload.count(_FINISH_NULL) + payload.count(_FINISH_NULL_SPACED)


def finished(obj: dict[str, Any]) -> bool:
    """A parsed chunk finishes a choice (any truthy `finish_reason`)."""
    return any(isinstance(c, dict) and bool(c.get("finish_reason")) for c in obj.get("choices") or ())


def text_of(obj: dict[str, Any]) -> str:
    """The characters a parsed chunk adds, every choice in order: a legacy completion's `text`, then its
    delta's content, reasoning, refusal and tool calls' names and arguments."""
    text = ""
    for c in obj.get("choices") or ():
        if not isinstance(c, dict):
            continue
        if isinstance(c.get("text"), str):  # a legacy completion
            text += c["text"]
        d = c.get("delta")
        if isinstance(d, dict):
            text += delta_text(d)
    return text


def delta_text(d: dict[str, Any]) -> str:
    """The text of a delta (or a whole reply's message): content, reasoning, refusal, tool calls."""
    out = ""
    for k in _TEXT_KEYS:
        v = d.get(k)
        if isinstance(v, str):
            out += v
    calls = d.get("tool_calls")
    if isinstance(calls, list):
        for tc in calls:
            fn = tc.get("function") if isinstance(tc, dict) else None
            if isinstance(fn, dict):
                for k in ("name", "arguments"):
                    v = fn.get(k)
                    if isinstance(v, str):
                        out += v
    return out


def payload_text(payload: bytes) -> str:
    """The text of a chunk that passed unparsed; "" when its bytes are no JSON object after all (the
    client got them as they were; there is no text to count in them)."""
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return ""
    return text_of(obj) if isinstance(obj, dict) else ""
