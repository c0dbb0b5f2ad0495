"""Schema migrations and key CRUD, the same on both backends."""

from __future__ import annotations

import asyncio
import time

from sluice.storage.base import Store
from sluice.storage.migrations import POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS
from tests.unit.storage.conftest import Backend, key

T_BASE = 1_700_000_000.0


def _migrations(backend: Backend) -> list[str]:
    return SQLITE_MIGRATIONS if backend.name == "sqlite" else POSTGRES_MIGRATIONS


async def test_opening_twice_keeps_schema_and_data(backend: Backend) -> None:
    first = await backend.store()
    await first.create_key(key("k1"))
    await first.open()  # the same instance again
    await first.close()
    second = await backend.store()
    assert (await second.get_key("k1")) is not None
    assert await backend.applied_versions() == list(range(1, len(_migrations(backend)) + 1))


async def test_processes_starting_at_once_migrate_exactly_once(backend: Backend) -> None:
    stores = [backend.new() for _ in range(backend.processes + 2)]
    await asyncio.gather(*(s.open() for s in stores))
    assert await backend.applied_versions() == list(range(1, len(_migrations(backend)) + 1))
    assert await stores[-1].count_keys() == 0


async def test_create_get_list_count(store: Store) -> None:
    await store.create_key(key("k1", created_at=T_BASE + 2, owner="ann", models=["gpt-x", "claude-y"],
                               budget=5_000, metadata={"team": "search", "n": 3}))
    await store.create_key(key("k2", created_at=T_BASE + 1))
    got = await store.get_key("k1")
    assert got is not None
    assert (got.name, got.key_hash, got.owner, got.models, got.budget) == ("k1", "hash-k1", "ann",
                                                                          ["gpt-x", "claude-y"], 5_000)
    assert got.metadata == {"team": "search", "n": 3}
    assert (got.enabled, got.revoked, got.spent, got.reserved, got.created_at) == (True, False, 0, 0, T_BASE + 2)
    plain = await store.get_key("k2")
    assert plain is not None and plain.models is None and plain.metadata == {} and plain.budget is None
    assert [k.id for k in await store.list_keys()] == ["k2", "k1"]   # by creation time
    assert await store.count_keys() == 2
    assert await store.get_key("nope") is None


async def test_update_key_sets_allowed_fields_only(store: Store) -> None:
    await store.create_key(key("k1"))
    before = time.time()
    got = await store.update_key("k1", {
        "name": "renamed", "owner": "bob", "models": ["m1"], "enabled": False, "expires_at": before + 3600.5,
        "budget": 10**15, "token_quota": 1_000, "period": "week", "rpm": 60, "tpm": 9_000,
        "max_concurrency": 4, "metadata": {"tier": "gold"}, "key_hash": "forged", "spent": 99})
    assert got is not None
    assert (got.name, got.owner, got.models, got.enabled, got.expires_at) == ("renamed", "bob", ["m1"], False,
                                                                             before + 3600.5)
    assert (got.budget, got.token_quota, got.period, got.rpm, got.tpm, got.max_concurrency) == (
        10**15, 1_000, "week", 60, 9_000, 4)
    assert got.metadata == {"tier": "gold"}
    assert got.period_start >= before          # a new period starts when the period is set
    assert (got.key_hash, got.spent) == ("hash-k1", 0)
    cleared = await store.update_key("k1", {"models": None, "budget": None, "metadata": {}})
    assert cleared is not None and cleared.models is None and cleared.budget is None and cleared.metadata == {}
    assert await store.update_key("nope", {"name": "x"}) is None
    assert await store.update_key("k1", {}) == cleared


async def test_revoke(store: Store) -> None:
    await store.create_key(key("k1"))
    await store.create_key(key("k2"))
    assert await store.revoke_key("k1") is True
    assert await store.revoke_key("k1") is False     # already revoked
    assert await store.revoke_key("nope") is False
    got = await store.get_key("k1")
    assert got is not None and got.revoked and not got.active
    assert await store.count_keys() == 1
    assert len(await store.list_keys()) == 2         # revoked keys are still listed



async def test_the_first_key_is_created_once_by_processes_starting_at_once(backend: Backend) -> None:
    stores = [await backend.store() for _ in range(backend.processes + 3)]
    won = await asyncio.gather(*(s.create_first_key(key(f"k{i}")) for i, s in enumerate(stores)))
    assert sorted(won) == [False] * (len(stores) - 1) + [True]
    assert [k.id for k in await stores[0].list_keys()] == [f"k{won.index(True)}"]
    assert await stores[-1].create_first_key(key("late")) is False


async def test_no_first_key_once_any_key_exists_even_revoked(store: Store) -> None:
    await store.create_key(key("k1"))
    await store.revoke_key("k1")
    assert await store.create_first_key(key("k2")) is False  # revoking every key must not mint a new one
    assert [k.id for k in await store.list_keys()] == ["k1"]
