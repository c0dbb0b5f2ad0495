"""What admission needs to know about a key's account (enabled, what it can still spend, its group's
multiplier for a model), cached for a short time as keys are."""

from __future__ import annotations

import time
from decimal import Decimal

from sluice.accounts.records import AccountRecord, GroupRecord
from sluice.accounts.store import AccountStore
from sluice.errors import PermissionDenied


class AccountView:
    def __init__(self, accounts: AccountStore, *, ttl: float = 2.0, max_entries: int = 100_000) -> None:
        self.accounts = accounts
        self._ttl = ttl
        self._max = max_entries
        self._cache: dict[str, tuple[AccountRecord | None, GroupRecord | None, float]] = {}

    async def payer(self, account_id: str, *, fresh: bool = False) -> tuple[AccountRecord, GroupRecord | None]:
        """The enabled account and its group (None: the group has no row, so multiplier 1); refuses a
        missing or disabled account."""
        now = time.monotonic()
        hit = self._cache.get(account_id)
        if hit is None or hit[2] <= now or fresh:
            acct = await self.accounts.get_account(account_id)
            group = await self.accounts.get_group(acct.group) if acct is not None else None
            if len(self._cache) >= self._max:
                self._cache.clear()
            hit = self._cache[account_id] = (acct, group, now + self._ttl)
        acct, group, _ = hit
        if acct is None or not acct.enabled:
            raise PermissionDenied("The account of this API key is disabled; ask the operator.",
                                   code="account_disabled")
        return acct, group

    def forget(self, account_id: str) -> None:
        self._cache.pop(account_id, None)


def multiplier(group: GroupRecord | None, model: str) -> Decimal:
    return group.multiplier_for(model) if group is not None else Decimal(1)
