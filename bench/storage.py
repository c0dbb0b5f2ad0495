"""`python -m bench.storage`: drive a store directly (no HTTP) and measure what metering costs it:
ledger writes (records/s per batch size) and budget reservations (reservations/s per concurrency),
with the CPU seconds of this process (event loop + SQLite thread) and of the PostgreSQL server per
10k operations."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import asyncpg

from bench.proc import TICK
from sluice.storage.base import KeyRecord, LedgerRecord, Store
from sluice.storage.postgres import PostgresStore
from sluice.storage.sqlite import SQLiteStore

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
Reserve = Callable[[str, str, int, int, str], Awaitable[bool]]


@dataclass
class Figure:
    backend: str
    what: str          # "ledger" | "reserve"
    size: int          # batch size (ledger) or concurrency (reserve)
    ops: int
    seconds: float
    cpu: float         # this process, all threads
    loop_cpu: float    # the event loop's thread alone
    db_cpu: float | None  # PostgreSQL server processes (None for SQLite)

    @property
    def rate(self) -> float:
        return self.ops / self.seconds

    def row(self) -> str:
        per10k = 10_000 / self.ops
        db = f"{self.db_cpu * per10k:7.2f}" if self.db_cpu is not None else "      -"
        return (f"| {self.backend:8} | {self.what:7} | {self.size:5} | {self.rate:10,.0f} | "
                f"{self.cpu * per10k:7.2f} | {self.loop_cpu * per10k:7.2f} | {db} |")


def _process_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _backend_ticks(db: str) -> dict[int, int]:
    """utime+stime (clock ticks) of the PostgreSQL backends serving database `db` (the server runs on
    this machine; a backend's process title names its database). Other databases' backends, e.g. other
    test runs on the same server, and the shared background processes are left out."""
    out: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if f" {db} ".encode() not in f.read():
                    continue
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        out[int(entry)] = int(fields[11]) + int(fields[12])
    return out


def _backend_cpu_since(db: str, before: dict[int, int]) -> float:
    """Server CPU seconds since `before`; a backend started meanwhile (the pool grows) counts from zero."""
    return sum(t - before.get(pid, 0) for pid, t in _backend_ticks(db).items()) / TICK


class Meter:
    def __init__(self, db: str | None) -> None:
        self._db = db

    def __enter__(self) -> Meter:
        self.t0, self.c0, self.l0 = time.perf_counter(), _process_cpu(), time.thread_time()
        self.d0 = _backend_ticks(self._db) if self._db else {}
        return self

    def __exit__(self, *_: object) -> None:
        self.seconds = time.perf_counter() - self.t0
        self.cpu = _process_cpu() - self.c0
        self.loop_cpu = time.thread_time() - self.l0
        self.db_cpu: float | None = _backend_cpu_since(self._db, self.d0) if self._db else None


def _record(rid: str, key_id: str, now: float) -> LedgerRecord:
    return LedgerRecord(request_id=rid, key_id=key_id, model="gpt-4o-mini", provider="openai",
                        upstream_model="gpt-4o-mini-2024-07-18", stream=True, status=200, prompt_tokens=812,
                        completion_tokens=211, usage_source="reported", ttft_ms=143.5, duration_ms=1810.25,
                        attempts=1, created_at=now, cost=270_000, extra={"route": "primary"})


async def _make_keys(store: Store, n: int, tag: str) -> list[str]:
    ids = [f"{tag}-k{i}" for i in range(n)]
    for k in ids:
        await store.create_key(KeyRecord(id=k, name=k, key_hash="h-" + k, budget=10**18, token_quota=10**15,
                                         created_at=time.time()))
    return ids


async def _settle_down(store: Store) -> None:
    """Start each measurement from the same database state, whatever the setup wrote: SQLite's WAL
    checkpointed (else a checkpoint the setup made due lands in the measurement)."""
    if isinstance(store, SQLiteStore):
        # fetchall: a cursor handed back unfinished would keep a statement in progress (no COMMIT then)
        await store._run(lambda db: db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())


def _reserver(store: Store, path: str) -> Reserve:
    """What admission calls: the group-committing batcher, or (`--reserve-path store`) one store
    transaction per reservation."""
    if path == "store":
        return store.reserve
    # imported here so that `--reserve-path store` also runs on a checkout without the batcher
    from sluice.metering.reservations import ReservationBatcher
    from sluice.storage.base import Reservation

    batcher = ReservationBatcher(store)

    async def reserve(key_id: str, request_id: str, nanos: int, tokens: int, instance_id: str) -> bool:
        return await batcher.reserve(Reservation(key_id, request_id, nanos, tokens, instance_id))
    return reserve


async def _gather_reserve(reserve: Reserve, jobs: list[tuple[str, str]], concurrency: int) -> int:
    """Run the reservations with `concurrency` callers in flight; returns how many were granted."""
    it = iter(jobs)
    granted = 0

    async def worker() -> None:
        nonlocal granted
        for key_id, rid in it:
            ok = await reserve(key_id, rid, 300_000, 5_000, "bench")
            granted += ok   # not `granted += await ...`: that reads `granted` before the await
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return granted


async def bench_ledger(store: Store, backend: str, batch: int, n: int, keys: int, db: str | None,
                       path: str) -> Figure:
    tag = f"l{batch}-{uuid.uuid4().hex[:6]}"
    ids = await _make_keys(store, keys, tag)
    now = time.time()
    records = [_record(f"{tag}-r{i}", ids[i % keys], now) for i in range(n)]
    granted = await _gather_reserve(_reserver(store, path), [(r.key_id or "", r.request_id) for r in records], 64)
    assert granted == n, "setup: every reservation should fit"
    await _settle_down(store)
    with Meter(db) as m:
        for i in range(0, n, batch):
            await store.write_ledger(records[i:i + batch])
    return Figure(backend, "ledger", batch, n, m.seconds, m.cpu, m.loop_cpu, m.db_cpu)


async def bench_reserve(store: Store, backend: str, concurrency: int, n: int, keys: int, db: str | None,
                        path: str) -> Figure:
    tag = f"r{concurrency}-{uuid.uuid4().hex[:6]}"
    ids = await _make_keys(store, keys, tag)
    jobs = [(ids[i % keys], f"{tag}-r{i}") for i in range(n)]
    await _settle_down(store)
    reserve = _reserver(store, path)
    with Meter(db) as m:
        granted = await _gather_reserve(reserve, jobs, concurrency)
    assert granted == n, "every reservation should fit"
    return Figure(backend, "reserve", concurrency, n, m.seconds, m.cpu, m.loop_cpu, m.db_cpu)


async def _open(backend: str, workdir: Path) -> tuple[Store, Callable[[], Awaitable[None]], str | None]:
    """The store, how to close it, and the PostgreSQL database's name (None for SQLite)."""
    if backend == "sqlite":
        s: Store = SQLiteStore(f"sqlite:///{workdir / 'bench.db'}")
        await s.open()
        return s, s.close, None
    admin = await asyncpg.connect(PG_ADMIN_URL)
    db = f"sluice_bench_{uuid.uuid4().hex[:10]}"
    await admin.execute(f"CREATE DATABASE {db}")
    s = PostgresStore(f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{db}")
    await s.open()

    async def close() -> None:
        await s.close()
        await admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        await admin.close()
    return s, close, db


async def run(a: argparse.Namespace) -> list[Figure]:
    figures: list[Figure] = []
    for r in range(1, a.rounds + 1):
        for backend in a.backend:
            with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
                store, close, db = await _open(backend, Path(tmp))
                try:
                    for batch in a.batch:
                        n = a.records if batch > 1 else min(a.records, 2_000)
                        figures.append(f := await bench_ledger(store, backend, batch, n, a.keys, db,
                                                                a.reserve_path))
                        print(f.row(), f"round {r}", flush=True)
                    for c in a.concurrency:
                        figures.append(f := await bench_reserve(store, backend, c, a.reservations, a.keys, db,
                                                                 a.reserve_path))
                        print(f.row(), f"round {r}", flush=True)
                finally:
                    await close()
    return figures


def medians(figures: list[Figure]) -> list[str]:
    """One row per (backend, what, size): the median of each column over the rounds."""
    groups: dict[tuple[str, str, int], list[Figure]] = {}
    for f in figures:
        groups.setdefault((f.backend, f.what, f.size), []).append(f)
    rows = []
    for (backend, what, size), fs in groups.items():
        def med(get: Callable[[Figure], float | None], fs: list[Figure] = fs) -> float | None:
            vals = [v for f in fs if (v := get(f)) is not None]
            return statistics.median(vals) if vals else None
        rate = med(lambda f: f.rate) or 0.0
        cpu, loop = med(lambda f: f.cpu * 10_000 / f.ops), med(lambda f: f.loop_cpu * 10_000 / f.ops)
        db = med(lambda f: f.db_cpu * 10_000 / f.ops if f.db_cpu is not None else None)
        rows.append(f"| {backend:8} | {what:7} | {size:5} | {rate:10,.0f} | {cpu or 0:7.2f} | {loop or 0:7.2f} | "
                    + (f"{db:7.2f} |" if db is not None else "      - |"))
    return rows


HEADER = ("| backend  | what    |  size |      ops/s | cpu/10k | loop/10k|  db/10k |\n"
          "|----------|---------|------:|-----------:|--------:|--------:|--------:|")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.storage", description=__doc__)
    ap.add_argument("--backend", nargs="+", choices=["sqlite", "postgres"], default=["sqlite", "postgres"])
    ap.add_argument("--batch", type=int, nargs="*", default=[1, 32, 500], help="ledger batch sizes")
    ap.add_argument("--records", type=int, default=10_000, help="ledger records per batch size (2,000 for 1)")
    ap.add_argument("--concurrency", type=int, nargs="*", default=[1, 32, 256], help="reserve() callers")
    ap.add_argument("--reservations", type=int, default=10_000, help="reservations per concurrency")
    ap.add_argument("--keys", type=int, default=16, help="keys the load is spread over")
    ap.add_argument("--reserve-path", choices=["batched", "store"], default="batched",
                    help="reserve through the group-committing batcher (what admission does) or store.reserve; "
                         "`store` also runs on a checkout from before the batcher existed")
    ap.add_argument("--rounds", type=int, default=3, help="repeat everything; the summary shows medians")
    ap.add_argument("--json", type=Path, help="also write the raw figures here")
    a = ap.parse_args(argv)
    print(HEADER, flush=True)
    import uvloop  # what `sluice serve` runs on

    figures = uvloop.run(run(a))
    print(f"\nmedian of {a.rounds} rounds; cpu = this process (all threads), loop = the event loop's thread, "
          "db = the PostgreSQL backends serving the bench's database; seconds per 10k operations")
    print(HEADER)
    print("\n".join(medians(figures)))
    if a.json:
        a.json.write_text(json.dumps([asdict(f) | {"rate": f.rate} for f in figures], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
