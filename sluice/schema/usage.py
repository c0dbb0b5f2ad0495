"""Token usage in OpenAI's terms. "Not reported" is None, never zero.

Prompt-cache reads and writes are part of `prompt_tokens` and priced apart; each stays None when the
upstream did not say (an OpenAI reply without `prompt_tokens_details` is not "no cache hit").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int | None = None          # prompt-cache reads
    reasoning_tokens: int = 0
    # prompt-cache writes (Anthropic): 5-minute and 1-hour entries
    cache_write_5m_tokens: int | None = None
    cache_write_1h_tokens: int | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def from_openai(cls, d: Any) -> Usage | None:
        """Read an OpenAI `usage` object; None when absent or malformed. Completions without a
        completion count (embeddings report only prompt and total) count zero completion tokens."""
        if not isinstance(d, dict):
            return None
        p, c = _count(d.get("prompt_tokens")), _count(d.get("completion_tokens", 0))
        if p is None or c is None:
            return None
        ptd, ctd = d.get("prompt_tokens_details"), d.get("completion_tokens_details")
        cached = _count(ptd.get("cached_tokens")) if isinstance(ptd, dict) else None
        reasoning = _count(ctd.get("reasoning_tokens")) if isinstance(ctd, dict) else None
        return cls(p, c, min(cached, p) if cached is not None else None, reasoning or 0)

    def to_openai(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens or 0},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
        }


def _count(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None
