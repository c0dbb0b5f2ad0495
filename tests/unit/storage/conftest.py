"""One storage test suite, two backends: every test taking `backend` or `store` runs on SQLite (a tmp file)
and on PostgreSQL (a fresh database per test, marked `postgres`)."""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest

from sluice.storage.base import KeyRecord, LedgerRecord, Store
from sluice.storage.postgres import PostgresStore
from sluice.storage.sqlite import SQLiteStore

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
T0 = 1_700_006_400.0  # a whole day (and hour) in Unix seconds, so bucket edges are easy to place


@dataclass
class Backend:
    """Where a test's stores live; `store()` opens one more instance on it, as another process would."""

    name: str
    url: str
    processes: int   # how many store instances the multi-process tests use
    opened: list[Store] = field(default_factory=list)

    def new(self) -> Store:
        s: Store = SQLiteStore(self.url) if self.name == "sqlite" else PostgresStore(self.url)
        self.opened.append(s)
        return s

    async def store(self) -> Store:
        s = self.new()
        await s.open()
        return s

    async def applied_versions(self) -> list[int]:
        """The migrations recorded as applied, one entry per migration run."""
        if self.name == "sqlite":
            with sqlite3.connect(self.url[len("sqlite:///"):]) as db:
                return list(range(1, db.execute("PRAGMA user_version").fetchone()[0] + 1))
        con = await asyncpg.connect(self.url)
        try:
            return [r[0] for r in await con.fetch("SELECT version FROM schema_version ORDER BY version")]
        finally:
            await con.close()


async def _admin() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as e:
        msg = f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {e!r}"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    admin = db = None
    if request.param == "sqlite":
        b = Backend("sqlite", f"sqlite:///{tmp_path / 'sluice.db'}", processes=2)
    else:
        admin = await _admin()
        db = f"sluice_test_{uuid.uuid4().hex[:12]}"
        await admin.execute(f"CREATE DATABASE {db}")
        b = Backend("postgres", f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{db}", processes=3)
    try:
        yield b
    finally:
        for s in b.opened:
            await s.close()
        if admin is not None:
            await admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
            await admin.close()


@pytest.fixture
async def store(backend: Backend) -> Store:
    return await backend.store()


def key(key_id: str = "k1", **kw: object) -> KeyRecord:
    kw.setdefault("name", key_id)
    return KeyRecord(id=key_id, key_hash=f"hash-{key_id}", **kw)  # type: ignore[arg-type]


def entry(request_id: str, key_id: str | None = "k1", **kw: object) -> LedgerRecord:
    fields: dict[str, object] = {"model": "m", "provider": "p", "upstream_model": "up-m", "stream": False,
                                 "status": 200, "created_at": T0}
    fields.update(kw)
    return LedgerRecord(request_id=request_id, key_id=key_id, **fields)  # type: ignore[arg-type]
