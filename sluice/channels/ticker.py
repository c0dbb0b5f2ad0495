"""A background task that runs one step every N seconds (or at once when woken) until closed; a failing
step is logged and the loop goes on (the database may be away for a moment: keep serving what we have)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("sluice.channels")


class Ticker:
    def __init__(self, seconds: float, step: Callable[[], Awaitable[None]], what: str) -> None:
        self._seconds = seconds
        self._step = step
        self._what = what
        self._task: asyncio.Task[None] | None = None
        self._woken = asyncio.Event()

    def wake(self) -> None:
        """Run the step now instead of at the end of the wait (a change was announced)."""
        self._woken.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._seconds):
                    await self._woken.wait()
            self._woken.clear()
            try:
                await self._step()
            except Exception:
                log.exception("%s failed; retrying in %.1fs", self._what, self._seconds)
