"""The disconnect race: a watcher that cancels the request's task when its client goes away (or when the
server's shutdown grace runs out), carrying the cause as the cancel message, so the request's scope reads
why it was cancelled from the exception itself.
"""

from __future__ import annotations

import asyncio

from sluice.http.asgi import Receive

CLIENT_GONE = "client_disconnected"
SHUTDOWN = "server_shutdown"
_CAUSES = (CLIENT_GONE, SHUTDOWN)


class DisconnectWatch:
    """Cancels the request's task with `CLIENT_GONE` when the client goes away, or with `SHUTDOWN` on
    `interrupt()`; at most one of the two, so one `uncancel()` undoes it.

    It registers the request in `inflight` (the app's drain set) until `stop()`, so that a stopping server
    can end it when its shutdown grace runs out. `gone` records that the client left (also after a
    shutdown cancel), for the ledger.
    """

    __slots__ = ("_inflight", "_task", "_watcher", "done", "gone", "stopped")

    def __init__(self, receive: Receive, inflight: set[DisconnectWatch] | None = None) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self.gone = False
        self.done = False       # answered: a disconnect from now on no longer cancels anything
        self.stopped = False
        self._watcher = asyncio.get_running_loop().create_task(self._watch(receive))
        self._inflight = inflight
        if inflight is not None:
            inflight.add(self)

    async def _watch(self, receive: Receive) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                if not self.done:
                    self.gone = True
                    if not self.stopped:  # already cancelled by interrupt(): do not cancel twice
                        self._task.cancel(CLIENT_GONE)
                return

    def interrupt(self) -> bool:
        """Cancel the request because the server is stopping; False when it is over or its client left."""
        if self.done or self.gone or self.stopped:
            return False
        self.stopped = True
        self._task.cancel(SHUTDOWN)
        return True

    def cause(self, exc: asyncio.CancelledError) -> str | None:
        """In an `except CancelledError`: `CLIENT_GONE` or `SHUTDOWN` (and the cancel is undone) when this
        watch cancelled the task; None when the cancel came from elsewhere (it must propagate)."""
        msg = exc.args[0] if exc.args else None
        if msg in _CAUSES and (self.gone or self.stopped):
            self._task.uncancel()
            return msg  # type: ignore[no-any-return]
        return None

    def stop(self) -> None:
        self.done = True
        self._watcher.cancel()
        if self._inflight is not None:
            self._inflight.discard(self)
