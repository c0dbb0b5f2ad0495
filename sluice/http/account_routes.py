"""Admin routes for accounts, groups and redemption codes (under /admin/), and what a key may do about its
own account on /v1/dashboard/: see the balance history, redeem a code, see the prices it pays."""

from __future__ import annotations

import contextlib
import secrets
import time
from decimal import Decimal
from typing import Any

from msgspec import UNSET, UnsetType

from sluice.accounts import codes
from sluice.accounts.records import DEFAULT_GROUP, AccountRecord, GroupRecord
from sluice.accounts.store import AccountStore
from sluice.accounts.view import AccountView, multiplier
from sluice.errors import Conflict, InvalidRequest, NotFound, SluiceError
from sluice.http.account_schema import (
    AccountFields,
    Adjustment,
    CodeBatch,
    CodeParams,
    Credit,
    GroupFields,
    HistoryParams,
    NewAccount,
    query,
)
from sluice.http.admin_schema import decode, money_nanos
from sluice.metering.pricing import MAX_NANOS, fmt_money, to_nanos
from sluice.relay import Relay
from sluice.schema.chat import parse_json_object
from sluice.storage.base import KeyRecord


def _signed_nanos(v: str | float) -> int:
    """A validated signed amount in nano-units (rounded away from zero, so never zero)."""
    d = Decimal(str(v))
    return to_nanos(d) if d >= 0 else -to_nanos(-d)


def _decimal(v: str | float) -> Decimal:
    """A validated multiplier; JSON's 2 is the float 2.0 here, shown as "2" as the admin wrote it."""
    return Decimal(int(v)) if isinstance(v, float) and v.is_integer() else Decimal(str(v))


def _label(v: str) -> str:
    return v.strip()


class AccountAdmin:
    """/admin/accounts, /admin/groups, /admin/codes."""

    def __init__(self, relay: Relay) -> None:
        self.view: AccountView = relay.admission.accounts
        self.accounts: AccountStore = self.view.accounts
        self.relay = relay

    async def dispatch(self, method: str, parts: list[str], q: dict[str, str], body: bytes) -> tuple[int, Any]:
        head, rest = parts[0], parts[1:]
        if head == "accounts":
            return await (self._accounts(method, body) if not rest else self._account(method, rest, q, body))
        if head == "groups":
            return await self._groups(method, rest, body)
        if head == "codes":
            return await self._codes(method, q, body)
        raise NotFound(f"Unknown admin route: {method} /admin/{'/'.join(parts)}", code="unknown_url")

    async def check_account(self, account_id: Any) -> None:
        """For key fields: an account a key is given must exist (404 naming the field, like a missing key)."""
        if account_id is not None and await self.accounts.get_account(str(account_id)) is None:
            raise NotFound(f"No account {account_id}.", code="account_not_found", param="account_id")

    async def _accounts(self, method: str, body: bytes) -> tuple[int, Any]:
        if method == "GET":
            return 200, {"data": [a.public() for a in await self.accounts.list_accounts()]}
        f = decode(body, NewAccount)
        group = _label(f.group) if isinstance(f.group, str) else DEFAULT_GROUP
        rec = AccountRecord("acct_" + secrets.token_hex(6), _label(f.name), group,
                            enabled=f.enabled if isinstance(f.enabled, bool) else True, created_at=time.time())
        await self.accounts.create_account(rec)
        opening = money_nanos(f.balance) if not isinstance(f.balance, UnsetType) else 0
        if opening:
            rec = await self.accounts.credit(rec.id, opening, "topup", "opening balance") or rec
        return 201, rec.public()

    async def _account(self, method: str, rest: list[str], q: dict[str, str], body: bytes) -> tuple[int, Any]:
        aid, sub = rest[0], rest[1:]
        if sub == ["history"]:
            return 200, await self._history(aid, q)
        if sub:
            return 200, await self._credit(aid, sub[0], body)
        if method == "GET":
            rec = await self.accounts.get_account(aid)
            if rec is not None:
                return 200, {**rec.public(), "keys": await self.accounts.keys_of(aid)}
        else:
            f = decode(body, AccountFields)
            changes = {k: getattr(f, k) for k in ("name", "group", "enabled") if getattr(f, k) is not UNSET}
            changes.update({k: _label(changes[k]) for k in ("name", "group") if k in changes})
            rec = await self.accounts.update_account(aid, changes)
            self.view.forget(aid)
        if rec is None:
            raise NotFound(f"No account {aid}.", code="account_not_found")
        return 200, rec.public()

    async def _credit(self, aid: str, kind: str, body: bytes) -> dict[str, Any]:
        """A top-up (positive) or an adjustment (either sign, not zero); the balance stays within 10^9 units."""
        f = decode(body, Credit) if kind == "topup" else decode(body, Adjustment)
        nanos = _signed_nanos(f.amount)
        if nanos == 0:    # a number 0: the schema's `not 0`, which msgspec cannot express
            raise InvalidRequest("'amount' must not be zero.", param="amount", code="invalid_value")
        held = await self.accounts.get_account(aid)
        if held is None:
            raise NotFound(f"No account {aid}.", code="account_not_found")
        if abs(held.credit + nanos) > MAX_NANOS:
            raise Conflict("This would take the account's credit past 10^9 currency units.",
                           param="amount", code="money_cap_exceeded")
        rec = await self.accounts.credit(aid, nanos, kind, f.note, cap=MAX_NANOS)
        self.view.forget(aid)
        if rec is None:  # gone since, or concurrent credits took it to the cap first
            if await self.accounts.get_account(aid) is None:
                raise NotFound(f"No account {aid}.", code="account_not_found")
            raise Conflict("This would take the account's credit past 10^9 currency units.",
                           param="amount", code="money_cap_exceeded")
        return rec.public()

    async def _history(self, aid: str, q: dict[str, str]) -> dict[str, Any]:
        p = query(q, HistoryParams)
        if await self.accounts.get_account(aid) is None:
            raise NotFound(f"No account {aid}.", code="account_not_found")
        return {"data": [e.public() for e in await self.accounts.history(aid, **history_args(p))]}

    async def _groups(self, method: str, rest: list[str], body: bytes) -> tuple[int, Any]:
        if rest:
            g2 = await self.accounts.get_group(rest[0])
            if g2 is None:
                raise NotFound(f"No group {rest[0]}.", code="group_not_found")
            return 200, g2.public()
        if method == "GET":
            return 200, {"data": [g.public() for g in await self.accounts.list_groups()]}
        f = decode(body, GroupFields)
        g = GroupRecord(_label(f.name), _decimal(f.multiplier), {m: _decimal(v) for m, v in f.models.items()})
        return 200, (await self.accounts.set_group(g)).public()

    async def _codes(self, method: str, q: dict[str, str], body: bytes) -> tuple[int, Any]:
        if method == "GET":
            p = query(q, CodeParams)
            batch_id = None if isinstance(p.batch_id, UnsetType) else p.batch_id
            return 200, {"data": [c.public() for c in await self.accounts.list_codes(batch_id, p.limit)]}
        f = decode(body, CodeBatch)
        amount = money_nanos(f.amount)
        group = _label(f.group) if f.group is not None else None
        batch, made = await codes.create_batch(self.accounts, f.count, amount, expires_at=f.expires_at, group=group)
        return 201, {"batch_id": batch, "count": len(made), "amount": fmt_money(amount), "group": group,
                     "expires_at": f.expires_at, "codes": made,
                     "csv": codes.export_csv(batch, made, amount, f.expires_at, group)}


def history_args(p: HistoryParams) -> dict[str, Any]:
    return {"since": None if isinstance(p.since, UnsetType) else p.since, "limit": p.limit}


async def owner_account(relay: Relay, key: KeyRecord, method: str, path: str, q: dict[str, str],
                        body: bytes) -> Any:
    """/v1/dashboard/{account,history,redeem,prices} for the key itself."""
    view = relay.admission.accounts
    if path == "redeem" and method == "POST":
        doc = parse_json_object(body)
        amount, group = await codes.redeem(view.accounts, key, doc.get("code"))
        if key.account_id is None:   # a key of its own: the code raised its budget
            relay.auth.forget(key.id)
            fresh = await relay.store.get_key(key.id) or key
            return {"redeemed": fmt_money(amount), "account": None,
                    "balance": fmt_money((fresh.budget or 0) - fresh.spent)}
        view.forget(key.account_id)
        return {"redeemed": fmt_money(amount), "group": group, **(await account_doc(relay, key))}
    if path == "history" and method == "GET":
        if key.account_id is None:
            raise NotFound("This key has no account, so it has no balance history.", code="no_account")
        args = history_args(query(q, HistoryParams))
        return {"data": [e.public() for e in await view.accounts.history(key.account_id, **args)]}
    if path == "prices" and method == "GET":
        return {"data": await caller_prices(relay, key)}
    raise NotFound(f"Unknown dashboard route: {method} /v1/dashboard/{path}", code="unknown_url")


async def account_doc(relay: Relay, key: KeyRecord) -> dict[str, Any]:
    """The key's account as its owner sees it (None when it has none)."""
    if key.account_id is None:
        return {"account": None}
    acct = await relay.admission.accounts.accounts.get_account(key.account_id)
    return {"account": acct.public() if acct is not None else None}


async def caller_prices(relay: Relay, key: KeyRecord) -> list[dict[str, Any]]:
    """Per model the key may use: the list price, the caller's multiplier and the price it pays (per
    million tokens), or `priced: false` for a model that would be refused for having no price."""
    group = None
    if key.account_id is not None:
        with contextlib.suppress(SluiceError):   # a disabled account: list prices (its requests are refused)
            group = (await relay.admission.accounts.payer(key.account_id))[1]
    out: list[dict[str, Any]] = []
    for route in relay.models_for(key):
        try:
            price = relay.admission.priced(route.name)
        except SluiceError:
            out.append({"model": route.name, "priced": False})
            continue
        m = multiplier(group, route.name)
        paid = price.scaled(m)
        out.append({"model": route.name, "priced": True, "multiplier": str(m),
                    "list": {"input": str(price.input), "cached_input": str(price.cached_input),
                             "output": str(price.output)},
                    "input": str(paid.input), "cached_input": str(paid.cached_input), "output": str(paid.output)})
    return out
