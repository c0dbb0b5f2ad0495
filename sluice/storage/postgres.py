"""PostgreSQL store: asyncpg pool running the statements shared with SQLite (sql.py, converted to $n).

Row locks make reservations atomic across processes (a conditional UPDATE re-checks the budget after
waiting for a concurrent one). Migrations and the first key run under transaction-scoped advisory locks,
so several processes starting at once migrate exactly once and create one first key.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg

from sluice.storage import account_sql, sql
from sluice.storage.base import (
    KEY_FIELDS,
    CatalogEntry,
    KeyRecord,
    LedgerQuery,
    LedgerRecord,
    Reservation,
    Stmt,
    UpstreamKeyState,
    UsageRow,
)
from sluice.storage.migrations import POSTGRES_MIGRATIONS

T = TypeVar("T")

# Constants shared by every Sluice process; they name the locks taken with pg_advisory_xact_lock.
_MIGRATION_LOCK = 0x51_1C_E0_01
_FIRST_KEY_LOCK = 0x51_1C_E0_02
_DEADLOCK_RETRIES = 3
_CHANNELS_NOTIFY = "sluice_channels"  # NOTIFY channel: the catalog or an upstream key state changed


@functools.cache
def _q(text: str) -> str:
    return sql.to_dollar(text)


class PostgresStore:
    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 10) -> None:
        self.url = url
        self._min_size = min_size
        self._max_size = max_size
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("PostgresStore is not open")
        return self._pool

    async def open(self) -> None:
        if self._pool is None:
            self._pool = await asyncpg.create_pool(self.url, min_size=self._min_size, max_size=self._max_size)
        await self._tx(_migrate)

    async def close(self) -> None:
        if self._listener is not None:
            listener, self._listener = self._listener, None
            await listener.close()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def _tx(self, fn: Callable[[asyncpg.Connection], Awaitable[T]], *, explicit: bool = True) -> T:
        """Run `fn` in one transaction; retried when PostgreSQL picks it as a deadlock victim (it was
        rolled back whole, so running it again cannot charge twice). `explicit=False` saves the BEGIN and
        COMMIT round trips when `fn`'s writes are one statement or one executemany (atomic on its own)."""
        for attempt in range(_DEADLOCK_RETRIES + 1):
            try:
                async with self.pool.acquire() as con:
                    if not explicit:
                        return await fn(con)
                    async with con.transaction():
                        return await fn(con)
            except asyncpg.DeadlockDetectedError:
                if attempt == _DEADLOCK_RETRIES:
                    raise
        raise AssertionError("unreachable")

    async def _fetch(self, text: str, *args: Any) -> list[Any]:
        rows: list[Any] = await self.pool.fetch(_q(text), *args)
        return rows

    async def _fetchrow(self, text: str, *args: Any) -> Any:
        return await self.pool.fetchrow(_q(text), *args)

    async def create_key(self, rec: KeyRecord) -> None:
        await self.pool.execute(_q(sql.INSERT_KEY), *sql.key_row(rec))

    async def get_key(self, key_id: str) -> KeyRecord | None:
        row = await self._fetchrow(sql.SELECT_KEY + " WHERE id = ?", key_id)
        return sql.key_from(row) if row else None

    async def list_keys(self) -> list[KeyRecord]:
        return [sql.key_from(r) for r in await self._fetch(sql.SELECT_KEY + " ORDER BY created_at")]

    async def revoke_key(self, key_id: str) -> bool:
        status = await self.pool.execute(_q("UPDATE keys SET revoked = 1 WHERE id = ? AND revoked = 0"), key_id)
        return _rowcount(status) > 0

    async def count_keys(self) -> int:
        return int(await self.pool.fetchval("SELECT count(*) FROM keys WHERE revoked = 0"))

    async def create_first_key(self, rec: KeyRecord) -> bool:
        async def run(con: asyncpg.Connection) -> bool:
            # READ COMMITTED lets two transactions both see an empty table; the lock makes them take turns
            await con.execute("SELECT pg_advisory_xact_lock($1)", _FIRST_KEY_LOCK)
            if await con.fetchval("SELECT 1 FROM keys LIMIT 1") is not None:
                return False
            await con.execute(_q(sql.INSERT_KEY), *sql.key_row(rec))
            return True
        return await self._tx(run)

    async def update_key(self, key_id: str, changes: dict[str, Any]) -> KeyRecord | None:
        changes = {k: v for k, v in changes.items() if k in KEY_FIELDS}
        if changes:
            sets, vals = sql.key_update(changes)
            await self.pool.execute(sql.to_dollar(f"UPDATE keys SET {sets} WHERE id = ?"), *vals, key_id)
        return await self.get_key(key_id)

    async def top_up(self, key_id: str, nanos: int) -> KeyRecord | None:
        async def run(con: asyncpg.Connection) -> bool:
            if await con.fetchrow(_q(sql.TOP_UP), nanos, nanos, key_id) is None:
                return False
            await con.execute(_q(sql.INSERT_TOPUP), key_id, nanos, time.time())
            return True
        return await self.get_key(key_id) if await self._tx(run) else None

    async def reserve(self, key_id: str, request_id: str, nanos: int, tokens: int, instance_id: str) -> bool:
        return (await self.reserve_many([Reservation(key_id, request_id, nanos, tokens, instance_id)]))[0]

    async def reserve_many(self, batch: Sequence[Reservation]) -> list[bool]:
        if not batch:
            return []
        if any(r.account_id is not None for r in batch):
            return await self._tx(lambda con: _reserve_with_accounts(con, batch))
        # Key rows are locked in id order (like settlement and reconciliation): concurrent batches from
        # several processes queue on a key instead of deadlocking. The sort is stable, so each key still
        # sees its reservations in arrival order; reservations on different keys do not affect each other.
        now = time.time()
        first = sql.first_flags(batch)
        args = [(*sql.reserve_args(r), r.instance_id, now)
                for r in sorted((r for r, f in zip(batch, first, strict=True) if f), key=lambda r: r.key_id)]

        async def one(con: asyncpg.Connection) -> set[str]:
            return {rid} if (rid := await con.fetchval(_RESERVE_ONE, *args[0])) is not None else set()

        async def many(con: asyncpg.Connection) -> set[str]:
            await con.executemany(_RESERVE_AND_HOLD, args)
            # read back after the commit, by `now` (this batch's mark, so a request_id held before and
            # refused above is not taken for granted); until its request settles, only reconciliation
            # could remove a row, and it releases the amount as well: the answer would be a safe False
            return {row[0] for row in await con.fetch(_HELD_SINCE, [a[5] for a in args], now)}
        held = await self._tx(one if len(args) == 1 else many, explicit=False)
        return [f and r.request_id in held for r, f in zip(batch, first, strict=True)]

    async def write_ledger(self, records: list[LedgerRecord]) -> None:
        if records:
            await self._tx(lambda con: _settle(con, records))

    async def quarantine(self, rec: LedgerRecord, error: str) -> None:
        await self.pool.execute(_q(sql.INSERT_QUARANTINE), *sql.quarantine_row(rec, error))

    async def reconcile(self, instance_id: str, instance_timeout: float, reservation_ttl: float, *,
                        now: float | None = None) -> int:
        now = time.time() if now is None else now

        async def run(con: asyncpg.Connection) -> int:
            await con.execute(_q(sql.HEARTBEAT), instance_id, now, now)
            stale = await con.fetch(_q(sql.TAKE_STALE), now - reservation_ttl, now - instance_timeout)
            held: dict[str, tuple[int, int]] = {}
            for key_id, amount, tokens, _ in stale:
                a, t = held.get(key_id, (0, 0))
                held[key_id] = (a + amount, t + tokens)
            for key_id in sorted(held):  # one lock order for every transaction: no deadlocks between them
                await con.execute(_q(sql.RELEASE), *held[key_id], key_id)
            for args in account_sql.account_releases(stale):   # accounts after keys, as everywhere
                await con.execute(_q(account_sql.RELEASE_ACCOUNT), *args)
            await con.execute(_q(sql.FORGET_INSTANCES), now - 86400)
            await con.execute(_q(sql.RESET_PERIODS), now, now, now, now)
            return len(stale)
        return await self._tx(run)

    async def get_ledger(self, request_id: str) -> LedgerRecord | None:
        row = await self._fetchrow(sql.SELECT_LEDGER + " WHERE request_id = ?", request_id)
        return sql.ledger_from(row) if row else None

    async def list_ledger(self, q: LedgerQuery) -> list[LedgerRecord]:
        text, vals = sql.list_ledger(q)
        return [sql.ledger_from(r) for r in await self.pool.fetch(sql.to_dollar(text), *vals)]

    async def usage_summary(self) -> list[UsageRow]:
        return [sql.usage_from(r) for r in await self._fetch(sql.USAGE_SUMMARY)]

    async def usage(self, q: LedgerQuery, group: str | None) -> list[UsageRow]:
        text, vals = sql.usage(q, group)
        return [sql.usage_from(r) for r in await self.pool.fetch(sql.to_dollar(text), *vals)]

    async def count_reservations(self) -> int:
        return int(await self.pool.fetchval("SELECT count(*) FROM reservations"))

    async def fetch_rows(self, text: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in await self._fetch(text, *args)]

    async def guarded(self, first: Stmt, then: Callable[[tuple[Any, ...]], Sequence[Stmt]]) -> tuple[Any, ...] | None:
        async def run(con: asyncpg.Connection) -> tuple[Any, ...] | None:
            row = await con.fetchrow(_q(first[0]), *first[1])
            if row is None:
                return None
            for text, args in then(tuple(row)):
                await con.execute(_q(text), *args)
            return tuple(row)
        return await self._tx(run)

    async def list_upstream_key_states(self) -> list[UpstreamKeyState]:
        return [UpstreamKeyState(*r) for r in await self._fetch(sql.SELECT_UPSTREAM_KEYS)]

    async def put_upstream_key_state(self, st: UpstreamKeyState) -> None:
        async def run(con: asyncpg.Connection) -> None:
            await con.execute(_q(sql.PUT_UPSTREAM_KEY), st.provider, st.key_id, st.state, st.reason, st.changed_at)
            await con.execute("SELECT pg_notify($1, 'keys')", _CHANNELS_NOTIFY)
        await self._tx(run)

    async def watch_channels(self, on_change: Callable[[], None]) -> bool:
        # a connection of its own, outside the pool: LISTEN lasts as long as the connection does; if it
        # is lost, the readers' polling still catches every change, only later
        con = self._listener = await asyncpg.connect(self.url)
        await con.add_listener(_CHANNELS_NOTIFY, lambda *_: on_change())
        return True

    async def catalog_version(self) -> int:
        return int(await self.pool.fetchval(sql.CATALOG_VERSION))

    async def list_catalog(self) -> tuple[int, list[CatalogEntry]]:
        async def run(con: asyncpg.Connection) -> tuple[int, list[CatalogEntry]]:
            version = int(await con.fetchval(sql.CATALOG_VERSION))  # first: the rows read next are as new
            return version, [CatalogEntry(*r) for r in await con.fetch(sql.SELECT_CATALOG)]
        return await self._tx(run)

    async def put_catalog(self, kind: str, name: str, doc: str | None) -> bool:
        async def run(con: asyncpg.Connection) -> bool:
            if doc is None:
                if await con.fetchrow(_q(sql.DELETE_CATALOG), kind, name) is None:
                    return False
            else:
                await con.execute(_q(sql.PUT_CATALOG), kind, name, doc, time.time())
            await con.execute(sql.BUMP_CATALOG)
            await con.execute("SELECT pg_notify($1, 'catalog')", _CHANNELS_NOTIFY)  # sent at commit
            return True
        return await self._tx(run)


async def _migrate(con: asyncpg.Connection) -> None:
    # The lock is taken before anything is read or created: the second process waits here, then sees
    # the first one's schema_version and has nothing left to do.
    await con.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
    await con.execute("CREATE TABLE IF NOT EXISTS schema_version "
                      "(version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)")
    version = int(await con.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))
    for i, script in enumerate(POSTGRES_MIGRATIONS[version:], start=version + 1):
        await con.execute(script)
        await con.execute("INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)", i, time.time())


async def _settle(con: asyncpg.Connection, records: list[LedgerRecord]) -> None:
    """Set-based settlement: one INSERT of the batch (columns as arrays) that returns only the rows it
    added, so a record already written, here or by a concurrent transaction elsewhere, is never charged
    again; one DELETE of their reservations; one UPDATE per key. Locks are taken in one order (ledger
    rows by request_id, then key rows by id) so concurrent batches queue instead of deadlocking."""
    batch = sorted(sql.first_per_request(records), key=lambda r: r.request_id)
    if len(batch) == 1:     # the common batch at low load: plain parameters cost less than arrays
        added = {row[0] for row in await con.fetch(_INSERT_LEDGER_ONE, *sql.ledger_row(batch[0]))}
    else:
        columns = list(zip(*map(sql.ledger_row, batch), strict=True))
        added = {row[0] for row in await con.fetch(_INSERT_LEDGER, *columns)}
    new = [r for r in batch if r.request_id in added]
    keyed = [r.request_id for r in new if r.key_id is not None]
    held = await con.fetch(_TAKE_RESERVATIONS, keyed) if keyed else []
    charges = sql.settlements(new, held)
    if len(charges) == 1:   # executemany's pipeline costs more than one execute
        await con.execute(_q(sql.SETTLE), *charges[0])
    elif charges:
        await con.executemany(_q(sql.SETTLE), charges)
    accounts = account_sql.account_settlements(new, held)
    if accounts:
        await con.executemany(_q(account_sql.SETTLE_ACCOUNT), accounts)


async def _reserve_with_accounts(con: asyncpg.Connection, batch: Sequence[Reservation]) -> list[bool]:
    """A batch with account reservations, in one transaction: the key holds in key order, then the account
    holds in account order (the lock order of settlement), giving back the key hold of a reservation its
    account refused. A refused account hold can make a later reservation on the same key in this batch
    refused that one by one would have passed: never more granted, so never overspent."""
    first = sql.first_flags(batch)
    granted = [False] * len(batch)
    for i in sorted((i for i in range(len(batch)) if first[i]), key=lambda i: batch[i].key_id):
        granted[i] = await con.fetchval(_q(sql.RESERVE), *sql.reserve_args(batch[i])) is not None
    for i in account_sql.account_order(batch, granted):
        r = batch[i]
        if await con.fetchval(_q(account_sql.RESERVE_ACCOUNT), r.nanos, r.account_id, r.nanos) is None:
            await con.execute(_q(sql.RELEASE), r.nanos, r.tokens, r.key_id)
            granted[i] = False
    now = time.time()
    rows = [account_sql.reservation_row(r, now) for r, ok in zip(batch, granted, strict=True) if ok]
    if rows:
        await con.executemany(_q(account_sql.INSERT_RESERVATION), rows)
    return granted


# PostgreSQL's types for each ledger column, to pass the batch as one array per column to unnest().
_LEDGER_TYPES = {"request_id": "text", "key_id": "text", "model": "text", "provider": "text",
                 "upstream_model": "text", "stream": "int4", "status": "int4", "prompt_tokens": "int8",
                 "completion_tokens": "int8", "cached_tokens": "int8", "usage_source": "text",
                 "ttft_ms": "float8", "duration_ms": "float8", "disconnected": "int4", "error_code": "text",
                 "attempts": "int4", "cost": "int8", "created_at": "float8", "extra": "text",
                 "account_id": "text", "cache_write_5m_tokens": "int8", "cache_write_1h_tokens": "int8",
                 "session_id": "text"}
_INSERT_LEDGER = (f"INSERT INTO ledger ({', '.join(sql.LEDGER_COLS)}) SELECT * FROM unnest("
                  + ", ".join(f"${i}::{_LEDGER_TYPES[c]}[]" for i, c in enumerate(sql.LEDGER_COLS, 1))
                  + ") ON CONFLICT (request_id) DO NOTHING RETURNING request_id")
_INSERT_LEDGER_ONE = _q(sql.INSERT_LEDGER) + " RETURNING request_id"
_TAKE_RESERVATIONS = ("DELETE FROM reservations WHERE request_id = ANY($1::text[]) "
                      "RETURNING request_id, key_id, amount, tokens, account_id")
# The shared conditional UPDATE (sql.RESERVE, $1-$6) and, only when it passed, the reservation's row:
# one statement per reservation, all of a batch sent at once by executemany (atomic: one implicit
# transaction), or alone with RETURNING.
_RESERVE_AND_HOLD = (f"WITH granted AS ({_q(sql.RESERVE)}) INSERT INTO reservations "
                     "(request_id, key_id, amount, tokens, instance_id, created_at) "
                     "SELECT $6, id, $1, $2, $7, $8 FROM granted")
_RESERVE_ONE = _RESERVE_AND_HOLD + " RETURNING request_id"
_HELD_SINCE = "SELECT request_id FROM reservations WHERE request_id = ANY($1::text[]) AND created_at = $2"


def _rowcount(status: str) -> int:
    """asyncpg returns the command tag ('UPDATE 3'); its last word is the row count."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0
