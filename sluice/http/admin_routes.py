"""The admin API under /admin/ (admin token, separate from user keys) and a key owner's /v1/dashboard/.

Admin: keys CRUD, top-ups, usage (by key / model / time, grouped by hour or day), the request log and
one request's record, providers and models with their health, accounts/groups/codes (account_routes.py),
key pools and the runtime catalog (channel_routes.py), and the OpenAPI document.
Owner: its own balance, limits, usage and requests, with nothing but its own key.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs

from msgspec import UNSET

from sluice.auth.admin_token import AdminToken
from sluice.auth.keys import hash_key, new_key
from sluice.channels.catalog import Catalog
from sluice.config import Settings
from sluice.errors import AuthenticationFailed, Conflict, MethodNotAllowed, NotFound, SluiceError
from sluice.http.account_routes import AccountAdmin, account_doc, owner_account
from sluice.http.admin_schema import KeyFields, NewKey, TopUp, changes, decode, ledger_params, money_nanos
from sluice.http.asgi import Headers, Receive, Scope, Send, header, read_body, send_error, send_json
from sluice.http.channel_routes import catalog_route, channel_route
from sluice.http.openapi import OPENAPI
from sluice.metering.pricing import MAX_NANOS
from sluice.relay import Relay
from sluice.storage.base import KeyRecord


class AdminRoutes:
    def __init__(self, settings: Settings, relay: Relay, catalog: Catalog | None = None) -> None:
        self.token = AdminToken.from_settings(settings)
        self._settings = settings
        self.relay = relay
        self.catalog = catalog
        self.store = relay.store
        self.accounts = AccountAdmin(relay)

    async def handle(self, scope: Scope, receive: Receive, send: Send, headers: Headers) -> None:
        try:
            body = await read_body(scope, receive, 1 << 20)
            self._check_admin(scope)
            status, doc = await self._dispatch(scope["method"], scope["path"][len("/admin/"):].strip("/"),
                                               _query(scope), body)
        except SluiceError as exc:
            await send_error(send, exc, headers)
            return
        await send_json(send, status, doc, headers)

    def _check_admin(self, scope: Scope) -> None:
        if not self.token.enabled:
            raise AuthenticationFailed("The admin API is disabled: set admin.token in the config or "
                                       "SLUICE_ADMIN_TOKEN in the environment.", code="admin_disabled")
        if not self.token.check(header(scope, b"authorization")):
            raise AuthenticationFailed("Admin credentials required: Authorization: Bearer <admin token>.",
                                       code="invalid_admin_token")

    async def _dispatch(self, method: str, path: str, q: dict[str, str], body: bytes) -> tuple[int, Any]:
        parts = path.split("/") if path else []
        _check_method(method, path, parts)
        if parts == ["openapi.json"]:
            return 200, OPENAPI
        if parts == ["keys"]:
            if method == "GET":
                return 200, {"data": [k.public() for k in await self.store.list_keys()]}
            return 201, await self._create_key(body)
        if parts[0] == "keys":
            return await self._key(method, parts[1], parts[2:], body)
        if parts[0] in ("accounts", "groups", "codes"):
            return await self.accounts.dispatch(method, parts, q, body)
        if parts == ["usage"]:
            lq, group = ledger_params(q)
            return 200, {"data": [r.public() for r in await self.store.usage(lq, group)]}
        if parts == ["requests"]:
            lq, _ = ledger_params(q)
            return 200, {"data": [r.public() for r in await self.store.list_ledger(lq)]}
        if parts[0] == "requests":
            rec = await self.store.get_ledger(parts[1])
            if rec is None:
                raise NotFound(f"No request {parts[1]} in the ledger.")
            return 200, rec.public()
        if parts[0] == "channels":
            return await channel_route(self.relay.channels, method, parts[1:], body)
        if parts[0] == "catalog":
            return await catalog_route(self.catalog, method, parts[1:], body)
        return 200, self._providers()

    async def _create_key(self, body: bytes) -> dict[str, Any]:
        f = decode(body, NewKey)
        await self.accounts.check_account(None if f.account_id is UNSET else f.account_id)
        kid, secret = new_key()
        rec = KeyRecord(kid, f.name, hash_key(secret), created_at=time.time())
        for k, v in changes(f).items():
            setattr(rec, k, v)
        await self.store.create_key(rec)
        return {**rec.public(), "key": secret}

    async def _key(self, method: str, kid: str, rest: list[str], body: bytes) -> tuple[int, Any]:
        if rest == ["topup"]:
            nanos = money_nanos(decode(body, TopUp).amount)
            held = await self.store.get_key(kid)
            if held is not None and (held.spent if held.budget is None else held.budget) + nanos > MAX_NANOS:
                raise Conflict("This top-up would take the budget past 10^9 currency units.", param="amount",
                               code="money_cap_exceeded")
            rec = await self.store.top_up(kid, nanos)
        elif method == "GET":
            rec = await self.store.get_key(kid)
        elif method == "PATCH":
            f = decode(body, KeyFields)
            await self.accounts.check_account(None if f.account_id is UNSET else f.account_id)
            rec = await self.store.update_key(kid, changes(f))
            self.relay.auth.forget(kid)
        else:
            if not await self.store.revoke_key(kid) and await self.store.get_key(kid) is None:
                raise NotFound(f"No key {kid}.")
            self.relay.auth.forget(kid)
            rec = await self.store.get_key(kid)
        if rec is None:
            raise NotFound(f"No key {kid}.")
        return 200, rec.public()

    def _providers(self) -> dict[str, Any]:
        cool = self.relay.cooldowns
        models = []
        for name in self.relay.table.names():
            route = self.relay.table.get(name)
            assert route is not None
            models.append({"name": name, "owned_by": route.owned_by, "targets": [
                {"provider": t.provider, "model": t.model, "weight": t.weight, "priority": t.priority,
                 "healthy": cool.available(t)} for tier in route.tiers for t in tier]})
        providers = [{"name": p.name, "kind": p.kind, "base_url": p.base_url} for p in
                     (self.catalog.current if self.catalog else self._settings).providers]
        return {"providers": providers, "models": models}


class DashboardRoutes:
    """What a key can see about itself."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    async def handle(self, scope: Scope, receive: Receive, send: Send, headers: Headers) -> None:
        try:
            body = await read_body(scope, receive, 1 << 16)
            key = await self.relay.auth.authenticate(header(scope, b"authorization"))
            path = scope["path"][len("/v1/dashboard/"):].strip("/")
            if path in ("history", "redeem", "prices"):
                doc = await owner_account(self.relay, key, scope["method"], path, _query(scope), body)
            else:
                doc = await self._dispatch(key, path, _query(scope))
        except SluiceError as exc:
            await send_error(send, exc, headers)
            return
        await send_json(send, 200, doc, headers)

    async def _dispatch(self, key: KeyRecord, path: str, q: dict[str, str]) -> Any:
        store = self.relay.store
        fresh = await store.get_key(key.id) or key
        if path in ("", "me"):
            return {**fresh.public(), "models_available": [r.name for r in self.relay.models_for(fresh)],
                    **await account_doc(self.relay, fresh)}
        lq, group = ledger_params(q)
        lq.key_id = key.id
        if path == "usage":
            return {"data": [r.public() for r in await store.usage(lq, group)]}
        if path == "requests":
            return {"data": [r.public() for r in await store.list_ledger(lq)]}
        if path.startswith("requests/"):
            rec = await store.get_ledger(path.split("/", 1)[1])
            if rec is None or rec.key_id != key.id:
                raise NotFound("No such request for this key.")
            return rec.public()
        raise NotFound(f"Unknown dashboard route: /v1/dashboard/{path}", code="unknown_url")


def _query(scope: Scope) -> dict[str, str]:
    raw = scope.get("query_string") or b""
    return {k: v[-1] for k, v in parse_qs(raw.decode("latin-1"), keep_blank_values=True).items()}


# The admin routes (path pattern -> methods), the same the OpenAPI document lists: a known path asked with
# another method is a 405 with `Allow`, an unknown path a 404.
_ROUTES: dict[tuple[str, ...], tuple[str, ...]] = {
    ("openapi.json",): ("GET",), ("keys",): ("GET", "POST"), ("keys", "*"): ("GET", "PATCH", "DELETE"),
    ("keys", "*", "topup"): ("POST",), ("usage",): ("GET",), ("requests",): ("GET",),
    ("requests", "*"): ("GET",), ("providers",): ("GET",),
    ("accounts",): ("GET", "POST"), ("accounts", "*"): ("GET", "PATCH"), ("accounts", "*", "topup"): ("POST",),
    ("accounts", "*", "adjust"): ("POST",), ("accounts", "*", "history"): ("GET",), ("groups",): ("GET", "POST"),
    ("groups", "*"): ("GET",), ("codes",): ("GET", "POST"),
    ("channels",): ("GET",), ("channels", "*", "test"): ("POST",),
    ("channels", "*", "keys", "*", "enable"): ("POST",), ("channels", "*", "keys", "*", "disable"): ("POST",),
    ("catalog",): ("GET",), ("catalog", "providers", "*"): ("GET", "PUT", "DELETE"),
    ("catalog", "models", "*"): ("GET", "PUT", "DELETE")}


def _pattern(parts: list[str]) -> tuple[str, ...]:
    """The _ROUTES key of a path: names in place of `*` (a catalog model's name may hold slashes)."""
    if parts[0] == "catalog" and len(parts) >= 3:
        return ("catalog", parts[1], "*")
    names = (1, 3) if parts[0] == "channels" else (1,)
    return tuple("*" if i in names and p else p for i, p in enumerate(parts))


def _check_method(method: str, path: str, parts: list[str]) -> None:
    pattern = _pattern(parts) if parts else ()
    allowed = _ROUTES.get(pattern)
    if allowed is None or not all(parts):
        raise NotFound(f"Unknown admin route: {method} /admin/{path}", code="unknown_url")
    if method not in allowed:
        raise MethodNotAllowed(f"{method} is not allowed on /admin/{path}; use {', '.join(allowed)}.", allowed)
