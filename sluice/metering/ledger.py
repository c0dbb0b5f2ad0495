"""The ledger writer: records queue in memory and are written in batches off the per-chunk path.

`submit()` never awaits: a background task flushes every `interval` seconds. `commit()` waits until
the record is in the database (group commit: every record that arrives while a write is in flight goes
into the next one, so the cost per record falls as load rises); the relay uses it before a response's
last byte so a finished request is never lost, even to SIGKILL. `close()` flushes what is left. A failed
write is retried on the next flush; records are idempotent on request_id, so a retry never doubles one.
A batch that fails because of what one record holds (storage/poison.py) is written again one record at a
time, and the record that still fails is quarantined, so it cannot hold back the others.
"""

from __future__ import annotations

import asyncio
import logging
import time

from sluice.observability.metrics import LEDGER_COMMIT
from sluice.storage.base import LedgerRecord, Store
from sluice.storage.poison import is_record_error

log = logging.getLogger("sluice.ledger")


class LedgerWriter:
    def __init__(self, store: Store, *, interval: float = 0.2, batch: int = 500,
                 max_pending: int = 200_000) -> None:
        self._store = store
        self._interval = interval
        self._batch = batch
        self._max_pending = max_pending
        self._pending: list[LedgerRecord] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._due = False  # something waits to be written now (a commit, a full batch, closing)
        self._sleep: asyncio.Future[None] | None = None  # the writer's wait, while it waits
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sluice-ledger")

    @property
    def depth(self) -> int:
        """Records waiting to be written (a metric, sampled)."""
        return len(self._pending)

    def submit(self, rec: LedgerRecord) -> None:
        self._pending.append(rec)
        if len(self._pending) >= self._batch:
            self._wake()

    async def commit(self, rec: LedgerRecord) -> None:
        """Submit and wait until it has been written (or the write failed and was logged)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(rec)
        self._waiters.append(fut)
        self._wake()
        await fut

    def _wake(self) -> None:
        self._due = True
        sleep = self._sleep
        if sleep is not None and not sleep.done():
            sleep.set_result(None)

    async def _run(self) -> None:
        """Flush when woken, else every `interval`: one future and one timer a wait (`wait_for` on an
        Event cost a task, two futures and their callbacks, for every commit)."""
        loop = asyncio.get_running_loop()
        while not self._closing:
            if not self._due:
                self._sleep = sleep = loop.create_future()
                timer = loop.call_later(self._interval, _end_sleep, sleep)
                try:
                    await sleep
                finally:
                    timer.cancel()
                    self._sleep = None
            self._due = False
            await self.flush()

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        waiters, self._waiters = self._waiters, []
        try:
            for i in range(0, len(pending), self._batch):
                batch = pending[i:i + self._batch]
                try:
                    t0 = time.perf_counter()
                    await self._store.write_ledger(batch)
                    LEDGER_COMMIT.observe(time.perf_counter() - t0)
                except Exception as exc:
                    if is_record_error(exc) and await self._one_by_one(batch):
                        continue
                    log.exception("ledger write failed; %d records kept for the next flush", len(pending) - i)
                    self._pending[:0] = pending[i:][-self._max_pending:]
                    return
        finally:
            for w in waiters:
                if not w.done():
                    w.set_result(None)

    async def _one_by_one(self, batch: list[LedgerRecord]) -> bool:
        """Write each record alone; quarantine those that fail for what they hold. False (nothing more
        written) as soon as one fails for another reason, or cannot be quarantined: the database itself
        is in trouble, so the whole batch waits for the next flush (records are idempotent)."""
        for rec in batch:
            try:
                await self._store.write_ledger([rec])
                continue
            except Exception as exc:
                if not is_record_error(exc):
                    return False
                error = f"{type(exc).__name__}: {exc}"
            try:
                await self._store.quarantine(rec, error)
            except Exception:
                return False
            log.error("ledger record %s (key %s) cannot be written and was quarantined: %s", rec.request_id,
                      rec.key_id, error)
        return True

    async def close(self) -> None:
        self._closing = True
        self._wake()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        await self.flush()


def _end_sleep(sleep: asyncio.Future[None]) -> None:
    if not sleep.done():
        sleep.set_result(None)
