"""What admission granted one request, as one value: its price (and the list price an account's group
scaled), the rate limits it holds, its reservation and what the record should note. Settlement prices
the ledger record and releases the limits from it; nothing else writes these."""

from __future__ import annotations

from dataclasses import dataclass, field

from sluice.metering.limits import LimitSpec
from sluice.metering.pricing import Price

Headers = list[tuple[bytes, bytes]]


@dataclass(slots=True)
class Ticket:
    """Filled by `Admission.admit` as it grants each part, so that a request refused half-way (a rate
    limit after the reservation) still gives back what it held when it settles."""

    request_id: str
    price: Price | None = None
    list_price: Price | None = None          # before the account group's multiplier
    account_id: str | None = None            # the account that pays, if any
    limits: list[tuple[str, LimitSpec, int]] = field(default_factory=list)  # (scope, spec, tokens) admitted
    reserved: tuple[int, int] | None = None  # (nanos, tokens) held on the key
    budgeted: tuple[bool, bool] = (False, False)  # (money budget, token quota) caps apply
    prompt_estimate: int | None = None
    notes: dict[str, object] = field(default_factory=dict)  # for the record's `extra` (multiplier, capped output)
    headers: Headers = field(default_factory=list)          # for the reply (limits, capped max_tokens)
