"""Admin routes for accounts, groups and redemption codes (under /admin/), and what a key may do about its
own account on /v1/dashboard/: see the balance history, redeem a code, see the prices it pays."""

from __future__ import annotations

import contextlib
import secrets
import time
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from sluice.accounts import codes
from sluice.accounts.records import DEFAULT_GROUP, AccountRecord, GroupRecord
from sluice.accounts.store import AccountStore
from sluice.accounts.view import AccountView, multiplier
from sluice.errors import InvalidRequest, NotFound, SluiceError
from sluice.metering.pricing import fmt_money, to_nanos
from sluice.relay import Relay
from sluice.schema.chat import parse_json_object
from sluice.storage.base import KeyRecord

_NAME_MAX = 200


class AccountFields(msgspec.Struct, forbid_unknown_fields=True):
    name: str | UnsetType = UNSET
    group: str | UnsetType = UNSET
    enabled: bool | UnsetType = UNSET
    balance: str | int | float | UnsetType = UNSET   # only on create: the opening top-up


class GroupFields(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    multiplier: str | int | float = "1"
    models: dict[str, str | int | float] = msgspec.field(default_factory=dict)


class CodeBatch(msgspec.Struct, forbid_unknown_fields=True):
    count: int
    amount: str | int | float
    expires_at: float | None = None
    group: str | None = None


def money(v: Any, param: str, *, signed: bool = False) -> int:
    try:
        d = Decimal(str(v))
    except InvalidOperation:
        raise InvalidRequest(f"'{param}' must be a decimal amount", param=param) from None
    if not d.is_finite() or (d < 0 and not signed) or abs(d) > 10**12:
        raise InvalidRequest(f"'{param}' must be a {'' if signed else 'non-negative '}amount below 10^12",
                             param=param)
    return to_nanos(d) if d >= 0 else -to_nanos(-d)


def decode_body(body: bytes, kind: type[Any], what: str) -> Any:
    """A JSON body into a msgspec struct; the front door's 400 naming what is wrong."""
    try:
        return msgspec.json.decode(body or b"{}", type=kind)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"invalid {what}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}", code="invalid_json") from None


def _name(v: str, param: str) -> str:
    if not v.strip() or len(v) > _NAME_MAX:
        raise InvalidRequest(f"'{param}' must be 1 to {_NAME_MAX} characters", param=param)
    return v.strip()


def _multiplier(v: Any, param: str) -> Decimal:
    try:
        d = Decimal(str(v))
    except InvalidOperation:
        d = Decimal(-1)
    if not d.is_finite() or not 0 <= d <= 1000:
        raise InvalidRequest(f"'{param}' must be a number from 0 to 1000", param=param)
    return d


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
            return await self._codes(method, rest, q, body)
        raise NotFound(f"Unknown admin route: {method} /admin/{'/'.join(parts)}", code="unknown_url")

    async def check_account(self, account_id: Any) -> None:
        """For key fields: an account a key is given must exist."""
        if account_id is not None and await self.accounts.get_account(str(account_id)) is None:
            raise InvalidRequest(f"No account {account_id}.", param="account_id", code="account_not_found")

    async def _accounts(self, method: str, body: bytes) -> tuple[int, Any]:
        if method == "GET":
            return 200, {"data": [a.public() for a in await self.accounts.list_accounts()]}
        if method != "POST":
            raise NotFound(f"Unknown admin route: {method} /admin/accounts", code="unknown_url")
        f: AccountFields = decode_body(body, AccountFields, "account fields")
        if not isinstance(f.name, str):
            raise InvalidRequest("'name' is required", param="name")
        group = _name(f.group, "group") if isinstance(f.group, str) else DEFAULT_GROUP
        rec = AccountRecord("acct_" + secrets.token_hex(6), _name(f.name, "name"), group,
                            enabled=f.enabled if isinstance(f.enabled, bool) else True, created_at=time.time())
        await self.accounts.create_account(rec)
        opening = money(f.balance, "balance") if not isinstance(f.balance, UnsetType) else 0
        if opening:
            rec = await self.accounts.credit(rec.id, opening, "topup", "opening balance") or rec
        return 201, rec.public()

    async def _account(self, method: str, rest: list[str], q: dict[str, str], body: bytes) -> tuple[int, Any]:
        aid, sub = rest[0], rest[1:]
        if sub in (["topup"], ["adjust"]) and method == "POST":
            doc = parse_json_object(body)
            nanos = money(doc.get("amount"), "amount", signed=sub == ["adjust"])
            if nanos == 0 or (sub == ["topup"] and nanos < 0):
                raise InvalidRequest("'amount' must not be zero" if sub == ["adjust"] else "'amount' must be positive",
                                     param="amount")
            note = doc.get("note")
            if note is not None and (not isinstance(note, str) or len(note) > 500):
                raise InvalidRequest("'note' must be a string of at most 500 characters", param="note")
            rec = await self.accounts.credit(aid, nanos, sub[0], note)
            self.view.forget(aid)
        elif sub == ["history"] and method == "GET":
            return 200, await self._history(aid, q)
        elif sub:
            raise NotFound(f"Unknown admin route: /admin/accounts/{aid}/{'/'.join(sub)}", code="unknown_url")
        elif method == "GET":
            rec = await self.accounts.get_account(aid)
            if rec is not None:
                return 200, {**rec.public(), "keys": await self.accounts.keys_of(aid)}
        elif method == "PATCH":
            f: AccountFields = decode_body(body, AccountFields, "account fields")
            changes = {k: getattr(f, k) for k in ("name", "group", "enabled") if getattr(f, k) is not UNSET}
            for k in ("name", "group"):
                if k in changes:
                    changes[k] = _name(changes[k], k)
            rec = await self.accounts.update_account(aid, changes)
            self.view.forget(aid)
        else:
            raise NotFound(f"Unknown admin route: {method} /admin/accounts/{aid}", code="unknown_url")
        if rec is None:
            raise NotFound(f"No account {aid}.", code="account_not_found")
        return 200, rec.public()

    async def _history(self, aid: str, q: dict[str, str]) -> dict[str, Any]:
        if await self.accounts.get_account(aid) is None:
            raise NotFound(f"No account {aid}.", code="account_not_found")
        return {"data": [e.public() for e in await self.accounts.history(aid, **history_query(q))]}

    async def _groups(self, method: str, rest: list[str], body: bytes) -> tuple[int, Any]:
        if not rest and method == "GET":
            return 200, {"data": [g.public() for g in await self.accounts.list_groups()]}
        if not rest and method in ("POST", "PUT"):
            f: GroupFields = decode_body(body, GroupFields, "group fields")
            g = GroupRecord(_name(f.name, "name"), _multiplier(f.multiplier, "multiplier"),
                            {m: _multiplier(v, f"models.{m}") for m, v in f.models.items()})
            return 200, (await self.accounts.set_group(g)).public()
        if len(rest) == 1 and method == "GET":
            g2 = await self.accounts.get_group(rest[0])
            if g2 is None:
                raise NotFound(f"No group {rest[0]}.")
            return 200, g2.public()
        raise NotFound(f"Unknown admin route: {method} /admin/groups/{'/'.join(rest)}", code="unknown_url")

    async def _codes(self, method: str, rest: list[str], q: dict[str, str], body: bytes) -> tuple[int, Any]:
        if rest:
            raise NotFound(f"Unknown admin route: /admin/codes/{'/'.join(rest)}", code="unknown_url")
        if method == "GET":
            limit = _int(q.get("limit"), "limit", 1000)
            return 200, {"data": [c.public() for c in await self.accounts.list_codes(q.get("batch_id"), limit)]}
        if method != "POST":
            raise NotFound(f"Unknown admin route: {method} /admin/codes", code="unknown_url")
        f: CodeBatch = decode_body(body, CodeBatch, "code batch")
        amount = money(f.amount, "amount")
        group = _name(f.group, "group") if f.group is not None else None
        batch, made = await codes.create_batch(self.accounts, f.count, amount, expires_at=f.expires_at, group=group)
        return 201, {"batch_id": batch, "count": len(made), "amount": fmt_money(amount), "group": group,
                     "expires_at": f.expires_at, "codes": made,
                     "csv": codes.export_csv(batch, made, amount, f.expires_at, group)}


def _int(v: str | None, param: str, default: int) -> int:
    try:
        n = int(v) if v else default
    except ValueError:
        raise InvalidRequest(f"'{param}' must be an integer", param=param) from None
    if not 1 <= n <= 100_000:
        raise InvalidRequest(f"'{param}' must be between 1 and 100000", param=param)
    return n


def history_query(q: dict[str, str]) -> dict[str, Any]:
    try:
        since = float(q["since"]) if q.get("since") else None
    except ValueError:
        raise InvalidRequest("'since' must be Unix seconds", param="since") from None
    return {"since": since, "limit": _int(q.get("limit"), "limit", 200)}


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
        return {"data": [e.public() for e in await view.accounts.history(key.account_id, **history_query(q))]}
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
