"""Token usage in OpenAI's terms. "Not reported" is None, never zero."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    # prompt-cache writes (Anthropic), part of prompt_tokens: 5-minute and 1-hour entries
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def from_openai(cls, d: Any) -> Usage | None:
        """Read an OpenAI `usage` object; None when absent or malformed."""
        if not isinstance(d, dict):
            return None
        p, c = d.get("prompt_tokens"), d.get("completion_tokens")
        if not isinstance(p, int) or not isinstance(c, int):
            return None
        ptd, ctd = d.get("prompt_tokens_details"), d.get("completion_tokens_details")
        cached = ptd.get("cached_tokens") if isinstance(ptd, dict) else None
        reasoning = ctd.get("reasoning_tokens") if isinstance(ctd, dict) else None
        return cls(p, c, cached if isinstance(cached, int) else 0, reasoning if isinstance(reasoning, int) else 0)

    def to_openai(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
        }
