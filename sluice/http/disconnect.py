"""The disconnect race: cancel the request's task when its client goes away (or when the server's shutdown
grace runs out), carrying the cause as the cancel message, so the request's scope reads why it was cancelled
from the exception itself. Under Sluice's own server the protocol calls back on the disconnect (no task);
under another ASGI server a watcher task awaits `receive()` for `http.disconnect`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sluice.http.asgi import Receive, Scope
from sluice.server.wire import ON_DISCONNECT

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

    __slots__ = ("_hook", "_inflight", "_task", "_watcher", "done", "gone", "stopped")

    def __init__(self, receive: Receive, inflight: set[DisconnectWatch] | None = None,
                 scope: Scope | None = None) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self.gone = False
        self.done = False       # answered: a disconnect from now on no longer cancels anything
        self.stopped = False
        self._inflight = inflight
        if inflight is not None:
            inflight.add(self)
        ext = scope.get("extensions") if scope is not None else None
        self._hook: Callable[[Callable[[], None] | None], None] | None = ext.get(ON_DISCONNECT) if ext else None
        self._watcher: asyncio.Task[None] | None = None
        if self._hook is not None:
            self._hook(self._client_gone)
        else:
            self._watcher = asyncio.get_running_loop().create_task(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                self._client_gone()
                return

    def _client_gone(self) -> None:
        if not self.done:
            self.gone = True
            if not self.stopped:  # already cancelled by interrupt(): do not cancel twice
                self._task.cancel(CLIENT_GONE)

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
        if self._hook is not None:
            self._hook(None)
        elif self._watcher is not None:
            self._watcher.cancel()
        if self._inflight is not None:
            self._inflight.discard(self)
