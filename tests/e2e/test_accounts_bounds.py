"""The accounts, groups and codes admin routes keep to their OpenAPI document: out-of-range input is a 400
naming the field, a reference to no account a 404 naming it, a well-formed request the current state refuses
(a balance at the money cap, a batch already expired) a 409, each status documented. A real `sluice serve`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.e2e.cluster import ADMIN_TOKEN, serving, two_speed_config
from tests.e2e.test_accounts import admin

ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}

# (method, path, body or None for a query, the param the 400 names)
BAD: list[tuple[str, str, Any, str | None]] = [
    ("POST", "/admin/accounts", {"name": " \t\u0085"}, "name"),        # a name holds a visible character
    ("POST", "/admin/accounts", {"name": "\u00a0\ufeff"}, "name"),
    ("POST", "/admin/accounts", {"name": "x" * 201}, "name"),
    ("POST", "/admin/accounts", {"group": "vip"}, "name"),               # the name is required
    ("POST", "/admin/accounts", {"name": "a", "balance": "1e30"}, "balance"),
    ("PATCH", "/admin/accounts/{id}", {"balance": "5"}, "balance"),    # only a top-up changes the balance
    ("PATCH", "/admin/accounts/{id}", {"group": "\u2003"}, "group"),
    ("POST", "/admin/accounts/{id}/topup", {"amount": "0"}, "amount"),
    ("POST", "/admin/accounts/{id}/topup", {"amount": -1}, "amount"),
    ("POST", "/admin/accounts/{id}/adjust", {"amount": "-0.000"}, "amount"),
    ("POST", "/admin/accounts/{id}/adjust", {"amount": 0}, "amount"),
    ("POST", "/admin/accounts/{id}/adjust", {"amount": "-1", "note": "n" * 501}, "note"),
    ("GET", "/admin/accounts/{id}/history?limit=0", None, "limit"),
    ("GET", "/admin/accounts/{id}/history?since=-1", None, "since"),
    ("POST", "/admin/groups", {"name": "g", "multiplier": "1000.5"}, "multiplier"),
    ("POST", "/admin/groups", {"name": "g", "models": {"m": -1}}, "models"),
    ("POST", "/admin/codes", {"count": 10_001, "amount": "1"}, "count"),
    ("POST", "/admin/codes", {"count": 1, "amount": "0"}, "amount"),
    ("GET", "/admin/codes?limit=10001", None, "limit"),
]


async def _call(http: aiohttp.ClientSession, base: str, method: str, path: str, body: Any) -> tuple[int, Any]:
    async with http.request(method, base + path, json=body, headers=ADMIN) as r:
        assert r.headers["x-request-id"].startswith("req_")
        return r.status, await r.json()


async def test_account_routes_answer_with_their_documented_statuses(tmp_path: Path) -> None:
    cfg = two_speed_config(tmp_path, f"sqlite:///{tmp_path / 'sluice.db'}", slow_tps=50)
    async with serving(cfg, tmp_path, "bounds") as s, aiohttp.ClientSession() as http:
        doc = await admin(http, s.url, "GET", "/admin/openapi.json")
        acct = await admin(http, s.url, "POST", "/admin/accounts", {"name": "acme", "balance": "999999999"},
                           status=201)
        for method, path, body, param in BAD:
            status, err = await _call(http, s.url, method, path.format(id=acct["id"]), body)
            assert status == 400 and err["error"]["param"] == param, (method, path, body, err)
            assert "400" in _responses(doc, path, method), (method, path)

        got = [await _call(http, s.url, "POST", f"/admin/accounts/{acct['id']}/{kind}", {"amount": "999999999"})
               for kind in ("topup", "adjust")]
        assert [(st, e["error"]["code"], e["error"]["param"]) for st, e in got] == [
            (409, "money_cap_exceeded", "amount")] * 2
        st, past = await _call(http, s.url, "POST", "/admin/codes",
                               {"count": 1, "amount": "1", "expires_at": time.time() - 60})
        assert (st, past["error"]["code"], past["error"]["param"]) == (409, "already_expired", "expires_at")
        for path in ("/admin/accounts/{id}/topup", "/admin/accounts/{id}/adjust", "/admin/codes"):
            assert "409" in _responses(doc, path, "POST"), path

        for method in ("POST", "PATCH"):     # a key naming no account: the account is what is missing
            path = "/admin/keys" if method == "POST" else f"/admin/keys/{(await _key(http, s.url))['id']}"
            st, err = await _call(http, s.url, method, path, {"name": "k", "account_id": "acct_nope"})
            assert (st, err["error"]["code"], err["error"]["param"]) == (404, "account_not_found", "account_id")
        assert "404" in _responses(doc, "/admin/keys", "POST")

        # What is in range still works, and the balance moved only by what was granted.
        await admin(http, s.url, "POST", f"/admin/accounts/{acct['id']}/adjust", {"amount": "-0.5", "note": "fix"})
        renamed = await admin(http, s.url, "PATCH", f"/admin/accounts/{acct['id']}",
                              {"name": " acme2 ", "group": "g\u2003"})
        assert (renamed["name"], renamed["group"], renamed["balance"]) == ("acme2", "g", "999999998.5")
        group = await admin(http, s.url, "POST", "/admin/groups", {"name": "g", "multiplier": 1000,
                                                                   "models": {"m": "0.25"}})
        assert (group["multiplier"], group["models"]) == ("1000", {"m": "0.25"})


async def _key(http: aiohttp.ClientSession, base: str) -> Any:
    return await admin(http, base, "POST", "/admin/keys", {"name": "k"}, status=201)


def _responses(doc: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    op: dict[str, Any] = doc["paths"][path.split("?")[0]][method.lower()]
    return op["responses"]
