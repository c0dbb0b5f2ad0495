"""Retention: request-log rows older than `ledger.retention_days` are summed into `usage_daily` (per UTC
day, key, account and model) and deleted, by a background job. Several instances may run it: the lease
row is taken by a conditional UPDATE in the same transaction as the roll-up, so one instance at a time
does the work and a second, waiting on the row, finds the lease held and does nothing."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from sluice.storage.base import Stmt, Store

log = logging.getLogger("sluice.retention")

_DAY = 86400
_TAKE_LEASE = ("UPDATE leases SET holder = ?, until = ? WHERE name = 'retention' AND (until < ? OR holder = ?) "
               "RETURNING name")
_ROLL_UP = ("INSERT INTO usage_daily (day, key_id, account_id, model, requests, prompt_tokens, completion_tokens, "
            "errors, cost) SELECT floor(created_at / 86400) * 86400, key_id, account_id, model, count(*), "
            "coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0), "
            "sum(CASE WHEN status >= 400 THEN 1 ELSE 0 END), coalesce(sum(cost), 0) FROM ledger "
            "WHERE created_at < ? GROUP BY floor(created_at / 86400) * 86400, key_id, account_id, model")
_DELETE = "DELETE FROM ledger WHERE created_at < ?"


def cutoff(now: float, retention_days: float) -> float:
    """Whole UTC days only: the start of the day that is `retention_days` old."""
    return float(int((now - retention_days * _DAY) // _DAY) * _DAY)


async def roll_up(store: Store, before: float, holder: str, lease_seconds: float = 600.0) -> bool:
    """Sum and delete the ledger rows older than `before`, if this holder gets the lease. True if it ran."""
    now = time.time()

    def work(_: tuple[Any, ...]) -> list[Stmt]:
        return [(_ROLL_UP, (before,)), (_DELETE, (before,))]
    got = await store.guarded((_TAKE_LEASE, (holder, now + lease_seconds, now, holder)), work)
    return got is not None


class Retention:
    """The background job of one instance."""

    def __init__(self, store: Store, retention_days: float | None, every: float) -> None:
        self._store = store
        self._days = retention_days
        self._every = every
        self._holder = "inst_" + os.urandom(6).hex()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._days is not None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="sluice-retention")

    async def _loop(self) -> None:
        assert self._days is not None
        while True:
            try:
                if await roll_up(self._store, cutoff(time.time(), self._days), self._holder):
                    log.info("rolled up request-log rows older than %s days", self._days)
            except Exception:
                log.exception("retention roll-up failed; will retry")
            await asyncio.sleep(self._every)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
