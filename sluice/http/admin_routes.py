"""The admin API under /admin/ (admin token, separate from user keys) and a key owner's /v1/dashboard/.

Admin: keys CRUD, top-ups, usage (by key / model / time, grouped by hour or day), the request log and
one request's record, providers and models with their health, and the OpenAPI document.
Owner: its own balance, limits, usage and requests, with nothing but its own key.
"""

from __future__ import annotations

import hmac
import time
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs

import msgspec
from msgspec import UNSET, UnsetType

from sluice.auth.keys import hash_key, new_key
from sluice.channels.catalog import Catalog
from sluice.config import Settings
from sluice.errors import AuthenticationFailed, InvalidRequest, NotFound, SluiceError
from sluice.http.asgi import Headers, Receive, Scope, Send, header, read_body, send_error, send_json
from sluice.http.channel_routes import catalog_route, channel_route
from sluice.http.openapi import OPENAPI
from sluice.metering.pricing import to_nanos
from sluice.relay import Relay
from sluice.schema.chat import parse_json_object
from sluice.storage.base import PERIODS, KeyRecord, LedgerQuery


class KeyFields(msgspec.Struct, forbid_unknown_fields=True):
    """Key fields an admin may set; absent fields stay as they are, `null` clears a limit."""

    name: str | UnsetType = UNSET
    owner: str | UnsetType | None = UNSET
    models: list[str] | UnsetType | None = UNSET
    enabled: bool | UnsetType = UNSET
    expires_at: float | UnsetType | None = UNSET
    budget: str | float | int | UnsetType | None = UNSET
    token_quota: int | UnsetType | None = UNSET
    period: str | UnsetType | None = UNSET
    rpm: int | UnsetType | None = UNSET
    tpm: int | UnsetType | None = UNSET
    max_concurrency: int | UnsetType | None = UNSET
    metadata: dict[str, Any] | UnsetType | None = UNSET


class AdminRoutes:
    def __init__(self, settings: Settings, relay: Relay, catalog: Catalog | None = None) -> None:
        self._token = settings.admin.token
        self._settings = settings
        self.relay = relay
        self.catalog = catalog
        self.store = relay.store

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
        if not self._token:
            raise AuthenticationFailed("The admin API is disabled: set admin.token in the config or "
                                       "SLUICE_ADMIN_TOKEN in the environment.", code="admin_disabled")
        got = header(scope, b"authorization") or b""
        scheme, _, value = got.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), self._token.encode()):
            raise AuthenticationFailed("Admin credentials required: Authorization: Bearer <admin token>.",
                                       code="invalid_admin_token")

    async def _dispatch(self, method: str, path: str, q: dict[str, str], body: bytes) -> tuple[int, Any]:
        parts = path.split("/") if path else []
        if parts == ["openapi.json"]:
            return 200, OPENAPI
        if parts == ["keys"]:
            if method == "GET":
                return 200, {"data": [k.public() for k in await self.store.list_keys()]}
            if method == "POST":
                return 201, await self._create_key(body)
        if len(parts) >= 2 and parts[0] == "keys":
            return await self._key(method, parts[1], parts[2:], body)
        if parts == ["usage"] and method == "GET":
            rows = await self.store.usage(_ledger_query(q), _group(q))
            return 200, {"data": [r.public() for r in rows]}
        if parts == ["requests"] and method == "GET":
            return 200, {"data": [r.public() for r in await self.store.list_ledger(_ledger_query(q))]}
        if len(parts) == 2 and parts[0] == "requests" and method == "GET":
            rec = await self.store.get_ledger(parts[1])
            if rec is None:
                raise NotFound(f"No request {parts[1]} in the ledger.")
            return 200, rec.public()
        if parts == ["providers"] and method == "GET":
            return 200, self._providers()
        if parts and parts[0] == "channels":
            return await channel_route(self.relay.channels, method, parts[1:], body)
        if parts and parts[0] == "catalog":
            return await catalog_route(self.catalog, method, parts[1:], body)
        raise NotFound(f"Unknown admin route: {method} /admin/{path}", code="unknown_url")

    async def _create_key(self, body: bytes) -> dict[str, Any]:
        f = _fields(body)
        if not isinstance(f.name, str) or not f.name:
            raise InvalidRequest("'name' is required", param="name")
        kid, secret = new_key()
        rec = KeyRecord(kid, f.name, hash_key(secret), created_at=time.time())
        for k, v in _changes(f).items():
            setattr(rec, k, v)
        await self.store.create_key(rec)
        return {**rec.public(), "key": secret}

    async def _key(self, method: str, kid: str, rest: list[str], body: bytes) -> tuple[int, Any]:
        if rest == ["topup"] and method == "POST":
            doc = parse_json_object(body)
            nanos = _money(doc.get("amount"), "amount")
            if nanos <= 0:
                raise InvalidRequest("'amount' must be positive", param="amount")
            rec = await self.store.top_up(kid, nanos)
        elif rest:
            raise NotFound(f"Unknown admin route: /admin/keys/{kid}/{'/'.join(rest)}", code="unknown_url")
        elif method == "GET":
            rec = await self.store.get_key(kid)
        elif method == "PATCH":
            rec = await self.store.update_key(kid, _changes(_fields(body)))
            self.relay.auth.forget(kid)
        elif method == "DELETE":
            if not await self.store.revoke_key(kid) and await self.store.get_key(kid) is None:
                raise NotFound(f"No key {kid}.")
            self.relay.auth.forget(kid)
            rec = await self.store.get_key(kid)
        else:
            raise NotFound(f"Unknown admin route: {method} /admin/keys/{kid}", code="unknown_url")
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
            await read_body(scope, receive, 1 << 16)
            key = await self.relay.auth.authenticate(header(scope, b"authorization"))
            doc = await self._dispatch(key, scope["path"][len("/v1/dashboard/"):].strip("/"), _query(scope))
        except SluiceError as exc:
            await send_error(send, exc, headers)
            return
        await send_json(send, 200, doc, headers)

    async def _dispatch(self, key: KeyRecord, path: str, q: dict[str, str]) -> Any:
        store = self.relay.store
        fresh = await store.get_key(key.id) or key
        if path in ("", "me"):
            return {**fresh.public(), "models_available": [r.name for r in self.relay.models_for(fresh)]}
        lq = _ledger_query(q)
        lq.key_id = key.id
        if path == "usage":
            return {"data": [r.public() for r in await store.usage(lq, _group(q))]}
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
    return {k: v[-1] for k, v in parse_qs(raw.decode("latin-1")).items()}


def _ledger_query(q: dict[str, str]) -> LedgerQuery:
    try:
        return LedgerQuery(
            key_id=q.get("key_id") or q.get("key"), model=q.get("model"),
            status=int(q["status"]) if q.get("status") not in (None, "") else None,
            since=float(q["since"]) if q.get("since") else None,
            until=float(q["until"]) if q.get("until") else None,
            limit=int(q.get("limit") or 100))
    except ValueError as exc:
        raise InvalidRequest(f"bad query parameter: {exc}") from None


def _group(q: dict[str, str]) -> str | None:
    g = q.get("group") or None
    if g not in (None, "hour", "day"):
        raise InvalidRequest("'group' must be hour or day", param="group")
    return g


def _fields(body: bytes) -> KeyFields:
    try:
        return msgspec.json.decode(body or b"{}", type=KeyFields)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"invalid key fields: {exc}") from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}", code="invalid_json") from None


def _changes(f: KeyFields) -> dict[str, Any]:
    out = {k: getattr(f, k) for k in f.__struct_fields__ if getattr(f, k) is not UNSET}
    if out.get("budget") is not None:
        out["budget"] = _money(out["budget"], "budget")
    if out.get("period") is not None and out["period"] not in PERIODS:
        raise InvalidRequest("'period' must be day, week or month", param="period")
    for name in ("token_quota", "rpm", "tpm", "max_concurrency"):
        if out.get(name) is not None and out[name] < 1:
            raise InvalidRequest(f"'{name}' must be a positive integer, or null for no limit", param=name)
    return out


def _money(v: Any, param: str) -> int:
    try:
        d = Decimal(str(v))
    except InvalidOperation:
        raise InvalidRequest(f"'{param}' must be a decimal amount", param=param) from None
    if not d.is_finite() or d < 0:
        raise InvalidRequest(f"'{param}' must be a non-negative amount", param=param)
    return to_nanos(d)
