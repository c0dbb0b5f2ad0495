"""The reservation batcher: group commit, one answer per caller, failures and cancellation (a fake store
at the seam; the stores' own reserve_many is tested on both backends in tests/unit/storage)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from sluice.metering.reservations import ReservationBatcher
from sluice.storage.base import Reservation


class FakeStore:
    """Grants while the key's budget lasts; each reserve_many waits for `gate` when one is set."""

    def __init__(self, budget: int = 10**9) -> None:
        self.budget = budget
        self.batches: list[list[str]] = []
        self.gate: asyncio.Event | None = None
        self.fail: Exception | None = None

    async def reserve_many(self, batch: Sequence[Reservation]) -> list[bool]:
        self.batches.append([r.request_id for r in batch])
        await asyncio.sleep(0)              # a transaction in flight: callers may queue meanwhile
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            fail, self.fail = self.fail, None
            raise fail
        out = []
        for r in batch:
            out.append(r.nanos <= self.budget)
            self.budget -= r.nanos if out[-1] else 0
        return out


def res(rid: str, nanos: int = 1) -> Reservation:
    return Reservation("k1", rid, nanos, 0, "i1")


async def test_callers_arriving_together_or_during_a_batch_share_the_next_one() -> None:
    store = FakeStore(budget=6)
    b = ReservationBatcher(store)
    got = await asyncio.gather(*(b.reserve(res(f"r{i}", 1 + i % 2)) for i in range(6)))
    assert store.batches == [["r0", "r1", "r2", "r3", "r4", "r5"]]
    assert got == [True, True, True, True, False, False]      # 1, 2, 1, 2 fit in 6; then neither
    store.budget = 10
    store.gate = asyncio.Event()
    lone = asyncio.ensure_future(b.reserve(res("lone")))
    await asyncio.sleep(0.01)                                  # in flight, alone
    queued = [asyncio.ensure_future(b.reserve(res(f"q{i}"))) for i in range(3)]
    await asyncio.sleep(0.01)
    store.gate.set()
    assert await lone and all(await asyncio.gather(*queued))
    assert store.batches[1:] == [["lone"], ["q0", "q1", "q2"]]


async def test_batches_are_capped() -> None:
    store = FakeStore()
    b = ReservationBatcher(store, max_batch=3)
    assert all(await asyncio.gather(*(b.reserve(res(f"r{i}")) for i in range(8))))
    assert [len(x) for x in store.batches] == [3, 3, 2]


async def test_a_failed_batch_fails_its_callers_only() -> None:
    store = FakeStore()
    store.gate = asyncio.Event()
    b = ReservationBatcher(store)
    first = asyncio.ensure_future(b.reserve(res("r0")))
    await asyncio.sleep(0.01)
    store.fail = RuntimeError("database went away")
    rest = [asyncio.ensure_future(b.reserve(res(f"r{i}"))) for i in (1, 2)]
    store.gate.set()
    with pytest.raises(RuntimeError):
        await first
    assert await asyncio.gather(*rest) == [True, True]
    assert store.batches == [["r0"], ["r1", "r2"]]


async def test_a_caller_cancelled_before_its_batch_is_sent_is_left_out() -> None:
    store = FakeStore()
    store.gate = asyncio.Event()
    b = ReservationBatcher(store)
    first = asyncio.ensure_future(b.reserve(res("r0")))
    await asyncio.sleep(0.01)
    gone = asyncio.ensure_future(b.reserve(res("gone")))
    stays = asyncio.ensure_future(b.reserve(res("stays")))
    await asyncio.sleep(0.01)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    store.gate.set()
    assert await first and await stays
    assert store.batches == [["r0"], ["stays"]]


async def test_a_caller_cancelled_after_its_batch_was_sent_waits_for_it_to_land() -> None:
    """So a granted reservation is in the database before the cancelled request settles (and settling
    releases it)."""
    store = FakeStore()
    store.gate = asyncio.Event()
    b = ReservationBatcher(store)
    caller = asyncio.ensure_future(b.reserve(res("r0")))
    await asyncio.sleep(0.01)
    assert store.batches == [["r0"]]
    caller.cancel()
    await asyncio.sleep(0.01)
    assert not caller.done()
    store.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert store.budget == 10**9 - 1          # it was granted: the store holds it


async def test_aclose_waits_for_what_is_queued() -> None:
    store = FakeStore()
    b = ReservationBatcher(store)
    pending = [asyncio.ensure_future(b.reserve(res(f"r{i}"))) for i in range(5)]
    await asyncio.sleep(0)
    await b.aclose()
    assert all(p.done() for p in pending) and sum(len(x) for x in store.batches) == 5
