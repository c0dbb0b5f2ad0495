"""`/ready`: 503 with the names of what is down while the database or a configured Redis does not answer.

Probes are cached for `ttl` seconds and shared by concurrent callers, so a balancer polling every
instance often costs one tiny query per `ttl`, not one per poll.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("sluice.ready")

Probe = Callable[[], Awaitable[object]]
PROBE_TIMEOUT = 2.0


class Readiness:
    def __init__(self, probes: dict[str, Probe], *, ttl: float, timeout: float = PROBE_TIMEOUT) -> None:
        self._probes = probes
        self._timeout = timeout
        self._ttl = ttl
        self._down: list[str] = []
        self._at = -float("inf")
        self._running: asyncio.Task[list[str]] | None = None

    async def down(self) -> list[str]:
        """Names of the dependencies that failed their last probe (empty: all answer)."""
        if time.monotonic() - self._at < self._ttl:
            return self._down
        if self._running is None:
            self._running = asyncio.create_task(self._probe_all())
        task = self._running
        try:
            return await asyncio.shield(task)
        finally:
            if task.done() and self._running is task:
                self._running = None

    async def _probe_all(self) -> list[str]:
        names = list(self._probes)
        results = await asyncio.gather(*(self._probe(n) for n in names))
        down = [n for n, ok in zip(names, results, strict=True) if not ok]
        if down != self._down:
            (log.warning if down else log.info)("readiness: %s", f"down: {', '.join(down)}" if down else "all up")
        self._down, self._at = down, time.monotonic()
        return down

    async def _probe(self, name: str) -> bool:
        try:
            async with asyncio.timeout(self._timeout):
                await self._probes[name]()
        except Exception as exc:  # any failure means "not ready"; the reason goes to the log, not the body
            log.debug("readiness probe %s failed: %r", name, exc)
            return False
        return True
