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


@dataclass(slots=True, frozen=True)
class Price:
    input: Decimal
    cached_input: Decimal
    output: Decimal

    @classmethod
    def from_config(cls, cfg: PricingConfig) -> Price:
        inp = Decimal(str(cfg.input))
        cached = Decimal(str(cfg.cached_input)) if cfg.cached_input is not None else inp
        return cls(inp, cached, Decimal(str(cfg.output)))

    @property
    def free(self) -> bool:
        return not (self.input or self.cached_input or self.output)

    def scaled(self, multiplier: Decimal) -> Price:
        """This price times a group's multiplier (what a customer of that group pays)."""
        if multiplier == 1:
            return self
        return Price(self.input * multiplier, self.cached_input * multiplier, self.output * multiplier)

    def cost(self, prompt: int, completion: int, cached: int = 0) -> Decimal:
        """The exact cost in currency units. Cached tokens are part of `prompt`, priced apart."""
        cached = min(max(cached, 0), prompt)
        return ((prompt - cached) * self.input + cached * self.cached_input + completion * self.output) / _PER_TOKEN

    def cost_nanos(self, prompt: int, completion: int, cached: int = 0) -> int:
        """The cost in nano-units, capped at MAX_NANOS."""
        return min(to_nanos(self.cost(prompt, completion, cached)), MAX_NANOS)


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
