"""The ledger writer: records queue in memory and are written in batches off the request path.

`submit()` never awaits. A background task flushes every `interval` seconds (or sooner when a batch
fills); `close()` flushes what is left. A failed write is retried on the next flush; records are
idempotent on request_id, so a retry never doubles one.
"""

from __future__ import annotations

import asyncio
import logging

from sluice.storage.base import LedgerRecord, Store

log = logging.getLogger("sluice.ledger")


class LedgerWriter:
    def __init__(self, store: Store, *, interval: float = 0.2, batch: int = 500,
                 max_pending: int = 200_000) -> None:
        self._store = store
        self._interval = interval
        self._batch = batch
        self._max_pending = max_pending
        self._pending: list[LedgerRecord] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sluice-ledger")

    def submit(self, rec: LedgerRecord) -> None:
        self._pending.append(rec)
        if len(self._pending) >= self._batch:
            self._wake.set()

    async def _run(self) -> None:
        while not self._closing:
            try:
                await asyncio.wait_for(self._wake.wait(), self._interval)
            except TimeoutError:
                pass
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:self._batch], self._pending[self._batch:]
            try:
                await self._store.write_ledger(batch)
            except Exception:
                log.exception("ledger write failed; %d records kept for the next flush", len(batch))
                self._pending[:0] = batch[-self._max_pending:]
                return

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        await self.flush()
