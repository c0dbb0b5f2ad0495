"""Accounts on both backends: a key's reservation holds on its account too (or on neither), settlement
charges both, concurrent reservations across store instances never overspend the account, reconciliation
releases the account's hold; groups, balance events and redemption codes (used exactly once)."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

from sluice.accounts.records import AccountRecord, CodeRecord, GroupRecord
from sluice.accounts.store import AccountStore
from sluice.storage.base import Reservation, Store
from tests.unit.storage.conftest import Backend, entry, key


async def _account(store: Store, credit: int, acct_id: str = "a1") -> AccountStore:
    accounts = AccountStore(store)
    await accounts.create_account(AccountRecord(acct_id, "acme", credit=credit))
    return accounts


def res(request_id: str, nanos: int, key_id: str = "k1", account_id: str | None = "a1") -> Reservation:
    return Reservation(key_id, request_id, nanos, 0, "i1", account_id)


async def test_reservation_holds_on_key_and_account_and_settles_both(store: Store) -> None:
    accounts = await _account(store, 100)
    await store.create_key(key("k1", account_id="a1"))
    await store.create_key(key("k2", account_id="a1", budget=30))   # a sub-budget within the account
    assert await store.reserve_many([res("r1", 60), res("r2", 31, "k2"), res("r3", 30, "k2")]) == [True, False, True]
    a = await accounts.get_account("a1")
    assert a is not None and a.reserved == 90
    assert not (await store.reserve_many([res("r4", 11)]))[0]     # the account has 10 left
    k2 = await store.get_key("k2")
    assert k2 is not None and k2.reserved == 30                   # the refused one left nothing on the key
    await store.write_ledger([entry("r1", "k1", cost=50, account_id="a1"), entry("r3", "k2", cost=30, account_id="a1")])
    a = await accounts.get_account("a1")
    assert a is not None and (a.spent, a.reserved, a.balance) == (80, 0, 20)
    k1, k2 = await store.get_key("k1"), await store.get_key("k2")
    assert k1 is not None and k2 is not None and (k1.spent, k1.reserved, k2.spent, k2.reserved) == (50, 0, 30, 0)
    await store.write_ledger([entry("r1", "k1", cost=50, account_id="a1")])   # written again: charged once
    a = await accounts.get_account("a1")
    assert a is not None and a.spent == 80


async def test_a_refusing_account_gives_the_key_hold_back(store: Store) -> None:
    await _account(store, 10)
    await store.create_key(key("k1", account_id="a1", budget=1000))
    assert await store.reserve_many([res("r1", 20)]) == [False]
    k1 = await store.get_key("k1")
    assert k1 is not None and k1.reserved == 0 and await store.count_reservations() == 0


async def test_disabled_account_reserves_nothing(store: Store) -> None:
    accounts = await _account(store, 100)
    await store.create_key(key("k1", account_id="a1"))
    await accounts.update_account("a1", {"enabled": False})
    assert await store.reserve_many([res("r1", 1)]) == [False]


async def test_concurrent_reservations_across_instances_never_overspend_the_account(backend: Backend) -> None:
    stores = [await backend.store() for _ in range(backend.processes)]
    await _account(stores[0], 50)
    for i in range(4):     # four keys of one account, no budgets of their own
        await stores[0].create_key(key(f"k{i}", account_id="a1"))
    calls = [stores[n % len(stores)].reserve_many([res(f"r{n}", 1, f"k{n % 4}")]) for n in range(200)]
    granted = sum(got[0] for got in await asyncio.gather(*calls))
    assert granted == 50
    a = await AccountStore(stores[0]).get_account("a1")
    assert a is not None and a.reserved == 50


async def test_reconcile_releases_the_account_hold_of_a_dead_instance(store: Store) -> None:
    accounts = await _account(store, 100)
    await store.create_key(key("k1", account_id="a1"))
    assert await store.reserve_many([Reservation("k1", "r1", 40, 0, "dead", "a1")]) == [True]
    assert await store.reconcile("alive", instance_timeout=15, reservation_ttl=900) == 1
    a = await accounts.get_account("a1")
    assert a is not None and a.reserved == 0


async def test_credit_and_history(store: Store) -> None:
    accounts = await _account(store, 0)
    await store.create_key(key("k1", account_id="a1"))
    assert await accounts.credit("nope", 5, "topup") is None
    got = await accounts.credit("a1", 1000, "topup", "first payment")
    assert got is not None and got.balance == 1000
    await accounts.credit("a1", -100, "adjust", "refund of a test")
    now = time.time()
    await store.write_ledger([entry("r1", "k1", cost=30, account_id="a1", created_at=now),
                              entry("r2", "k1", cost=20, account_id="a1", created_at=now),
                              entry("r3", "k1", cost=0, account_id="a1", created_at=now)])
    hist = await accounts.history("a1")
    kinds = sorted((e.kind, e.amount) for e in hist)
    assert kinds == [("adjust", -100), ("charges", -50), ("topup", 1000)]
    assert next(e for e in hist if e.kind == "charges").ref == "2 requests"
    a = await accounts.get_account("a1")
    assert a is not None and a.balance == 1000 - 100 - 50


async def test_groups_with_model_multipliers(store: Store) -> None:
    accounts = AccountStore(store)
    await accounts.set_group(GroupRecord("vip", Decimal("0.8"), {"gpt-4o": Decimal("0.5")}))
    await accounts.set_group(GroupRecord("vip", Decimal("0.75"), {"gpt-4o": Decimal("0.5")}))   # upsert
    g = await accounts.get_group("vip")
    assert g is not None and g.multiplier_for("gpt-4o") == Decimal("0.5") and g.multiplier_for("x") == Decimal("0.75")
    assert [x.name for x in await accounts.list_groups()] == ["vip"]


async def test_a_code_is_redeemed_exactly_once_across_instances(backend: Backend) -> None:
    stores = [await backend.store() for _ in range(backend.processes)]
    accounts = await _account(stores[0], 0)
    await accounts.add_codes([CodeRecord("h1", "b1", 500, "vip", None, time.time()),
                              CodeRecord("h2", "b1", 500, None, time.time() - 1, time.time() - 10)])
    got = await asyncio.gather(*(AccountStore(stores[n % len(stores)]).redeem("h1", "k1", "a1") for n in range(30)))
    assert [g for g in got if g is not None] == [(500, "vip")]
    a = await accounts.get_account("a1")
    assert a is not None and (a.balance, a.group) == (500, "vip")
    assert await accounts.redeem("h2", "k1", "a1") is None        # expired
    code = await accounts.get_code("h1")
    assert code is not None and code.redeemed_by == "k1" and code.account_id == "a1"
    assert [e.kind for e in await accounts.history("a1")] == ["redeem"]


async def test_a_code_redeemed_by_a_key_without_account_tops_up_the_key(store: Store) -> None:
    accounts = AccountStore(store)
    await store.create_key(key("k1", budget=100, spent=100))
    await accounts.add_codes([CodeRecord("h1", "b1", 70, None, None, time.time())])
    assert await accounts.redeem("h1", "k1", None) == (70, None)
    k1 = await store.get_key("k1")
    assert k1 is not None and k1.budget == 170


async def test_concurrent_capped_credits_across_instances_stop_at_the_cap(backend: Backend) -> None:
    """Ten credits of 30 from several store instances at once with a cap of 100 on 0: exactly three land;
    a check-then-write would let more through."""
    stores = [await backend.store() for _ in range(backend.processes)]
    await _account(stores[0], 0)
    views = [AccountStore(s) for s in stores]
    got = await asyncio.gather(*(views[i % len(views)].credit("a1", 30, "topup", cap=100) for i in range(10)))
    assert sum(r is not None for r in got) == 3
    a = await views[0].get_account("a1")
    assert a is not None and a.credit == 90
    assert await views[0].credit("a1", -200, "adjust", cap=100) is None   # the floor holds too
    assert await views[0].credit("nope", 1, "topup", cap=100) is None
