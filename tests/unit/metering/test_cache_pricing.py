"""Prompt-cache pricing and the cache fields of each provider's usage reader: each rate applied to its own
tokens, the defaults relative to the input price, clamping of figures that do not add up, None kept apart from 0."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from sluice.config import PricingConfig
from sluice.metering.pricing import MAX_NANOS, Price, fmt_money, from_nanos, to_nanos
from sluice.providers.anthropic.translate import usage_from as anthropic_usage
from sluice.providers.gemini.response import usage_from as gemini_usage
from sluice.schema.usage import Usage


def test_defaults_are_multiples_of_the_input_price() -> None:
    p = Price.from_config(PricingConfig(input="3", output="15"))
    assert (p.cached_input, p.cache_write_5m, p.cache_write_1h) == (Decimal("0.3"), Decimal("3.75"), Decimal("6"))
    own = Price.from_config(PricingConfig(input="3", output="15", cached_input="1", cache_write_5m="2",
                                          cache_write_1h=0))
    assert (own.cached_input, own.cache_write_5m, own.cache_write_1h) == (1, 2, 0)


def test_each_rate_applies_to_its_own_tokens() -> None:
    p = Price(Decimal(1), Decimal(10), Decimal(100), Decimal(1000), Decimal(10000))
    # 1 plain + 2 read + 3 five-minute + 4 one-hour prompt tokens, 5 completion tokens
    assert p.cost(10, 5, cached=2, write_5m=3, write_1h=4) * 1_000_000 == 1 + 20 + 3000 + 40000 + 500
    assert p.cost_nanos(10, 5, 2, 3, 4) == 43_521_000


def test_figures_that_do_not_add_up_are_clamped_to_the_prompt() -> None:
    p = Price(Decimal(1), Decimal(10), Decimal(0), Decimal(100), Decimal(1000))
    assert p.cost(10, 0, cached=8, write_5m=8, write_1h=8) * 1_000_000 == 8 * 10 + 2 * 100
    assert p.cost(10, 0, cached=-5) * 1_000_000 == 10


def test_openai_usage_keeps_not_reported_apart_from_zero() -> None:
    bare = Usage.from_openai({"prompt_tokens": 10, "completion_tokens": 2})
    assert bare is not None and bare.cached_tokens is None
    zero = Usage.from_openai({"prompt_tokens": 10, "completion_tokens": 2,
                              "prompt_tokens_details": {"cached_tokens": 0}})
    assert zero is not None and zero.cached_tokens == 0
    hit = Usage.from_openai({"prompt_tokens": 10, "completion_tokens": 2,
                             "prompt_tokens_details": {"cached_tokens": 50}})
    assert hit is not None and hit.cached_tokens == 10  # never more than the prompt
    emb = Usage.from_openai({"prompt_tokens": 7, "total_tokens": 7})  # embeddings report no completion
    assert emb is not None and (emb.prompt_tokens, emb.completion_tokens) == (7, 0)
    bad = Usage.from_openai({"prompt_tokens": 10, "completion_tokens": 2,
                             "prompt_tokens_details": {"cached_tokens": -3}})
    assert bad is not None and bad.cached_tokens == 0 and bad.anomaly == "cached_tokens=-3"  # clamped, noted


@pytest.mark.parametrize(("meta", "cached"), [
    ({"promptTokenCount": 100, "candidatesTokenCount": 5, "cachedContentTokenCount": 60}, 60),
    ({"promptTokenCount": 100, "candidatesTokenCount": 5}, None),
    ({"promptTokenCount": 100, "candidatesTokenCount": 5, "cachedContentTokenCount": 0}, 0),
])
def test_gemini_cached_content(meta: dict[str, int], cached: int | None) -> None:
    u = gemini_usage(meta)
    assert u is not None and u.cached_tokens == cached and u.prompt_tokens == 100


def test_anthropic_cache_fields() -> None:
    u = anthropic_usage({"input_tokens": 1, "output_tokens": 2, "cache_read_input_tokens": 3,
                         "cache_creation_input_tokens": 30,
                         "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 20}})
    assert u is not None
    assert (u.prompt_tokens, u.cached_tokens, u.cache_write_5m_tokens, u.cache_write_1h_tokens) == (34, 3, 10, 20)
    old = anthropic_usage({"input_tokens": 1, "output_tokens": 2, "cache_creation_input_tokens": 30})
    assert old is not None and (old.cache_write_5m_tokens, old.cache_write_1h_tokens, old.cached_tokens) == (
        30, None, None)
    plain = anthropic_usage({"input_tokens": 1, "output_tokens": 2})
    assert plain is not None and plain.cache_write_5m_tokens is None and plain.prompt_tokens == 1


_PRICES = [Price(Decimal("0.15"), Decimal("0.075"), Decimal("0.6")),
           Price(Decimal("3"), Decimal("0.3"), Decimal("15"), Decimal("3.75"), Decimal("6")),
           Price(Decimal("0.0001"), Decimal("0.00001"), Decimal("0.1234567")),   # rates below a nano-unit
           Price(Decimal("2.5"), Decimal("0.25"), Decimal("10")).scaled(Decimal("0.85")),
           Price(Decimal("1e20"), Decimal(0), Decimal(1)), Price(Decimal(0), Decimal(0), Decimal(0))]


def test_cost_in_whole_nano_units_is_the_decimal_cost_rounded_up() -> None:
    """`cost_nanos` counts in integers when every rate is a whole number of nano-units per token: the same
    figure as the exact decimal cost rounded up, clamps and cap included."""
    rng = random.Random(16)
    counts = (0, 1, -3, 7, 999_999, 10**9)
    for price in _PRICES:
        for _ in range(3000):
            figures = [rng.choice(counts) if rng.random() < 0.3 else rng.randint(0, 10**9) for _ in range(5)]
            assert price.cost_nanos(*figures) == min(to_nanos(price.cost(*figures)), MAX_NANOS), (price, figures)


def test_money_is_formatted_as_the_normalised_decimal() -> None:
    rng = random.Random(16)
    for nanos in [0, 1, -1, 10**9, 10**10, -(10**10), 1_234_500, 999_999_999, 10**18,
                  *(rng.randint(-(10**19), 10**19) for _ in range(5000))]:
        assert fmt_money(nanos) == f"{from_nanos(nanos).normalize():f}", nanos
