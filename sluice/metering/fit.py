"""How many output tokens a balance can pay for: the reservation of a request without `max_tokens`
shrinks to what the payer can afford, and the upstream request is capped to the same number.
"""

from __future__ import annotations

from decimal import ROUND_FLOOR, Decimal

from sluice.metering.pricing import Price, from_nanos

# Below this many affordable output tokens the request is refused rather than cut to a useless reply.
MIN_ADAPTED_OUTPUT = 16

_PER_TOKEN = Decimal(1_000_000)


def affordable_output(price: Price, prompt: int, n: int, cap: int, money: int | None, tokens: int | None) -> int:
    """The most output tokens per choice (at most `cap`) whose reservation, `prompt` tokens plus `n`
    choices of output, fits `money` nano-units and `tokens` of quota still free (None: no limit).
    0 when not even the prompt fits."""
    best = cap
    if tokens is not None:
        best = min(best, max(0, tokens - prompt) // max(1, n))
    if money is not None and price.output > 0:
        left = from_nanos(money) - price.cost(prompt, 0)
        if left < 0:
            return 0
        by_money = int((left * _PER_TOKEN / (price.output * n)).to_integral_value(rounding=ROUND_FLOOR))
        best = min(best, by_money)
        # the reservation is rounded up to the nano-unit: step back while that rounding does not fit
        while best > 0 and price.cost_nanos(prompt, best * n) > money:
            best -= 1
    elif money is not None and price.cost_nanos(prompt, 0) > money:
        return 0
    return max(0, best)
