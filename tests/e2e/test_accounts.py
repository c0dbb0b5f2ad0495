"""Accounts, groups and redemption codes through the admin API and a key's dashboard, on real processes:
the account pays at its group's prices (the ledger says list price, multiplier and charge), its keys see
its balance, history and prices, and one code redeemed 50 times at once across three instances
(PostgreSQL + Redis) credits the account once."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from tests.e2e.cluster import ADMIN_TOKEN, aquery, pg_database, redis_db, serving, two_speed_config

ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}


async def admin(http: aiohttp.ClientSession, base: str, method: str, path: str, body: Any = None,
                status: int = 200) -> Any:
    async with http.request(method, base + path, json=body, headers=ADMIN) as r:
        doc = await r.json()
        assert r.status == status, doc
        return doc


async def owner(http: aiohttp.ClientSession, base: str, key: str, method: str, path: str, body: Any = None
                ) -> tuple[int, Any]:
    async with http.request(method, base + "/v1/dashboard/" + path, json=body,
                            headers={"authorization": f"Bearer {key}"}) as r:
        return r.status, await r.json()


async def test_an_account_pays_for_its_keys_at_its_group_prices(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sluice.db'}"
    async with serving(two_speed_config(tmp_path, url, slow_tps=50), tmp_path, "acct") as s, \
            aiohttp.ClientSession() as http:
        await admin(http, s.url, "POST", "/admin/groups", {"name": "vip", "multiplier": "0.5",
                                                             "models": {"slow-sim": "2"}})
        acct = await admin(http, s.url, "POST", "/admin/accounts", {"name": "acme", "group": "vip",
                                                                     "balance": "1.00"}, status=201)
        key = await admin(http, s.url, "POST", "/admin/keys", {"name": "acme-cli", "account_id": acct["id"]},
                          status=201)
        bad = await admin(http, s.url, "POST", "/admin/keys", {"name": "x", "account_id": "acct_nope"}, status=404)
        assert bad["error"]["code"] == "account_not_found" and bad["error"]["param"] == "account_id"
        client = openai.AsyncOpenAI(base_url=s.url + "/v1", api_key=key["key"], max_retries=0)
        reply = await client.chat.completions.with_raw_response.create(
            model="fast-sim", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
        rid = reply.headers["x-request-id"]
        (cost, extra, account_id), = await aquery(
            url, "SELECT cost, extra, account_id FROM ledger WHERE request_id = ?", rid)
        assert account_id == acct["id"] and '"multiplier":"0.5"' in extra
        list_cost = Decimal(extra.split('"list_cost":"')[1].split('"')[0])
        assert Decimal(cost) / 10**9 == list_cost * Decimal("0.5") > 0       # half the list price
        assert reply.headers["x-sluice-cost"] == str((Decimal(cost) / 10**9).normalize())
        models = {m.id: m for m in (await client.models.list()).data}
        assert models["fast-sim"].model_extra["pricing"]["input"] == "0.5"      # type: ignore[index]
        assert models["slow-sim"].model_extra["pricing"]["multiplier"] == "2"   # type: ignore[index]
        status, me = await owner(http, s.url, key["key"], "GET", "me")
        assert status == 200 and me["account"]["id"] == acct["id"]
        assert Decimal(me["account"]["balance"]) == 1 - Decimal(cost) / 10**9
        status, hist = await owner(http, s.url, key["key"], "GET", "history")
        assert status == 200 and sorted(e["kind"] for e in hist["data"]) == ["charges", "topup"]
        await admin(http, s.url, "PATCH", f"/admin/accounts/{acct['id']}", {"enabled": False})
        with pytest.raises(openai.PermissionDeniedError) as err:
            await client.chat.completions.create(model="fast-sim", messages=[{"role": "user", "content": "hi"}])
        assert err.value.code == "account_disabled"
        await client.close()
        listed = await admin(http, s.url, "GET", "/admin/accounts")
        assert [a["id"] for a in listed["data"]] == [acct["id"]] and listed["data"][0]["enabled"] is False


async def test_codes_are_exported_once_and_give_clear_errors(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sluice.db'}"
    async with serving(two_speed_config(tmp_path, url, slow_tps=50), tmp_path, "codes") as s, \
            aiohttp.ClientSession() as http:
        acct = await admin(http, s.url, "POST", "/admin/accounts", {"name": "acme"}, status=201)
        key = await admin(http, s.url, "POST", "/admin/keys", {"name": "k", "account_id": acct["id"]}, status=201)
        batch = await admin(http, s.url, "POST", "/admin/codes", {"count": 3, "amount": "2.50"}, status=201)
        assert len(batch["codes"]) == 3 and batch["csv"].count("\n") == 4
        stored = await aquery(url, "SELECT code_hash FROM redemption_codes")
        assert len(stored) == 3 and not any(c in str(stored) for c in batch["codes"])   # hashes only
        listed = await admin(http, s.url, "GET", f"/admin/codes?batch_id={batch['batch_id']}")
        assert not any(c in str(listed) for c in batch["codes"])
        code = batch["codes"][0]
        status, got = await owner(http, s.url, key["key"], "POST", "redeem", {"code": code.lower()})
        assert status == 200 and got["redeemed"] == "2.5" and got["account"]["balance"] == "2.5"
        status, again = await owner(http, s.url, key["key"], "POST", "redeem", {"code": code})
        assert status == 409 and again["error"]["code"] == "code_already_used"
        status, unknown = await owner(http, s.url, key["key"], "POST", "redeem", {"code": "SLC-AAAA-BBBB-CCCC-DDDD"})
        assert status == 404 and unknown["error"]["code"] == "code_not_found"
        hist = await admin(http, s.url, "GET", f"/admin/accounts/{acct['id']}/history")
        assert [e["kind"] for e in hist["data"]] == ["redeem"]


@pytest.fixture
def pg_and_redis() -> Iterator[tuple[str, str]]:
    with pg_database("sluice_codes") as pg_url, redis_db() as redis_url:
        yield pg_url, redis_url


@pytest.mark.postgres
@pytest.mark.redis
async def test_one_code_redeemed_50_times_across_three_instances_credits_once(
        tmp_path: Path, pg_and_redis: tuple[str, str]) -> None:
    pg_url, redis_url = pg_and_redis
    cfg = two_speed_config(tmp_path, pg_url, slow_tps=50, tables={"redis": {"url": redis_url}})
    async with serving(cfg, tmp_path, "a") as a, serving(cfg, tmp_path, "b") as b, \
            serving(cfg, tmp_path, "c") as c, aiohttp.ClientSession() as http:
        acct = await admin(http, a.url, "POST", "/admin/accounts", {"name": "acme"}, status=201)
        key = await admin(http, b.url, "POST", "/admin/keys", {"name": "k", "account_id": acct["id"]},
                          status=201)
        code = (await admin(http, c.url, "POST", "/admin/codes", {"count": 1, "amount": "7"}, status=201))["codes"][0]
        bases = [a.url, b.url, c.url]
        got = await asyncio.gather(*(owner(http, bases[i % 3], key["key"], "POST", "redeem", {"code": code})
                                     for i in range(50)))
        statuses = sorted(st for st, _ in got)
        assert statuses == [200] + [409] * 49, statuses
        final = await admin(http, a.url, "GET", f"/admin/accounts/{acct['id']}")
        assert final["balance"] == "7" and final["credit"] == "7"
        assert await aquery(pg_url, "SELECT count(*) FROM balance_events WHERE kind = 'redeem'") == [(1,)]


async def test_the_retention_job_rolls_up_old_rows_in_a_running_server(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sluice.db'}"
    cfg = two_speed_config(tmp_path, url, slow_tps=50,
                           tables={"ledger": {"retention_days": 1, "retention_check_seconds": 1}})
    async with serving(cfg, tmp_path, "retention"):
        with sqlite3.connect(tmp_path / "sluice.db", timeout=30) as db:   # commits on leaving
            db.execute("INSERT INTO ledger (request_id, key_id, model, stream, status, usage_source, duration_ms, "
                       "disconnected, attempts, cost, created_at) "
                       "VALUES ('req_old', 'k1', 'fast-sim', 0, 200, 'reported', 1, 0, 1, 42, ?)",
                       (time.time() - 3 * 86400,))
        db.close()
        deadline = time.monotonic() + 20
        while await aquery(url, "SELECT count(*) FROM ledger") != [(0,)]:
            assert time.monotonic() < deadline, "the retention job did not run"
            await asyncio.sleep(0.1)
        assert await aquery(url, "SELECT key_id, requests, cost FROM usage_daily") == [("k1", 1, 42)]
