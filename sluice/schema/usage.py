"""Token usage in OpenAI's terms. "Not reported" is None, never zero.

Counts come from upstreams, so each is checked where it enters (`Usage.checked`): a negative, non-integer,
boolean or absurd figure is clamped into [0, MAX_TOKENS] and the anomaly kept on the Usage, so that one
bad upstream can neither lower a key's spending nor overflow the ledger's BIGINT columns. Prompt-cache
reads and writes are part of `prompt_tokens` and priced apart; each stays None when the upstream did not
say (an OpenAI reply without `prompt_tokens_details` is not "no cache hit").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

MAX_TOKENS = 10**9      # far above any context window; price x MAX_TOKENS stays far inside int64 nano-units


@dataclass(slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int | None = None          # prompt-cache reads
    reasoning_tokens: int = 0
    anomaly: str | None = None      # what was clamped, e.g. "prompt_tokens=-5"; None when all was in range
    # prompt-cache writes (Anthropic), part of prompt_tokens: 5-minute and 1-hour entries
    cache_write_5m_tokens: int | None = None
    cache_write_1h_tokens: int | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def checked(cls, prompt: Any, completion: Any, cached: Any = None, reasoning: Any = 0, *,
                write_5m: Any = None, write_1h: Any = None, noted: list[str] | None = None) -> Usage:
        """A Usage from upstream figures, each clamped into [0, MAX_TOKENS] (cached <= prompt, cache writes
        <= prompt); a cache figure left out (None) stays None. `noted`: the anomalies the caller found in
        the figures it added up itself."""
        if (type(prompt) is int and type(completion) is int and type(reasoning) is int and write_5m is None
                and write_1h is None and not noted and 0 <= prompt <= MAX_TOKENS and 0 <= completion <= MAX_TOKENS
                and 0 <= reasoning <= completion
                and (cached is None or (type(cached) is int and 0 <= cached <= prompt))):
            return cls(prompt, completion, cached, reasoning)  # every figure in range: what the loop below gives
        bad: list[str] = list(noted or ())
        p = count("prompt_tokens", prompt, bad)
        c = count("completion_tokens", completion, bad)
        cached_n = _reported("cached_tokens", cached, bad, p)
        r = min(count("reasoning_tokens", reasoning, bad), c)
        w5 = _reported("cache_write_5m_tokens", write_5m, bad, p)
        w1 = _reported("cache_write_1h_tokens", write_1h, bad, p - (w5 or 0))
        return cls(p, c, cached_n, r, ", ".join(bad) or None, w5, w1)

    @classmethod
    def from_openai(cls, d: Any) -> Usage | None:
        """Read an OpenAI `usage` object; None when absent or without its two counts (an embeddings
        reply reports no completion count: its `total_tokens` equal to the prompt's means zero)."""
        if not isinstance(d, dict):
            return None
        p, c = d.get("prompt_tokens"), d.get("completion_tokens")
        if c is None and p is not None and d.get("total_tokens") == p:
            c = 0
        if p is None or c is None:
            return None
        ptd, ctd = d.get("prompt_tokens_details"), d.get("completion_tokens_details")
        cached = ptd.get("cached_tokens") if isinstance(ptd, dict) else None
        reasoning = ctd.get("reasoning_tokens") if isinstance(ctd, dict) else None
        return cls.checked(p, c, cached, reasoning or 0)

    def to_openai(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens or 0},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
        }


def count(name: str, v: Any, bad: list[str]) -> int:
    """`v` as a token count in [0, MAX_TOKENS]; what was out of range or not a count is noted in `bad`."""
    if isinstance(v, int) and not isinstance(v, bool):
        n = v
    elif isinstance(v, float) and math.isfinite(v):
        n = int(v)
        if n != v:                  # 12.0 is a JSON encoder's habit; 12.5 is not a count
            bad.append(f"{name}={v!r}")
            return min(max(n, 0), MAX_TOKENS)
    else:
        bad.append(f"{name}={str(v)[:40]}")
        return 0
    if 0 <= n <= MAX_TOKENS:
        return n
    bad.append(f"{name}={n}")
    return 0 if n < 0 else MAX_TOKENS


def _reported(name: str, v: Any, bad: list[str], most: int) -> int | None:
    """A count that may be absent: None (not reported) stays None, anything else is clamped to `most`."""
    return None if v is None else min(count(name, v, bad), most)
