"""Retention on both backends: old request-log rows become daily sums and are deleted, usage and the
balance history read the same totals before and after, and of two instances rolling up at once one
does it."""

from __future__ import annotations

import asyncio

from sluice.accounts.records import AccountRecord
from sluice.accounts.retention import cutoff, roll_up
from sluice.accounts.store import AccountStore
from sluice.storage.base import LedgerQuery, Store, UsageRow
from tests.unit.storage.conftest import T0, Backend, entry, key

OLD = T0 - 10 * 86400


async def _fill(store: Store) -> None:
    await AccountStore(store).create_account(AccountRecord("a1", "acme", credit=10_000))
    await store.create_key(key("k1", account_id="a1"))
    await store.write_ledger([
        entry("o1", cost=100, prompt_tokens=10, completion_tokens=5, created_at=OLD + 10, account_id="a1"),
        entry("o2", cost=50, prompt_tokens=4, completion_tokens=1, created_at=OLD + 20, account_id="a1"),
        entry("o3", cost=0, status=502, created_at=OLD + 30, account_id="a1"),
        entry("n1", cost=7, prompt_tokens=1, completion_tokens=1, created_at=T0, account_id="a1")])


def _totals(rows: list[UsageRow]) -> list[tuple[object, ...]]:
    return sorted((r.key_id, r.model, r.requests, r.prompt_tokens, r.completion_tokens, r.errors, r.cost)
                  for r in rows)


async def test_old_rows_become_daily_sums_with_the_same_totals(store: Store) -> None:
    await _fill(store)
    before = (_totals(await store.usage(LedgerQuery(), "day")), _totals(await store.usage_summary()),
              [(e.kind, e.amount) for e in await AccountStore(store).history("a1")])
    assert await roll_up(store, cutoff(T0, 5), "inst-a")
    assert [r.request_id for r in await store.list_ledger(LedgerQuery())] == ["n1"]
    after = (_totals(await store.usage(LedgerQuery(), "day")), _totals(await store.usage_summary()),
             [(e.kind, e.amount) for e in await AccountStore(store).history("a1")])
    assert after == before
    assert _totals(await store.usage(LedgerQuery(since=OLD - 86400, until=OLD + 86400), None)) == [
        ("k1", "m", 3, 14, 6, 1, 150)]


async def test_two_instances_rolling_up_at_once_do_it_once(backend: Backend) -> None:
    stores = [await backend.store() for _ in range(2)]
    await _fill(stores[0])
    ran = await asyncio.gather(*(roll_up(s, cutoff(T0, 5), f"inst-{i}") for i, s in enumerate(stores)))
    assert sorted(ran) == [False, True]
    rows = await stores[0].usage(LedgerQuery(until=T0), None)
    assert _totals(rows) == [("k1", "m", 3, 14, 6, 1, 150)]


def test_cutoff_is_a_whole_utc_day() -> None:
    assert cutoff(T0 + 3600, 5) == T0 - 5 * 86400
