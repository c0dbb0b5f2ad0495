"""Budgets on both backends: top-ups, atomic reservations across processes, settlement and reconciliation."""

from __future__ import annotations

import asyncio
import time

from sluice.storage.base import LedgerQuery, Store
from tests.unit.storage.conftest import Backend, entry, key


async def test_top_up_adds_to_a_budget(store: Store) -> None:
    await store.create_key(key("k1", budget=100, spent=40))
    got = await store.top_up("k1", 50)
    assert got is not None and (got.budget, got.spent) == (150, 40)


async def test_top_up_without_a_budget_starts_one_at_spent(store: Store) -> None:
    await store.create_key(key("k1", spent=30))
    got = await store.top_up("k1", 50)
    assert got is not None and got.budget == 80
    assert await store.top_up("nope", 5) is None


async def test_reserve_refuses_what_does_not_fit_the_budget(store: Store) -> None:
    await store.create_key(key("k1", budget=100, spent=10))
    assert await store.reserve("k1", "r1", 60, 0, "i1")
    assert not await store.reserve("k1", "r2", 31, 0, "i1")
    assert await store.reserve("k1", "r3", 30, 0, "i1")        # exactly up to the budget
    assert not await store.reserve("k1", "r4", 1, 0, "i1")
    got = await store.get_key("k1")
    assert got is not None and (got.spent, got.reserved) == (10, 90)
    assert await store.count_reservations() == 2


async def test_reserve_refuses_what_does_not_fit_the_token_quota(store: Store) -> None:
    await store.create_key(key("k1", token_quota=100, tokens_used=20))
    assert await store.reserve("k1", "r1", 0, 70, "i1")
    assert not await store.reserve("k1", "r2", 0, 11, "i1")
    assert await store.reserve("k1", "r3", 0, 10, "i1")
    got = await store.get_key("k1")
    assert got is not None and got.tokens_reserved == 80


async def test_reserve_without_limits_and_on_unknown_keys(store: Store) -> None:
    await store.create_key(key("k1"))
    assert await store.reserve("k1", "r1", 10**12, 10**6, "i1")
    assert not await store.reserve("nope", "r2", 1, 1, "i1")
    assert await store.count_reservations() == 1


async def test_concurrent_reservations_across_processes_never_overspend(backend: Backend) -> None:
    stores = [await backend.store() for _ in range(backend.processes)]
    await stores[0].create_key(key("k1", budget=50))
    granted = await asyncio.gather(*(
        stores[i % len(stores)].reserve("k1", f"r{i}", 1, 0, f"i{i % len(stores)}") for i in range(200)))
    assert sum(granted) == 50
    got = await stores[-1].get_key("k1")
    assert got is not None and got.reserved == 50
    assert await stores[0].count_reservations() == 50


async def test_write_ledger_settles_the_reservation(store: Store) -> None:
    await store.create_key(key("k1", budget=1_000, token_quota=1_000))
    assert await store.reserve("k1", "r1", 300, 500, "i1")
    await store.write_ledger([entry("r1", cost=120, prompt_tokens=10, completion_tokens=20)])
    got = await store.get_key("k1")
    assert got is not None
    assert (got.spent, got.reserved, got.tokens_used, got.tokens_reserved) == (120, 0, 30, 0)
    assert await store.count_reservations() == 0


async def test_write_ledger_charges_without_reservation_and_capped_tokens(store: Store) -> None:
    await store.create_key(key("k1", budget=1_000, token_quota=1_000))
    await store.write_ledger([
        entry("r1", cost=7, prompt_tokens=10, completion_tokens=20),
        entry("r2", cost=5, prompt_tokens=900, completion_tokens=900, quota_tokens=40),
        entry("r3", key_id=None, cost=1_000_000, prompt_tokens=1),   # no key: recorded, charged to no one
    ])
    got = await store.get_key("k1")
    assert got is not None and (got.spent, got.tokens_used) == (12, 70)
    assert await store.get_ledger("r3") is not None


async def test_write_ledger_is_idempotent(backend: Backend) -> None:
    a, b = await backend.store(), await backend.store()
    await a.create_key(key("k1", budget=10**9))
    await a.create_key(key("k2", budget=10**9))
    records = [entry(f"r{i:02}", key_id=f"k{1 + i % 2}", cost=1_000 + i, prompt_tokens=1) for i in range(20)]
    for r in records:
        assert await a.reserve(r.key_id or "", r.request_id, 2_000, 5, "i1")
    await a.write_ledger([records[0], records[0]])               # twice in one batch
    await a.write_ledger(records[:2])                            # again in a second batch
    # ...and concurrently from two processes, in opposite orders
    await asyncio.gather(a.write_ledger(records), b.write_ledger(records[::-1]),
                         *(b.write_ledger([r]) for r in records))
    for key_id, mine in (("k1", records[0::2]), ("k2", records[1::2])):
        got = await b.get_key(key_id)
        assert got is not None
        assert (got.spent, got.reserved, got.tokens_used, got.tokens_reserved) == (
            sum(r.cost or 0 for r in mine), 0, len(mine), 0)
    assert await a.count_reservations() == 0
    assert len(await a.list_ledger(_all())) == 20


async def test_reconcile_releases_reservations_of_silent_instances(store: Store) -> None:
    await store.create_key(key("k1", budget=1_000, token_quota=1_000))
    assert await store.reconcile("stopped", 60, 3600) == 0     # it heart-beat once, then stopped
    assert await store.reserve("k1", "r1", 100, 10, "stopped")
    assert await store.reserve("k1", "r2", 200, 20, "never-seen")
    assert await store.reserve("k1", "r3", 300, 30, "alive")
    await asyncio.sleep(0.3)
    assert await store.reconcile("alive", 0.2, 3600) == 2
    got = await store.get_key("k1")
    assert got is not None and (got.reserved, got.tokens_reserved) == (300, 30)
    assert await store.count_reservations() == 1
    # a late settlement of a released request still charges once, and releases nothing twice
    await store.write_ledger([entry("r1", cost=90, prompt_tokens=5)])
    got = await store.get_key("k1")
    assert got is not None and (got.spent, got.reserved, got.tokens_used, got.tokens_reserved) == (90, 300, 5, 30)


async def test_reconcile_releases_reservations_older_than_the_ttl(store: Store) -> None:
    await store.create_key(key("k1", budget=1_000))
    assert await store.reserve("k1", "r1", 100, 0, "alive")
    assert await store.reconcile("alive", 60, 3600) == 0
    await asyncio.sleep(0.2)
    assert await store.reserve("k1", "r2", 50, 0, "alive")
    assert await store.reconcile("alive", 60, 0.1) == 1
    got = await store.get_key("k1")
    assert got is not None and got.reserved == 50


async def test_reconcile_resets_ended_periods(store: Store) -> None:
    now = time.time()
    await store.create_key(key("day", period="day", period_start=now - 86_401, spent=500, tokens_used=40))
    await store.create_key(key("week", period="week", period_start=now - 86_401, spent=5, tokens_used=4))
    await store.create_key(key("month", period="month", period_start=now - 2_592_001, spent=6))
    await store.create_key(key("none", spent=7))
    await store.reconcile("i1", 60, 3600)
    day, week, month, none = [await store.get_key(k) for k in ("day", "week", "month", "none")]
    assert day is not None and (day.spent, day.tokens_used) == (0, 0) and day.period_start >= now
    assert week is not None and (week.spent, week.tokens_used, week.period_start) == (5, 4, now - 86_401)
    assert month is not None and month.spent == 0
    assert none is not None and none.spent == 7


def _all() -> LedgerQuery:
    return LedgerQuery(limit=1_000)

