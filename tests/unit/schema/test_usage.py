"""Usage from upstreams is clamped where it enters (OpenAI, Anthropic and Gemini shapes), the anomaly kept."""

from __future__ import annotations

from typing import Any

import pytest

from sluice.providers.anthropic.translate import usage_from as anthropic_usage
from sluice.providers.gemini.response import usage_from as gemini_usage
from sluice.schema.usage import MAX_TOKENS, Usage


@pytest.mark.parametrize(("raw", "want"), [
    ({"prompt_tokens": 2**64 - 1, "completion_tokens": 3}, (MAX_TOKENS, 3)),
    ({"prompt_tokens": -5, "completion_tokens": 3}, (0, 3)),
    ({"prompt_tokens": True, "completion_tokens": 3}, (0, 3)),
    ({"prompt_tokens": "12", "completion_tokens": 3.5}, (0, 3)),
    ({"prompt_tokens": 1e300, "completion_tokens": float("nan")}, (MAX_TOKENS, 0)),
])
def test_openai_usage_is_clamped_and_noted(raw: dict[str, Any], want: tuple[int, int]) -> None:
    u = Usage.from_openai(raw)
    assert u is not None
    assert (u.prompt_tokens, u.completion_tokens) == want
    assert u.anomaly is not None and "tokens=" in u.anomaly


def test_in_range_usage_has_no_anomaly() -> None:
    u = Usage.from_openai({"prompt_tokens": 12.0, "completion_tokens": 0,
                           "prompt_tokens_details": {"cached_tokens": 20}})
    assert u == Usage(12, 0, 12, 0, None)          # cached never exceeds prompt
    assert Usage.from_openai({"completion_tokens": 3}) is None     # not reported stays None


def test_anthropic_and_gemini_usage_are_clamped() -> None:
    a = anthropic_usage({"input_tokens": 2**63, "output_tokens": -1, "cache_read_input_tokens": 5})
    assert a is not None and (a.prompt_tokens, a.completion_tokens, a.cached_tokens) == (MAX_TOKENS, 0, 5)
    assert a.anomaly is not None and "input_tokens=" in a.anomaly and "completion_tokens=-1" in a.anomaly
    g = gemini_usage({"promptTokenCount": -3, "candidatesTokenCount": 4, "thoughtsTokenCount": "x"})
    assert g is not None and (g.prompt_tokens, g.completion_tokens, g.reasoning_tokens) == (0, 4, 0)
    assert g.anomaly is not None and "thoughtsTokenCount=x" in g.anomaly
