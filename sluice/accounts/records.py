"""The records of accounts, groups, balance events and redemption codes, as listings show them."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sluice.metering.pricing import fmt_money

DEFAULT_GROUP = "default"


@dataclass(slots=True)
class AccountRecord:
    id: str
    name: str
    group: str = DEFAULT_GROUP
    enabled: bool = True
    credit: int = 0        # nano-units ever credited (top-ups, redemptions, adjustments)
    spent: int = 0         # nano-units charged by its keys' requests
    reserved: int = 0      # held by requests in flight
    created_at: float = 0.0

    @property
    def balance(self) -> int:
        return self.credit - self.spent

    @property
    def available(self) -> int:
        """What a new request may still reserve."""
        return self.credit - self.spent - self.reserved

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "group": self.group, "enabled": self.enabled,
                "balance": fmt_money(self.balance), "credit": fmt_money(self.credit),
                "spent": fmt_money(self.spent), "reserved": fmt_money(self.reserved), "created_at": self.created_at}


@dataclass(slots=True)
class GroupRecord:
    name: str
    multiplier: Decimal = Decimal(1)
    models: dict[str, Decimal] = field(default_factory=dict)   # per-model multipliers, over the group's
    created_at: float = 0.0

    def multiplier_for(self, model: str) -> Decimal:
        return self.models.get(model, self.multiplier)

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "multiplier": str(self.multiplier),
                "models": {m: str(v) for m, v in sorted(self.models.items())}, "created_at": self.created_at}


@dataclass(slots=True)
class BalanceEvent:
    kind: str              # topup | redeem | adjust | charges (a day's request charges, from the ledger)
    amount: int            # nano-units, signed: charges are negative
    created_at: float
    note: str | None = None
    ref: str | None = None   # a code batch id, or the number of requests of a day's charges

    def public(self) -> dict[str, Any]:
        return {"kind": self.kind, "amount": fmt_money(self.amount), "created_at": self.created_at,
                "note": self.note, "ref": self.ref}


@dataclass(slots=True)
class CodeRecord:
    """A redemption code as stored: only its hash, never the code."""

    code_hash: str
    batch_id: str
    amount: int
    group: str | None
    expires_at: float | None
    created_at: float
    redeemed_at: float | None = None
    redeemed_by: str | None = None   # the key id that redeemed it
    account_id: str | None = None

    def public(self) -> dict[str, Any]:
        return {"id": self.code_hash[:12], "batch_id": self.batch_id, "amount": fmt_money(self.amount),
                "group": self.group, "expires_at": self.expires_at, "created_at": self.created_at,
                "redeemed_at": self.redeemed_at, "redeemed_by": self.redeemed_by, "account_id": self.account_id}
