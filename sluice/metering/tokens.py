"""Token estimation for when an upstream reports no usage: incremental, O(1) memory per stream.

The documented estimator: ASCII text costs one token per four characters (rounded up per reply);
every other character (CJK, emoji, accented letters) one token each, which is close to what BPE
tokenizers give for those scripts.
"""

from __future__ import annotations

from typing import Any


class TokenCounter:
    """Feed text pieces as they pass; `tokens` is the estimate so far. Keeps two integers, not the text."""

    __slots__ = ("_ascii", "_other")

    method = "estimate"

    def __init__(self) -> None:
        self._ascii = 0
        self._other = 0

    def feed(self, text: str) -> None:
        if not text:
            return
        if text.isascii():
            self._ascii += len(text)
        else:
            other = sum(1 for ch in text if ord(ch) > 127)
            self._other += other
            self._ascii += len(text) - other

    @property
    def tokens(self) -> int:
        return (self._ascii + 3) // 4 + self._other


def estimate_text(text: str) -> int:
    c = TokenCounter()
    c.feed(text)
    return c.tokens


def estimate_prompt(messages: list[dict[str, Any]]) -> int:
    """Prompt tokens: message text plus OpenAI's per-message overhead (3) and reply priming (3)."""
    c = TokenCounter()
    n = 3
    for m in messages:
        n += 3
        content = m.get("content")
        if isinstance(content, str):
            c.feed(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict):
                    if isinstance(part.get("text"), str):
                        c.feed(part["text"])
                    elif part.get("type") in ("image_url", "input_audio", "file"):
                        n += 85  # OpenAI's low-detail image cost; a floor for media parts
        for call in m.get("tool_calls") or ():
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict):
                c.feed(str(fn.get("name") or ""))
                c.feed(str(fn.get("arguments") or ""))
    return n + c.tokens
