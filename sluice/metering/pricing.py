"""Pricing: exact decimal cost of a request, kept as integer nano-units (1e-9 of the currency).

Prices are per million tokens. Costs are computed with `Decimal` and rounded up to the nano-unit, so
sums in the database are exact integer arithmetic in SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal

from sluice.config import PricingConfig

NANO = Decimal(1_000_000_000)
# The most one amount may be (10^9 currency units): far below int64 (BIGINT, ~9.2e18), so a price times
# an absurd token count, or a budget typed with too many digits, can never overflow a sum in the database.
MAX_NANOS = 10**18
_PER_TOKEN = Decimal(1_000_000)
_NANO_PER_MILLION = NANO / _PER_TOKEN
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
    # the rates in nano-units per token (input, cached_input, output, cache_write_5m, cache_write_1h) when all
    # are whole (a price per million tokens with at most three decimals), else None
    nano_rates: tuple[int, int, int, int, int] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        rates = [r * _NANO_PER_MILLION for r in (self.input, self.cached_input, self.output, self.cache_write_5m,
                                                 self.cache_write_1h)]
        whole = all(r.is_finite() and r == r.to_integral_value() for r in rates)
        object.__setattr__(self, "nano_rates", (int(rates[0]), int(rates[1]), int(rates[2]), int(rates[3]),
                                                int(rates[4])) if whole else None)

    @classmethod
    def from_config(cls, cfg: PricingConfig) -> Price:
        inp = Decimal(str(cfg.input))

        def rate(v: str | int | float | None, factor: Decimal) -> Decimal:
            return Decimal(str(v)) if v is not None else inp * factor

        return cls(inp, rate(cfg.cached_input, CACHE_READ_FACTOR), Decimal(str(cfg.output)),
                   rate(cfg.cache_write_5m, CACHE_WRITE_5M_FACTOR), rate(cfg.cache_write_1h, CACHE_WRITE_1H_FACTOR))

    @property
    def free(self) -> bool:
        rates = self.nano_rates
        if rates is not None:  # (whole rates are all zero exactly when the prices are)
            return not any(rates)
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
        plain, cached, write_5m, write_1h = _parts(prompt, cached, write_5m, write_1h)
        return (plain * self.input + cached * self.cached_input + write_5m * self.cache_write_5m
                + write_1h * self.cache_write_1h + completion * self.output) / _PER_TOKEN

    def cost_nanos(self, prompt: int, completion: int, cached: int = 0, write_5m: int = 0,
                   write_1h: int = 0) -> int:
        """The cost in nano-units, capped at MAX_NANOS: in integers when every rate is a whole number of
        nano-units per token (the same figure, exactly), else through `cost` and rounded up."""
        rates = self.nano_rates
        if rates is None:
            return min(to_nanos(self.cost(prompt, completion, cached, write_5m, write_1h)), MAX_NANOS)
        plain, cached, write_5m, write_1h = _parts(prompt, cached, write_5m, write_1h)
        inp, cached_in, out, w5, w1 = rates
        return min(plain * inp + cached * cached_in + write_5m * w5 + write_1h * w1 + completion * out, MAX_NANOS)


def _parts(prompt: int, cached: int, write_5m: int, write_1h: int) -> tuple[int, int, int, int]:
    """`prompt` split into (plain, cache reads, 5-minute writes, 1-hour writes), the cache figures clamped so
    that together they never exceed it: an upstream's figures are not trusted to add up."""
    cached = min(max(cached, 0), prompt)
    write_5m = min(max(write_5m, 0), prompt - cached)
    write_1h = min(max(write_1h, 0), prompt - cached - write_5m)
    return prompt - cached - write_5m - write_1h, cached, write_5m, write_1h


def to_nanos(amount: Decimal) -> int:
    return int((amount * NANO).to_integral_value(rounding=ROUND_CEILING))


def from_nanos(nanos: int) -> Decimal:
    return Decimal(nanos) / NANO


def fmt_money(nanos: int | None) -> str | None:
    """A decimal string without trailing zeros noise: 1234500 -> '0.0012345'."""
    if nanos is None:
        return None
    whole, frac = divmod(abs(nanos), 1_000_000_000)
    text = f"{whole}.{frac:09d}".rstrip("0").rstrip(".") if frac else str(whole)
    return "-" + text if nanos < 0 else text
