"""The reservation batcher: group commit, one answer per caller, failures and cancellation (a fake store
at the seam; the stores' own reserve_many is tested on both backends in tests/unit/storage)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from sluice.metering.reservations import ReservationBatcher
from sluice.storage.base import Reservation


class FakeStore:
    """Grants while the budget lasts. A batch holding a request_id in `holds` waits for that event (a
    transaction in flight); one holding a request_id in `fail_on` raises that exception."""

    def __init__(self, budget: int = 10**9, *, yields: bool = True) -> None:
        self.budget = budget
        self.yields = yields        # False: answers without giving the loop a turn (SQLite's inline commit)
        self.batches: list[list[str]] = []
        self.holds: dict[str, asyncio.Event] = {}
        self.fail_on: dict[str, Exception] = {}
        self.tasks: list[asyncio.Task[object] | None] = []

    async def reserve_many(self, batch: Sequence[Reservation]) -> list[bool]:
        self.batches.append([r.request_id for r in batch])
        self.tasks.append(asyncio.current_task())
        if self.yields:
            await asyncio.sleep(0)
        for r in batch:
            if r.request_id in self.holds:
                await self.holds[r.request_id].wait()
        for r in batch:
            if r.request_id in self.fail_on:
                raise self.fail_on[r.request_id]
        out = []
        for r in batch:
            out.append(r.nanos <= self.budget)
            self.budget -= r.nanos if out[-1] else 0
        return out

    def hold(self, request_id: str) -> asyncio.Event:
        self.holds[request_id] = asyncio.Event()
        return self.holds[request_id]


def res(rid: str, nanos: int = 1) -> Reservation:
    return Reservation("k1", rid, nanos, 0, "i1")


async def test_a_lone_reservation_is_sent_from_the_callers_own_task() -> None:
    store = FakeStore()
    b = ReservationBatcher(store)

    async def caller() -> tuple[bool, asyncio.Task[object] | None]:
        return await b.reserve(res("r0")), asyncio.current_task()
    ok, task = await asyncio.ensure_future(caller())
    assert ok and store.tasks == [task]


async def test_callers_arriving_together_or_during_a_batch_share_the_next_one() -> None:
    store = FakeStore(budget=7)
    b = ReservationBatcher(store)
    release = store.hold("lone")
    lone = asyncio.ensure_future(b.reserve(res("lone")))
    await asyncio.sleep(0.01)                                  # in flight, alone
    queued = [asyncio.ensure_future(b.reserve(res(f"q{i}", 1 + i % 2))) for i in range(6)]
    await asyncio.sleep(0.01)
    assert store.batches == [["lone"]]
    release.set()
    assert await lone
    assert await asyncio.gather(*queued) == [True, True, True, True, False, False]  # 1, 2, 1, 2 fit in 6
    assert store.batches == [["lone"], ["q0", "q1", "q2", "q3", "q4", "q5"]]


async def test_a_burst_is_batched_even_when_the_store_answers_without_yielding() -> None:
    store = FakeStore(yields=False)
    b = ReservationBatcher(store)
    assert all(await asyncio.gather(*(b.reserve(res(f"r{i}")) for i in range(5))))
    assert store.batches == [["r0"], ["r1", "r2", "r3", "r4"]]


async def test_batches_are_capped() -> None:
    store = FakeStore()
    b = ReservationBatcher(store, max_batch=3)
    release = store.hold("r0")
    first = asyncio.ensure_future(b.reserve(res("r0")))
    await asyncio.sleep(0.01)
    rest = [asyncio.ensure_future(b.reserve(res(f"r{i}"))) for i in range(1, 8)]
    release.set()
    assert await first and all(await asyncio.gather(*rest))
    assert [len(x) for x in store.batches] == [1, 3, 3, 1]


async def test_a_failed_batch_fails_its_callers_only() -> None:
    store = FakeStore()
    b = ReservationBatcher(store)
    release = store.hold("r0")
    store.fail_on["r1"] = RuntimeError("database went away")
    first = asyncio.ensure_future(b.reserve(res("r0")))
    await asyncio.sleep(0.01)
    failing = [asyncio.ensure_future(b.reserve(res(f"r{i}"))) for i in (1, 2)]
    release.set()
    assert await first
    for f in failing:
        with pytest.raises(RuntimeError):
            await f
    assert await b.reserve(res("r3"))
    assert store.batches == [["r0"], ["r1", "r2"], ["r3"]]


async def test_a_caller_cancelled_before_its_batch_is_sent_is_left_out() -> None:
    store = FakeStore()
    b = ReservationBatcher(store)
    release = store.hold("r0")
    first = asyncio.ensure_future(b.reserve(res("r0")))
    await asyncio.sleep(0.01)
    gone = asyncio.ensure_future(b.reserve(res("gone")))
    stays = asyncio.ensure_future(b.reserve(res("stays")))
    await asyncio.sleep(0.01)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    release.set()
    assert await first and await stays
    assert store.batches == [["r0"], ["stays"]]


async def test_a_caller_cancelled_after_its_batch_was_sent_waits_for_it_to_land() -> None:
    """So a granted reservation is in the database before the cancelled request settles (and settling
    releases it). A lone reservation, sent from the caller's task, gets the same from the store itself:
    asyncpg waits for the server to finish or cancel the statement before the connection goes back, and
    SQLite's one thread runs jobs in order, so a later settlement comes after."""
    store = FakeStore()
    b = ReservationBatcher(store)
    release_first, release_mine = store.hold("r0"), store.hold("mine")
    first = asyncio.ensure_future(b.reserve(res("r0")))
    await asyncio.sleep(0.01)
    mine = asyncio.ensure_future(b.reserve(res("mine")))
    release_first.set()
    await asyncio.sleep(0.01)
    assert store.batches == [["r0"], ["mine"]]
    mine.cancel()
    await asyncio.sleep(0.01)
    assert not mine.done()
    release_mine.set()
    with pytest.raises(asyncio.CancelledError):
        await mine
    assert await first and store.budget == 10**9 - 2          # it was granted: the store holds it


async def test_aclose_waits_for_what_is_queued() -> None:
    store = FakeStore()
    b = ReservationBatcher(store)
    release = store.hold("r0")
    first = asyncio.ensure_future(b.reserve(res("r0")))
    await asyncio.sleep(0)
    pending = [asyncio.ensure_future(b.reserve(res(f"r{i}"))) for i in range(1, 5)]
    await asyncio.sleep(0)
    release.set()
    await first
    await b.aclose()
    assert all(p.done() for p in pending) and sum(len(x) for x in store.batches) == 5
