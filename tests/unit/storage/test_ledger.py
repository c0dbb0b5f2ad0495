"""Ledger reads on both backends: one record, filtered listings, usage per key/model/bucket, the summary."""

from __future__ import annotations

from sluice.storage.base import LedgerQuery, LedgerRecord, Store, UsageRow
from tests.unit.storage.conftest import T0, entry, key

BIG = 123_456_789_012_345   # nano-units: well past float precision once summed


async def _seed(store: Store) -> list[LedgerRecord]:
    await store.create_key(key("k1", name="alpha"))
    await store.create_key(key("k2", name="beta"))
    records = [
        entry("a", "k1", model="m1", status=200, created_at=T0 + 10, cost=BIG, prompt_tokens=10,
              completion_tokens=1),
        entry("b", "k1", model="m1", status=429, created_at=T0 + 20, cost=None, error_code="rate_limited"),
        entry("c", "k1", model="m2", status=200, created_at=T0 + 3_600 + 5, cost=BIG + 1, prompt_tokens=7,
              completion_tokens=3),
        entry("d", "k2", model="m1", status=500, created_at=T0 + 3_600 + 6, cost=3, prompt_tokens=2),
        entry("e", "k2", model="m1", status=200, created_at=T0 + 86_400 + 1, cost=BIG, prompt_tokens=4,
              completion_tokens=4),
    ]
    await store.write_ledger(records)
    return records


def _ids(rows: list[LedgerRecord]) -> list[str]:
    return [r.request_id for r in rows]


async def test_get_ledger_round_trips_every_field(store: Store) -> None:
    rec = entry("r1", "k1", model="gpt-x", provider="openai", upstream_model="gpt-x-2024", stream=True,
                status=200, prompt_tokens=11, completion_tokens=22, cached_tokens=5, usage_source="estimated",
                ttft_ms=12.5, duration_ms=345.25, disconnected=True, error_code=None, attempts=2,
                created_at=T0 + 0.125, extra={"route": ["a", "b"], "n": 1}, cost=BIG,
                cache_write_5m_tokens=0, cache_write_1h_tokens=7, session_id="sess-1")
    bare = entry("r2", None, ttft_ms=None, duration_ms=1.0, usage_source="none")
    await store.write_ledger([rec, bare])
    assert await store.get_ledger("r1") == rec
    got = await store.get_ledger("r2")
    assert got == bare and got.extra == {} and got.cost is None and got.prompt_tokens is None
    assert await store.get_ledger("nope") is None


async def test_list_ledger_filters_and_orders_newest_first(store: Store) -> None:
    await _seed(store)
    assert _ids(await store.list_ledger(LedgerQuery())) == ["e", "d", "c", "b", "a"]
    assert _ids(await store.list_ledger(LedgerQuery(key_id="k1"))) == ["c", "b", "a"]
    assert _ids(await store.list_ledger(LedgerQuery(model="m1"))) == ["e", "d", "b", "a"]
    assert _ids(await store.list_ledger(LedgerQuery(status=429))) == ["b"]
    assert _ids(await store.list_ledger(LedgerQuery(status=0))) == ["d", "b"]          # any error
    assert _ids(await store.list_ledger(LedgerQuery(since=T0 + 20, until=T0 + 3_600 + 6))) == ["c", "b"]
    assert _ids(await store.list_ledger(LedgerQuery(key_id="k2", model="m1", status=0))) == ["d"]
    assert _ids(await store.list_ledger(LedgerQuery(limit=2))) == ["e", "d"]
    assert await store.list_ledger(LedgerQuery(key_id="nope")) == []


async def test_usage_without_buckets_sums_exactly(store: Store) -> None:
    await _seed(store)
    assert await store.usage(LedgerQuery(), None) == [
        UsageRow("k1", "alpha", "m1", requests=2, prompt_tokens=10, completion_tokens=1, errors=1, cost=BIG),
        UsageRow("k1", "alpha", "m2", requests=1, prompt_tokens=7, completion_tokens=3, errors=0, cost=BIG + 1),
        UsageRow("k2", "beta", "m1", requests=2, prompt_tokens=6, completion_tokens=4, errors=1, cost=BIG + 3),
    ]


async def test_usage_sums_cache_reads_and_writes_apart(store: Store) -> None:
    await store.create_key(key("k1", name="alpha"))
    await store.write_ledger([
        entry("x1", model="m", prompt_tokens=100, completion_tokens=1, cached_tokens=60, cache_write_5m_tokens=10,
              cache_write_1h_tokens=None),
        entry("x2", model="m", prompt_tokens=50, completion_tokens=1, cached_tokens=None, cache_write_5m_tokens=5,
              cache_write_1h_tokens=20),
        entry("x3", model="m", prompt_tokens=9, completion_tokens=1),   # nothing reported adds nothing
    ])
    for rows in (await store.usage(LedgerQuery(), None), await store.usage(LedgerQuery(), "day"),
                 await store.usage_summary()):
        assert len(rows) == 1
        r = rows[0]
        assert (r.prompt_tokens, r.cached_tokens, r.cache_write_5m_tokens, r.cache_write_1h_tokens) == (159, 60, 15, 20)


async def test_usage_by_hour_and_day(store: Store) -> None:
    await _seed(store)
    by_hour = [(r.bucket, r.key_id, r.model, r.requests, r.cost) for r in await store.usage(LedgerQuery(), "hour")]
    assert by_hour == [
        (T0, "k1", "m1", 2, BIG),
        (T0 + 3_600, "k1", "m2", 1, BIG + 1),
        (T0 + 3_600, "k2", "m1", 1, 3),
        (T0 + 86_400, "k2", "m1", 1, BIG),
    ]
    by_day = [(r.bucket, r.key_id, r.model, r.requests, r.errors, r.cost)
              for r in await store.usage(LedgerQuery(), "day")]
    assert by_day == [
        (T0, "k1", "m1", 2, 1, BIG),
        (T0, "k1", "m2", 1, 0, BIG + 1),
        (T0, "k2", "m1", 1, 1, 3),
        (T0 + 86_400, "k2", "m1", 1, 0, BIG),
    ]
    assert all(isinstance(r.bucket, float) for r in await store.usage(LedgerQuery(), "day"))


async def test_usage_honours_the_filters(store: Store) -> None:
    await _seed(store)
    rows = await store.usage(LedgerQuery(key_id="k2", since=T0 + 3_600), "day")
    assert [(r.bucket, r.requests, r.cost) for r in rows] == [(T0, 1, 3), (T0 + 86_400, 1, BIG)]
    errors = await store.usage(LedgerQuery(status=0), None)
    assert [(r.key_id, r.requests, r.errors, r.cost) for r in errors] == [("k1", 1, 1, 0), ("k2", 1, 1, 3)]
    assert await store.usage(LedgerQuery(model="nope"), "hour") == []


async def test_usage_summary(store: Store) -> None:
    await _seed(store)
    await store.write_ledger([entry("x", None, model="m9", status=502, cost=None, prompt_tokens=1)])
    rows = await store.usage_summary()
    assert [r for r in rows if r.key_id is not None] == [
        r for r in await store.usage(LedgerQuery(), None) if r.key_id is not None]
    # where rows without a key sort differs by dialect (NULLs first or last); their content does not
    assert [r for r in rows if r.key_id is None] == [
        UsageRow(None, None, "m9", requests=1, prompt_tokens=1, completion_tokens=0, errors=1, cost=0)]
