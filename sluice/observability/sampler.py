"""Gauges sampled once a second off the request path: event-loop lag, ledger queue depth, and (every
few seconds, one small query) the budget reservations held in the database."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from sluice.observability.metrics import LEDGER_QUEUE, LOOP_LAG, RESERVATIONS

log = logging.getLogger("sluice.metrics")

INTERVAL = 1.0
RESERVATIONS_EVERY = 5  # ticks


class Sampler:
    def __init__(self, queue_depth: Callable[[], int], reservations: Callable[[], Awaitable[int]]) -> None:
        self._depth = queue_depth
        self._reservations = reservations
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sluice-metrics-sampler")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        tick = 0
        while True:
            due = loop.time() + INTERVAL
            await asyncio.sleep(INTERVAL)
            LOOP_LAG.set(max(0.0, loop.time() - due))  # a busy loop runs the timer late by this much
            LEDGER_QUEUE.set(self._depth())
            tick += 1
            if tick % RESERVATIONS_EVERY == 1:
                try:
                    RESERVATIONS.set(await self._reservations())
                except Exception:
                    log.debug("could not count reservations", exc_info=True)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
