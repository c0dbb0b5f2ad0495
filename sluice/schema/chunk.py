"""The text an OpenAI `chat.completion.chunk` (or a whole reply's message) adds, for counting it when the
upstream reports no usage: read from the parsed chunk (`text_of`) or, for a chunk whose text was left unread
as it passed, from its payload when the count is asked for (`payload_text`)."""

from __future__ import annotations

from typing import Any

import orjson

_TEXT_KEYS = ("content", "reasoning_content", "reasoning", "refusal")


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
