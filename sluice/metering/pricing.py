"""Pricing: exact decimal cost of a request, kept as integer nano-units (1e-9 of the currency).

Prices are per million tokens. Costs are computed with `Decimal` and rounded up to the nano-unit, so
sums in the database are exact integer arithmetic in SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal

from sluice.config import PricingConfig

NANO = Decimal(1_000_000_000)
# The most one amount may be (10^9 currency units): far below int64 (BIGINT, ~9.2e18), so a price times
# an absurd token count, or a budget typed with too many digits, can never overflow a sum in the database.
MAX_NANOS = 10**18
_PER_TOKEN = Decimal(1_000_000)
# Prompt-cache rates relative to the input price when a model does not set its own (Anthropic's list
# multipliers; OpenAI's and Gemini's cache reads are cheaper still, so set `cached_input` for them).
CACHE_READ_FACTOR = Decimal("0.1")
CACHE_WRITE_5M_FACTOR = Decimal("1.25")
CACHE_WRITE_1H_FACTOR = Decimal("2")


@dataclass(slots=True, frozen=True)
class Price:
    input: Decimal
    cached_input: Decimal
    output: Decimal
    cache_write_5m: Decimal = Decimal(0)
    cache_write_1h: Decimal = Decimal(0)

    @classmethod
    def from_config(cls, cfg: PricingConfig) -> Price:
        inp = Decimal(str(cfg.input))

        def rate(v: str | int | float | None, factor: Decimal) -> Decimal:
            return Decimal(str(v)) if v is not None else inp * factor

        return cls(inp, rate(cfg.cached_input, CACHE_READ_FACTOR), Decimal(str(cfg.output)),
                   rate(cfg.cache_write_5m, CACHE_WRITE_5M_FACTOR), rate(cfg.cache_write_1h, CACHE_WRITE_1H_FACTOR))

    @property
    def free(self) -> bool:
        return not (self.input or self.cached_input or self.output or self.cache_write_5m or self.cache_write_1h)

    def scaled(self, multiplier: Decimal) -> Price:
        """This price times a group's multiplier (what a customer of that group pays)."""
        if multiplier == 1:
            return self
        return Price(self.input * multiplier, self.cached_input * multiplier, self.output * multiplier,
                     self.cache_write_5m * multiplier, self.cache_write_1h * multiplier)

    def cost(self, prompt: int, completion: int, cached: int = 0, write_5m: int = 0, write_1h: int = 0) -> Decimal:
        """The exact cost in currency units. Cache reads and writes are part of `prompt`, priced apart
        (clamped so that together they never exceed it: an upstream's figures are not trusted to add up)."""
        cached = min(max(cached, 0), prompt)
        write_5m = min(max(write_5m, 0), prompt - cached)
        write_1h = min(max(write_1h, 0), prompt - cached - write_5m)
        plain = prompt - cached - write_5m - write_1h
        return (plain * self.input + cached * self.cached_input + write_5m * self.cache_write_5m
                + write_1h * self.cache_write_1h + completion * self.output) / _PER_TOKEN

    def cost_nanos(self, prompt: int, completion: int, cached: int = 0, write_5m: int = 0,
                   write_1h: int = 0) -> int:
        """The cost in nano-units, capped at MAX_NANOS."""
        return min(to_nanos(self.cost(prompt, completion, cached, write_5m, write_1h)), MAX_NANOS)


def to_nanos(amount: Decimal) -> int:
    return int((amount * NANO).to_integral_value(rounding=ROUND_CEILING))


def from_nanos(nanos: int) -> Decimal:
    return Decimal(nanos) / NANO


def fmt_money(nanos: int | None) -> str | None:
    """A decimal string without trailing zeros noise: 1234500 -> '0.0012345'."""
    if nanos is None:
        return None
    d = from_nanos(nanos).normalize()
    return f"{d:f}"
