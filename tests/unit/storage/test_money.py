"""Budgets on both backends: top-ups, atomic reservations (one by one and in batches) across processes,
settlement in batches, and reconciliation."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from sluice.metering.reservations import ReservationBatcher
from sluice.storage.base import LedgerQuery, Reservation, Store
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
    later = time.time() + 61  # the reconciler's clock, past the instance timeout: no waiting on the wall clock
    assert await store.reconcile("alive", 60, 3600, now=later) == 2
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
    # as of the reconciler's clock, r1 is older than the TTL (no waiting on the wall clock) ...
    assert await store.reconcile("alive", 3600, 30, now=time.time() + 31) == 1
    assert await store.reserve("k1", "r2", 50, 0, "alive")
    # ... and r2, reserved after it, is not yet
    assert await store.reconcile("alive", 3600, 30, now=time.time() + 29) == 0
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



# --- batches: reserve_many and set-based write_ledger -------------------------------------------------


async def test_reserve_many_answers_each_as_one_by_one_would(store: Store) -> None:
    await store.create_key(key("k1", budget=100))
    await store.create_key(key("k2", token_quota=10))
    assert await store.reserve("k1", "held", 5, 0, "i1")
    batch = [Reservation("k1", "a", 60, 0, "i1"), Reservation("k2", "b", 0, 6, "i1"),
             Reservation("k1", "c", 50, 0, "i1"),     # does not fit after a: refused
             Reservation("k1", "d", 35, 0, "i1"),     # still fits: 5 + 60 + 35 = 100
             Reservation("k2", "e", 0, 5, "i1"),      # 6 + 5 > 10
             Reservation("k2", "f", 0, 4, "i1"),
             Reservation("nope", "g", 1, 1, "i1"),   # unknown key
             Reservation("k1", "a", 0, 0, "i1"),      # the same request again: refused, not doubled
             Reservation("k1", "held", 0, 0, "i1")]   # already holds a reservation
    assert await store.reserve_many(batch) == [True, True, False, True, False, True, False, False, False]
    k1, k2 = await store.get_key("k1"), await store.get_key("k2")
    assert k1 is not None and k1.reserved == 100
    assert k2 is not None and k2.tokens_reserved == 10
    assert await store.count_reservations() == 5
    assert await store.reserve_many([]) == []


async def test_batched_reservations_across_processes_never_overspend(backend: Backend) -> None:
    """Each process has its own batcher; 200 concurrent requests against a budget for 50, and 200 on
    another key against a token quota for 30."""
    stores = [await backend.store() for _ in range(backend.processes)]
    await stores[0].create_key(key("k1", budget=50, token_quota=10**6))
    await stores[0].create_key(key("k2", budget=10**6, token_quota=30))
    batchers = [ReservationBatcher(s) for s in stores]
    granted = await asyncio.gather(*(
        batchers[i % len(stores)].reserve(Reservation(f"k{1 + i % 2}", f"r{i}", 1 + i % 2, 1, "i1"))
        for i in range(400)))
    assert sum(granted[0::2]) == 50 and sum(granted[1::2]) == 30
    k1, k2 = await stores[-1].get_key("k1"), await stores[-1].get_key("k2")
    assert k1 is not None and (k1.reserved, k1.tokens_reserved) == (50, 50)
    assert k2 is not None and (k2.reserved, k2.tokens_reserved) == (60, 30)
    assert await stores[0].count_reservations() == 80


async def test_concurrent_batches_on_shared_keys_in_opposite_orders(backend: Backend) -> None:
    """Batches from several processes over the same keys, listed in opposite orders, neither deadlock
    nor grant more than fits."""
    stores = [await backend.store() for _ in range(backend.processes)]
    names = [f"k{i}" for i in range(8)]
    for k in names:
        await stores[0].create_key(key(k, budget=30))

    def batch(p: int, n: int) -> list[Reservation]:
        order = names if (p + n) % 2 else names[::-1]
        return [Reservation(k, f"p{p}-b{n}-{k}", 1, 0, f"i{p}") for k in order]
    answers = await asyncio.gather(*(stores[p].reserve_many(batch(p, n))
                                     for n in range(20) for p in range(len(stores))))
    assert sum(map(sum, answers)) == 30 * len(names)
    for k in names:
        got = await stores[0].get_key(k)
        assert got is not None and got.reserved == 30


async def test_write_ledger_charges_a_request_once_within_and_across_batches(store: Store) -> None:
    await store.create_key(key("k1", budget=1_000, token_quota=1_000))
    assert await store.reserve("k1", "r1", 100, 50, "i1")
    assert await store.reserve("k1", "r2", 100, 50, "i1")
    first = entry("r1", cost=30, prompt_tokens=10, completion_tokens=2)
    again = entry("r1", cost=99, prompt_tokens=90, completion_tokens=9, status=500)   # a later copy
    await store.write_ledger([first, again, entry("r2", cost=5, prompt_tokens=1), first])
    await store.write_ledger([again, entry("r2", cost=7, prompt_tokens=3)])
    got = await store.get_key("k1")
    assert got is not None
    assert (got.spent, got.reserved, got.tokens_used, got.tokens_reserved) == (35, 0, 13, 0)
    assert await store.get_ledger("r1") == first        # the first copy is the one kept
    assert await store.count_reservations() == 0


async def test_write_ledger_aggregates_a_batch_mixing_keys(store: Store) -> None:
    await store.create_key(key("k1", budget=10_000, token_quota=10_000))
    await store.create_key(key("k2", budget=10_000))
    await store.create_key(key("k3", spent=4))                   # unmetered: charged, never reserved
    await store.create_key(key("k4", budget=100))                # only a failed request, nothing to charge
    reserved = {"a": ("k1", 500, 100), "b": ("k1", 300, 60), "c": ("k2", 800, 0), "d": ("k2", 200, 0)}
    for rid, (k, nanos, tokens) in reserved.items():
        assert await store.reserve(k, rid, nanos, tokens, "i1")
    assert await store.reserve("k1", "other", 11, 1, "i1")       # stays held: not in the batch
    await store.write_ledger([
        entry("a", "k1", cost=120, prompt_tokens=10, completion_tokens=20),
        entry("c", "k2", cost=700, prompt_tokens=100, completion_tokens=100),
        entry("x", "k3", cost=9, prompt_tokens=3),
        entry("b", "k1", cost=None, status=502, error_code="upstream_error"),   # failed: releases only
        entry("y", None, cost=1_000, prompt_tokens=5),            # no key: recorded, charged to no one
        entry("d", "k2", cost=50, prompt_tokens=900, completion_tokens=900, quota_tokens=40),
        entry("z", "k4", cost=None, status=429),
    ])
    k1, k2, k3, k4 = [await store.get_key(k) for k in ("k1", "k2", "k3", "k4")]
    assert k1 is not None and (k1.spent, k1.reserved, k1.tokens_used, k1.tokens_reserved) == (120, 11, 30, 1)
    assert k2 is not None and (k2.spent, k2.reserved, k2.tokens_used, k2.tokens_reserved) == (750, 0, 240, 0)
    assert k3 is not None and (k3.spent, k3.tokens_used) == (13, 3)
    assert k4 is not None and (k4.spent, k4.reserved, k4.tokens_used) == (0, 0, 0)
    assert await store.count_reservations() == 1
    assert len(await store.list_ledger(_all())) == 7


async def test_reconcile_releases_batched_reservations_of_a_dead_process(backend: Backend) -> None:
    dead, alive = await backend.store(), await backend.store()
    await alive.create_key(key("k1", budget=100, token_quota=100))
    await dead.reconcile("dead", 60, 3600)
    batcher = ReservationBatcher(dead)
    got = await asyncio.gather(*(batcher.reserve(Reservation("k1", f"r{i}", 10, 5, "dead")) for i in range(15)))
    assert sum(got) == 10
    await dead.close()                                          # the process dies holding the whole budget
    assert not await alive.reserve("k1", "late", 1, 1, "alive")
    assert await alive.reconcile("alive", 60, 3600, now=time.time() + 61) == 10
    k1 = await alive.get_key("k1")
    assert k1 is not None and (k1.reserved, k1.tokens_reserved) == (0, 0)
    assert await alive.reserve("k1", "late", 100, 100, "alive")
    # a record the dead process wrote late still charges once and releases nothing twice
    await alive.write_ledger([entry("r0", cost=7, prompt_tokens=2)])
    k1 = await alive.get_key("k1")
    assert k1 is not None and (k1.spent, k1.reserved, k1.tokens_used, k1.tokens_reserved) == (7, 100, 2, 100)


async def test_cancelled_reservations_leave_nothing_held_once_their_requests_settle(backend: Backend) -> None:
    """Clients that go away while their reservation waits on a busy database: alone (sent from the
    caller's task) or queued in a batch, what they may have reserved is released when they settle."""
    store = await backend.store()
    await store.create_key(key("k1", budget=100))
    batcher = ReservationBatcher(store)
    async with _writer_lock(backend):
        alone = asyncio.ensure_future(batcher.reserve(Reservation("k1", "alone", 10, 1, "i1")))
        await asyncio.sleep(0.1)
        queued = asyncio.ensure_future(batcher.reserve(Reservation("k1", "queued", 10, 1, "i1")))
        never_sent = asyncio.ensure_future(batcher.reserve(Reservation("k1", "never", 10, 1, "i1")))
        await asyncio.sleep(0.1)
        never_sent.cancel()
        alone.cancel()           # its queue goes out as the next batch, which waits for the lock too
        with pytest.raises(asyncio.CancelledError):
            await alone
        await asyncio.sleep(0.1)
        queued.cancel()
        await asyncio.sleep(0.1)
        assert not queued.done()  # sent: waits for its transaction to end
    with pytest.raises(asyncio.CancelledError):
        await queued
    await store.write_ledger([entry(rid, status=499) for rid in ("alone", "queued", "never")])
    got = await store.get_key("k1")
    assert got is not None and (got.spent, got.reserved, got.tokens_reserved) == (0, 0, 0)
    assert await store.count_reservations() == 0
    assert await store.reserve("k1", "after", 100, 0, "i1")


@contextlib.asynccontextmanager
async def _writer_lock(backend: Backend) -> AsyncIterator[None]:
    """Another process holding what a reservation needs: SQLite's write lock, or PostgreSQL's row lock on
    key k1."""
    if backend.name == "sqlite":
        db = sqlite3.connect(backend.url[len("sqlite:///"):], isolation_level=None)
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            db.execute("ROLLBACK")
            db.close()
        return
    con = await asyncpg.connect(backend.url)
    try:
        async with con.transaction():
            await con.execute("SELECT 1 FROM keys WHERE id = 'k1' FOR UPDATE")
            yield
    finally:
        await con.close()
