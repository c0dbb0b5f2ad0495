"""SQLite store (the embedded default): stdlib sqlite3 on one dedicated thread, WAL, shared by processes.

All statements run on a single-thread executor so the event loop never blocks on disk; several
Sluice processes may open the same file (WAL + busy timeout).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import orjson

from sluice.config import sqlite_path
from sluice.storage.base import KeyRecord, LedgerRecord, UsageRow
from sluice.storage.migrations import SQLITE_MIGRATIONS

T = TypeVar("T")

_LEDGER_COLS = ("request_id", "key_id", "model", "provider", "upstream_model", "stream", "status",
                "prompt_tokens", "completion_tokens", "usage_source", "ttft_ms", "duration_ms",
                "disconnected", "error_code", "attempts", "created_at", "extra")


class SQLiteStore:
    def __init__(self, url: str) -> None:
        self.path = sqlite_path(url)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sluice-sqlite")
        self._db: sqlite3.Connection | None = None

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._call, fn)

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=30000")
            self._db = db
        return fn(self._db)

    async def open(self) -> None:
        await self._run(_migrate)

    async def close(self) -> None:
        def _close(db: sqlite3.Connection) -> None:
            db.close()
            self._db = None
        if self._db is not None:
            await self._run(_close)
        self._pool.shutdown(wait=True)

    async def create_key(self, rec: KeyRecord) -> None:
        models = orjson.dumps(rec.models).decode() if rec.models is not None else None
        created = rec.created_at or time.time()
        await self._run(lambda db: db.execute(
            "INSERT INTO keys (id, name, key_hash, models, enabled, revoked, created_at) VALUES (?,?,?,?,?,?,?)",
            (rec.id, rec.name, rec.key_hash, models, int(rec.enabled), int(rec.revoked), created)))

    async def get_key(self, key_id: str) -> KeyRecord | None:
        row = await self._run(lambda db: db.execute(
            "SELECT id, name, key_hash, models, enabled, revoked, created_at FROM keys WHERE id = ?",
            (key_id,)).fetchone())
        return _key(row) if row else None

    async def list_keys(self) -> list[KeyRecord]:
        rows = await self._run(lambda db: db.execute(
            "SELECT id, name, key_hash, models, enabled, revoked, created_at FROM keys ORDER BY created_at"
        ).fetchall())
        return [_key(r) for r in rows]

    async def revoke_key(self, key_id: str) -> bool:
        cur = await self._run(lambda db: db.execute(
            "UPDATE keys SET revoked = 1 WHERE id = ? AND revoked = 0", (key_id,)))
        return cur.rowcount > 0

    async def count_keys(self) -> int:
        row = await self._run(lambda db: db.execute("SELECT count(*) FROM keys WHERE revoked = 0").fetchone())
        return int(row[0])

    async def write_ledger(self, records: list[LedgerRecord]) -> None:
        rows = [_ledger_row(r) for r in records]
        sql = (f"INSERT OR IGNORE INTO ledger ({', '.join(_LEDGER_COLS)}) "
               f"VALUES ({', '.join('?' * len(_LEDGER_COLS))})")

        def _write(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(sql, rows)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        await self._run(_write)

    async def get_ledger(self, request_id: str) -> LedgerRecord | None:
        row = await self._run(lambda db: db.execute(
            f"SELECT {', '.join(_LEDGER_COLS)} FROM ledger WHERE request_id = ?", (request_id,)).fetchone())
        return _ledger(row) if row else None

    async def usage_summary(self) -> list[UsageRow]:
        rows = await self._run(lambda db: db.execute(
            "SELECT l.key_id, k.name, l.model, count(*), coalesce(sum(l.prompt_tokens), 0),"
            " coalesce(sum(l.completion_tokens), 0), sum(CASE WHEN l.status >= 400 THEN 1 ELSE 0 END)"
            " FROM ledger l LEFT JOIN keys k ON k.id = l.key_id GROUP BY l.key_id, k.name, l.model"
            " ORDER BY k.name, l.model").fetchall())
        return [UsageRow(*r) for r in rows]


def _migrate(db: sqlite3.Connection) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        for i, script in enumerate(SQLITE_MIGRATIONS[version:], start=version + 1):
            for stmt in script.split(";"):
                if stmt.strip():
                    db.execute(stmt)
            db.execute(f"PRAGMA user_version = {i}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _key(row: tuple[Any, ...]) -> KeyRecord:
    models = orjson.loads(row[3]) if row[3] is not None else None
    return KeyRecord(row[0], row[1], row[2], models, bool(row[4]), bool(row[5]), row[6])


def _ledger_row(r: LedgerRecord) -> tuple[Any, ...]:
    return (r.request_id, r.key_id, r.model, r.provider, r.upstream_model, int(r.stream), r.status,
            r.prompt_tokens, r.completion_tokens, r.usage_source, r.ttft_ms, r.duration_ms,
            int(r.disconnected), r.error_code, r.attempts, r.created_at or time.time(),
            orjson.dumps(r.extra).decode() if r.extra else None)


def _ledger(row: tuple[Any, ...]) -> LedgerRecord:
    vals = list(row)
    vals[5] = bool(vals[5])
    vals[12] = bool(vals[12])
    vals[16] = orjson.loads(vals[16]) if vals[16] else {}
    return LedgerRecord(*vals)
