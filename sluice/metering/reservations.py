"""Group commit for budget reservations: the reservations that arrive while one transaction is in flight
go to the store together in the next one (`Store.reserve_many`), each still checked on its own.

When nothing is in flight a reservation goes from its caller's own task (a batch of one, no hop
through another task), after one yield to the loop so that callers ready in the same iteration queue
behind it. Whatever arrives meanwhile queues, and a drain task sends the queue in batches until it is
empty. So the cost per reservation (thread hop or round trip, transaction, commit)
falls as load rises. Each caller gets its own answer, or the store's exception if its batch failed
(a failed transaction granted nothing). A batch that failed because of what one reservation holds
(storage/poison.py) is sent again one reservation at a time, so only the poison one's caller fails.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from typing import Protocol

from sluice.storage.base import Reservation
from sluice.storage.poison import is_record_error

log = logging.getLogger("sluice.reservations")


class Reserves(Protocol):
    """The part of the Store this needs."""

    async def reserve_many(self, batch: Sequence[Reservation]) -> list[bool]: ...


class _Waiting:
    __slots__ = ("fut", "res", "sent")

    def __init__(self, res: Reservation, fut: asyncio.Future[bool]) -> None:
        self.res = res
        self.fut = fut
        self.sent = False


class ReservationBatcher:
    def __init__(self, store: Reserves, *, max_batch: int = 256) -> None:
        self._store = store
        self._max_batch = max_batch
        self._queue: deque[_Waiting] = deque()
        self._task: asyncio.Task[None] | None = None
        self._alone = False

    async def reserve(self, res: Reservation) -> bool:
        """True when `res` is held on its key.

        A queued caller cancelled after its batch was sent still waits for that transaction to end before
        raising, so a granted reservation is in the database before the request settles, and settling
        releases it. A lone caller's store call gets the same from the stores: asyncpg waits for the
        server to finish or cancel the statement before the connection goes back to the pool, and
        SQLite's one thread runs jobs in order, so a later settlement comes after."""
        if self._task is None and not self._alone:
            return await self._reserve_alone(res)
        # a batch is in flight (alone or from the drain task): queue; whichever is in flight starts or
        # continues the drain when it ends
        w = _Waiting(res, asyncio.get_running_loop().create_future())
        self._queue.append(w)
        try:
            return await asyncio.shield(w.fut)
        except asyncio.CancelledError:
            if not w.sent:
                w.fut.cancel()          # not sent yet: the batch will leave it out
            elif not w.fut.done():
                await asyncio.wait([w.fut])
            raise

    async def _reserve_alone(self, res: Reservation) -> bool:
        """Nothing in flight: send at once from the caller's task (no hop through another task); who
        comes meanwhile queues for the next batch."""
        self._alone = True
        try:
            # Callers already ready in this loop iteration queue behind this one during the yield: a
            # store that commits without yielding (SQLite on the loop's thread) would else take a burst
            # one transaction at a time.
            await asyncio.sleep(0)
            return (await self._store.reserve_many([res]))[0]
        finally:
            self._alone = False
            if self._queue:
                self._task = asyncio.get_running_loop().create_task(self._drain(), name="sluice-reserve")

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch: list[_Waiting] = []
                while self._queue and len(batch) < self._max_batch:
                    w = self._queue.popleft()
                    if not w.fut.done():
                        w.sent = True
                        batch.append(w)
                if batch:
                    await self._send(batch)
        finally:
            self._task = None
            while self._queue:          # only when this task was cancelled (loop shutting down)
                self._queue.popleft().fut.cancel()

    async def _send(self, batch: list[_Waiting]) -> None:
        try:
            granted = await self._store.reserve_many([w.res for w in batch])
        except BaseException as exc:
            if len(batch) > 1 and is_record_error(exc):
                for w in batch:         # the transaction granted nothing: each alone, the poison one fails
                    await self._send([w])
                return
            if len(batch) == 1 and is_record_error(exc):
                log.error("reservation for %s (key %s) cannot be written: %s: %s", batch[0].res.request_id,
                          batch[0].res.key_id, type(exc).__name__, exc)
            for w in batch:
                if not w.fut.done():
                    if isinstance(exc, asyncio.CancelledError):
                        w.fut.cancel()
                    else:
                        w.fut.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for w, ok in zip(batch, granted, strict=True):
            if not w.fut.done():
                w.fut.set_result(ok)

    async def aclose(self) -> None:
        """Wait for the reservations already queued."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
