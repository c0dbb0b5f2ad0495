"""No batch is poisoned by one record (issue 10, item 2), on both backends: a ledger batch or a reservation
batch holding one value the database cannot take (beyond BIGINT) is retried one by one; the poison record is
quarantined (ledger) or fails its own caller only (reservation), and every other record commits."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3

import asyncpg
import pytest

from sluice.metering.ledger import LedgerWriter
from sluice.metering.reservations import ReservationBatcher
from sluice.storage.base import Reservation, Store
from tests.unit.storage.conftest import Backend, entry, key

POISON = 2**63 + 5      # one past int64: what an upstream reported before usage was clamped


async def _quarantined(backend: Backend) -> list[tuple[str, str | None, str, str]]:
    text = "SELECT request_id, key_id, record, error FROM ledger_quarantine ORDER BY request_id"
    if backend.name == "sqlite":
        with sqlite3.connect(backend.url[len("sqlite:///"):]) as db:
            return list(db.execute(text).fetchall())
    con = await asyncpg.connect(backend.url)
    try:
        return [tuple(r) for r in await con.fetch(text)]  # type: ignore[misc]
    finally:
        await con.close()


async def test_a_poison_record_is_quarantined_and_its_batch_commits(
        backend: Backend, store: Store, caplog: pytest.LogCaptureFixture) -> None:
    await store.create_key(key("k1", budget=10**6))
    await store.create_key(key("k2", budget=10**6))
    writer = LedgerWriter(store, batch=500)
    for i in range(30):
        writer.submit(entry(f"r{i:02}", "k1", cost=100, prompt_tokens=5, completion_tokens=5))
        if i == 17:
            writer.submit(entry("poison", "k2", cost=7, prompt_tokens=POISON, completion_tokens=1))
    with caplog.at_level(logging.ERROR, logger="sluice.ledger"):
        await writer.flush()
    assert writer._pending == []        # nothing kept back for the next flush
    for i in range(30):
        assert await store.get_ledger(f"r{i:02}") is not None
    assert await store.get_ledger("poison") is None
    k1, k2 = await store.get_key("k1"), await store.get_key("k2")
    assert k1 is not None and k2 is not None
    assert (k1.spent, k1.tokens_used, k2.spent) == (3000, 300, 0)
    [(rid, kid, record, error)] = await _quarantined(backend)
    assert (rid, kid) == ("poison", "k2")
    assert json.loads(record)["prompt_tokens"] == POISON
    assert error
    said = [r for r in caplog.records if "quarantined" in r.getMessage()]
    assert len(said) == 1 and "poison" in said[0].getMessage()

    # the next flush goes on as usual, and a writer that sees the poison again does not charge twice
    writer.submit(entry("after", "k1", cost=1))
    writer.submit(entry("poison", "k2", cost=7, prompt_tokens=POISON))
    await writer.flush()
    assert await store.get_ledger("after") is not None
    assert len(await _quarantined(backend)) == 1


async def test_a_database_failure_is_not_mistaken_for_a_poison_record(backend: Backend) -> None:
    store = await backend.store()
    writer = LedgerWriter(store)
    writer.submit(entry("kept", None))
    await store.close()                 # the database went away: nothing is quarantined, all is kept
    await writer.flush()
    assert [r.request_id for r in writer._pending] == ["kept"]


async def test_a_poison_reservation_fails_its_caller_only(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    await store.create_key(key("k1", budget=10**6))
    batcher = ReservationBatcher(store)

    def res(rid: str, nanos: int) -> Reservation:
        return Reservation("k1", rid, nanos, 0, "i1")
    with caplog.at_level(logging.ERROR, logger="sluice.reservations"):
        # called together: the first goes alone, the rest queue behind it as one batch with the poison
        results = await asyncio.gather(*(batcher.reserve(res(f"r{i}", POISON if i == 5 else 10))
                                         for i in range(12)), return_exceptions=True)
    await batcher.aclose()
    assert isinstance(results[5], Exception), results[5]     # OverflowError, asyncpg DataError
    assert [r for i, r in enumerate(results) if i != 5] == [True] * 11
    assert await store.count_reservations() == 11
    k1 = await store.get_key("k1")
    assert k1 is not None and k1.reserved == 110
    assert any("r5" in r.getMessage() for r in caplog.records)
