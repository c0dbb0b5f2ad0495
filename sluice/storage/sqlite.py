"""SQLite store (the embedded default): stdlib sqlite3, WAL, shared by processes.

Statements run on a single-thread executor so the event loop never waits for a lock; several Sluice
processes may open the same file (WAL + busy timeout; `BEGIN IMMEDIATE` serialises writers, which is
what makes reservations atomic across processes). The two writes on the request path (a small ledger
batch, a small reservation batch) first try a second connection on the loop's own thread that never
waits: a WAL commit costs ~40 us there, while the round trip to a thread and back costs ~1.5 ms of
latency in a VM whose idle vCPUs are slow to wake. When another writer holds the lock, that attempt
fails at once (busy_timeout 0) and the batch goes to the thread, which waits for it. That connection
never checkpoints (its fsyncs stalled every stream for 5-30 ms), nor does the thread's by itself (a checkpoint
there left the WAL's restart, and its fsync, to the next writer: often the loop): every `_CHECKPOINT_EVERY`
commits on either thread, the store's thread checkpoints and restarts the WAL (docs/decisions.md, "Loop
stalls", "Held streams").
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import orjson

from sluice.config import sqlite_path
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
from sluice.storage.migrations import SQLITE_MIGRATIONS

T = TypeVar("T")
log = logging.getLogger("sluice.storage")

_INLINE_MAX = 64  # records or reservations written on the loop's thread at most (bounds the stall)
_CHECKPOINT_EVERY = 100  # commits on the loop's (or the store's) thread between checkpoints on the store's thread


class SQLiteStore:
    def __init__(self, url: str) -> None:
        self.path = sqlite_path(url)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sluice-sqlite")
        self._db: sqlite3.Connection | None = None
        self._loop_db: sqlite3.Connection | None = None
        self._loop_commits = 0
        self._thread_commits = 0  # read and written on the store's thread only
        self._checkpoint: asyncio.Future[None] | None = None  # a checkpoint on the store's thread, running

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._call, fn)

    async def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` inside BEGIN IMMEDIATE ... COMMIT (rolled back on error)."""
        def run(db: sqlite3.Connection) -> T:
            db.execute("BEGIN IMMEDIATE")
            out = _finish_tx(db, fn)
            self._thread_commits += 1
            if self._thread_commits >= _CHECKPOINT_EVERY:
                self._thread_commits = 0
                try:
                    _checkpoint(db)
                except sqlite3.Error as exc:  # committed already: the next checkpoint tries again
                    log.warning("WAL checkpoint failed: %s", exc)
            return out
        return await self._run(run)

    async def _hot_tx(self, fn: Callable[[sqlite3.Connection], T], size: int) -> T:
        """`_tx` for the request path: on the loop's thread when the lock is free and the batch small."""
        if size <= _INLINE_MAX and self._db is not None:
            db = self._loop_db
            if db is None:
                db = self._loop_db = sqlite3.connect(self.path, timeout=0, isolation_level=None)
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute("PRAGMA busy_timeout=0")
                db.execute("PRAGMA wal_autocheckpoint=0")  # the store's thread checkpoints (below)
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:  # another writer (thread or process) holds the lock
                return await self._tx(fn)
            out = _finish_tx(db, fn)
            self._loop_commits += 1
            if self._loop_commits >= _CHECKPOINT_EVERY and self._checkpoint is None:
                self._loop_commits = 0
                self._checkpoint = asyncio.get_running_loop().run_in_executor(self._pool, self._call, _checkpoint)
                self._checkpoint.add_done_callback(self._checkpointed)
            return out
        return await self._tx(fn)

    def _checkpointed(self, fut: asyncio.Future[None]) -> None:
        self._checkpoint = None
        if not fut.cancelled() and fut.exception() is not None:  # busy or failed: the next one tries again
            log.warning("WAL checkpoint failed: %s", fut.exception())

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            _enable_wal(db)
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=30000")
            db.execute("PRAGMA wal_autocheckpoint=0")  # `_checkpoint` only, which restarts the WAL here too
            self._db = db
        return fn(self._db)

    async def open(self) -> None:
        await self._tx(_migrate)

    async def close(self) -> None:
        def _close(db: sqlite3.Connection) -> None:
            db.close()
            self._db = None
        if self._loop_db is not None:
            self._loop_db.close()
            self._loop_db = None
        if self._db is not None:
            await self._run(_close)
        self._pool.shutdown(wait=True)

    async def create_key(self, rec: KeyRecord) -> None:
        await self._run(lambda db: db.execute(sql.INSERT_KEY, sql.key_row(rec)))

    async def get_key(self, key_id: str) -> KeyRecord | None:
        row = await self._run(lambda db: db.execute(sql.SELECT_KEY + " WHERE id = ?", (key_id,)).fetchone())
        return sql.key_from(row) if row else None

    async def list_keys(self) -> list[KeyRecord]:
        rows = await self._run(lambda db: db.execute(sql.SELECT_KEY + " ORDER BY created_at").fetchall())
        return [sql.key_from(r) for r in rows]

    async def revoke_key(self, key_id: str) -> bool:
        cur = await self._run(lambda db: db.execute(
            "UPDATE keys SET revoked = 1 WHERE id = ? AND revoked = 0", (key_id,)))
        return cur.rowcount > 0

    async def count_keys(self) -> int:
        row = await self._run(lambda db: db.execute("SELECT count(*) FROM keys WHERE revoked = 0").fetchone())
        return int(row[0])

    async def create_first_key(self, rec: KeyRecord) -> bool:
        def run(db: sqlite3.Connection) -> bool:  # BEGIN IMMEDIATE: the check and the insert under one write lock
            if db.execute("SELECT 1 FROM keys LIMIT 1").fetchone() is not None:
                return False
            db.execute(sql.INSERT_KEY, sql.key_row(rec))
            return True
        return await self._tx(run)

    async def update_key(self, key_id: str, changes: dict[str, Any]) -> KeyRecord | None:
        changes = {k: v for k, v in changes.items() if k in KEY_FIELDS}
        if changes:
            sets, vals = sql.key_update(changes)
            await self._run(lambda db: db.execute(f"UPDATE keys SET {sets} WHERE id = ?", (*vals, key_id)))
        return await self.get_key(key_id)

    async def top_up(self, key_id: str, nanos: int) -> KeyRecord | None:
        def run(db: sqlite3.Connection) -> bool:
            if db.execute(sql.TOP_UP, (nanos, nanos, key_id)).fetchone() is None:
                return False
            db.execute(sql.INSERT_TOPUP, (key_id, nanos, time.time()))
            return True
        return await self.get_key(key_id) if await self._tx(run) else None

    async def reserve(self, key_id: str, request_id: str, nanos: int, tokens: int, instance_id: str) -> bool:
        return (await self.reserve_many([Reservation(key_id, request_id, nanos, tokens, instance_id)]))[0]

    async def reserve_many(self, batch: Sequence[Reservation]) -> list[bool]:
        return await self._hot_tx(lambda db: _reserve(db, batch), len(batch)) if batch else []

    async def write_ledger(self, records: list[LedgerRecord]) -> None:
        if not records:
            return
        batch = sql.first_per_request(records)
        try:
            await self._hot_tx(lambda db: _settle(db, batch, None), len(batch))
        except _AlreadyRecorded:    # rolled back: settle again, leaving out what was recorded before
            await self._tx(lambda db: _settle(db, batch, _recorded(db, batch)))

    async def quarantine(self, rec: LedgerRecord, error: str) -> None:
        await self._run(lambda db: db.execute(sql.INSERT_QUARANTINE, sql.quarantine_row(rec, error)))

    async def reconcile(self, instance_id: str, instance_timeout: float, reservation_ttl: float, *,
                        now: float | None = None) -> int:
        now = time.time() if now is None else now

        def run(db: sqlite3.Connection) -> int:
            db.execute(sql.HEARTBEAT, (instance_id, now, now))
            stale = db.execute(sql.TAKE_STALE, (now - reservation_ttl, now - instance_timeout)).fetchall()
            for key_id, amount, tokens, _ in stale:
                db.execute(sql.RELEASE, (amount, tokens, key_id))
            db.executemany(account_sql.RELEASE_ACCOUNT, account_sql.account_releases(stale))
            db.execute(sql.FORGET_INSTANCES, (now - 86400,))
            db.execute(sql.RESET_PERIODS, (now, now, now, now))
            return len(stale)
        return await self._tx(run)

    async def get_ledger(self, request_id: str) -> LedgerRecord | None:
        row = await self._run(lambda db: db.execute(
            sql.SELECT_LEDGER + " WHERE request_id = ?", (request_id,)).fetchone())
        return sql.ledger_from(row) if row else None

    async def list_ledger(self, q: LedgerQuery) -> list[LedgerRecord]:
        text, vals = sql.list_ledger(q)
        rows = await self._run(lambda db: db.execute(text, vals).fetchall())
        return [sql.ledger_from(r) for r in rows]

    async def usage_summary(self) -> list[UsageRow]:
        rows = await self._run(lambda db: db.execute(sql.USAGE_SUMMARY).fetchall())
        return [sql.usage_from(r) for r in rows]

    async def usage(self, q: LedgerQuery, group: str | None) -> list[UsageRow]:
        text, vals = sql.usage(q, group)
        rows = await self._run(lambda db: db.execute(text, vals).fetchall())
        return [sql.usage_from(r) for r in rows]

    async def count_reservations(self) -> int:
        row = await self._run(lambda db: db.execute("SELECT count(*) FROM reservations").fetchone())
        return int(row[0])

    async def fetch_rows(self, text: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return await self._run(lambda db: [tuple(r) for r in db.execute(text, tuple(args)).fetchall()])

    async def guarded(self, first: Stmt, then: Callable[[tuple[Any, ...]], Sequence[Stmt]]) -> tuple[Any, ...] | None:
        def run(db: sqlite3.Connection) -> tuple[Any, ...] | None:
            row = db.execute(first[0], tuple(first[1])).fetchone()
            if row is None:
                return None
            for text, args in then(tuple(row)):
                db.execute(text, tuple(args))
            return tuple(row)
        return await self._tx(run)

    async def list_upstream_key_states(self) -> list[UpstreamKeyState]:
        rows = await self._run(lambda db: db.execute(sql.SELECT_UPSTREAM_KEYS).fetchall())
        return [UpstreamKeyState(*r) for r in rows]

    async def put_upstream_key_state(self, st: UpstreamKeyState) -> None:
        args = (st.provider, st.key_id, st.state, st.reason, st.changed_at)
        await self._run(lambda db: db.execute(sql.PUT_UPSTREAM_KEY, args))

    async def watch_channels(self, on_change: Callable[[], None]) -> bool:
        return False  # no notifications between SQLite processes: the readers poll

    async def catalog_version(self) -> int:
        return int((await self._run(lambda db: db.execute(sql.CATALOG_VERSION).fetchone()))[0])

    async def list_catalog(self) -> tuple[int, list[CatalogEntry]]:
        def run(db: sqlite3.Connection) -> tuple[int, list[CatalogEntry]]:
            version = int(db.execute(sql.CATALOG_VERSION).fetchone()[0])
            return version, [CatalogEntry(*r) for r in db.execute(sql.SELECT_CATALOG).fetchall()]
        return await self._tx(run)

    async def put_catalog(self, kind: str, name: str, doc: str | None) -> bool:
        def run(db: sqlite3.Connection) -> bool:
            if doc is None:
                if db.execute(sql.DELETE_CATALOG, (kind, name)).fetchone() is None:
                    return False
            else:
                db.execute(sql.PUT_CATALOG, (kind, name, doc, time.time()))
            db.execute(sql.BUMP_CATALOG)
            return True
        return await self._tx(run)


def _finish_tx(db: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Inside a transaction just begun: run `fn`, commit; roll back if either fails."""
    try:
        out = fn(db)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return out


def _checkpoint(db: sqlite3.Connection) -> None:
    """On the store's thread: copy the WAL into the database (PASSIVE: writers go on meanwhile), then, if it
    was all copied, write once so that this thread restarts the WAL. A restart syncs the new WAL header, so
    whichever writer comes first after a complete checkpoint pays an fsync: let it be this thread, not the
    loop's. The write is `user_version` set to its own value: a change of page 1 and no change of data."""
    busy, frames, copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    if busy or frames <= 0 or copied != frames:
        return
    db.execute("BEGIN IMMEDIATE")
    _finish_tx(db, _rewrite_version)


def _rewrite_version(db: sqlite3.Connection) -> None:
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    db.execute(f"PRAGMA user_version = {version}")


def _enable_wal(db: sqlite3.Connection, wait: float = 30.0) -> None:
    """Switch the file to WAL. SQLite answers a journal-mode change that meets another connection's lock
    with "database is locked" at once, without its busy handler (seen when instances start together on a
    new file while one migrates), so wait here, as the busy timeout would for any other statement."""
    deadline = time.monotonic() + wait
    pause = 0.005
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            transient = "locked" in str(exc) or "busy" in str(exc)
            if not transient or time.monotonic() > deadline:
                raise
        time.sleep(pause)  # on the store's own thread, never the event loop's
        pause = min(pause * 2, 0.2)


def _migrate(db: sqlite3.Connection) -> None:
    version = db.execute("PRAGMA user_version").fetchone()[0]
    for i, script in enumerate(SQLITE_MIGRATIONS[version:], start=version + 1):
        for stmt in script.split(";"):
            if stmt.strip():
                db.execute(stmt)
        db.execute(f"PRAGMA user_version = {i}")


def _reserve(db: sqlite3.Connection, batch: Sequence[Reservation]) -> list[bool]:
    """Under BEGIN IMMEDIATE (no other writer, in any process): each reservation's own conditional
    UPDATE in order, then the granted ones' rows in one executemany."""
    granted = [first and db.execute(sql.RESERVE, sql.reserve_args(r)).fetchone() is not None
               for r, first in zip(batch, sql.first_flags(batch), strict=True)]
    for i in account_sql.account_order(batch, granted):   # then the accounts; refused: give the key hold back
        r = batch[i]
        if db.execute(account_sql.RESERVE_ACCOUNT, (r.nanos, r.account_id, r.nanos)).fetchone() is None:
            db.execute(sql.RELEASE, (r.nanos, r.tokens, r.key_id))
            granted[i] = False
    now = time.time()
    rows = [account_sql.reservation_row(r, now) for r, ok in zip(batch, granted, strict=True) if ok]
    if rows:
        db.executemany(account_sql.INSERT_RESERVATION, rows)
    return granted


class _AlreadyRecorded(Exception):
    """Some of the batch was recorded before: roll back and settle again without it."""


def _recorded(db: sqlite3.Connection, batch: list[LedgerRecord]) -> set[str]:
    ids = orjson.dumps([r.request_id for r in batch])
    return {row[0] for row in db.execute(_RECORDED, (ids,))}


def _settle(db: sqlite3.Connection, batch: list[LedgerRecord], recorded: set[str] | None) -> None:
    """Set-based settlement of a batch without repeats. BEGIN IMMEDIATE makes this transaction the only
    writer (in any process) from its first statement. The first attempt (`recorded` None) inserts the
    whole batch, expecting every row to be new (the rule: a record is written again only when a write
    failed), and gives up if one was not; the second leaves out what `recorded` lists."""
    new = [r for r in batch if r.request_id not in recorded] if recorded else batch
    if not new:
        return  # all already recorded: never charge twice
    if db.executemany(sql.INSERT_LEDGER, [sql.ledger_row(r) for r in new]).rowcount != len(new):
        raise _AlreadyRecorded
    keyed = [r.request_id for r in new if r.key_id is not None]
    if len(keyed) > 1:
        held = db.execute(_TAKE_RESERVATIONS, (orjson.dumps(keyed),)).fetchall()
    else:   # none, or one (the common batch at low load, where json_each would cost a third more)
        held = db.execute(_TAKE_RESERVATION, keyed).fetchall() if keyed else []
    db.executemany(sql.SETTLE, sql.settlements(new, held))
    accounts = account_sql.account_settlements(new, held)
    if accounts:
        db.executemany(account_sql.SETTLE_ACCOUNT, accounts)


# A batch's request_ids go in as one JSON array: one statement text whatever the batch size.
_RECORDED = "SELECT request_id FROM ledger WHERE request_id IN (SELECT value FROM json_each(?))"
_TAKE_RESERVATIONS = ("DELETE FROM reservations WHERE request_id IN (SELECT value FROM json_each(?)) "
                      "RETURNING request_id, key_id, amount, tokens, account_id")
_TAKE_RESERVATION = ("DELETE FROM reservations WHERE request_id = ? "
                     "RETURNING request_id, key_id, amount, tokens, account_id")
