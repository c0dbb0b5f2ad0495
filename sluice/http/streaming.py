"""The SSE response: headers once the upstream answered, one write per event, heartbeats while silent,
and a watcher that turns a client disconnect into cancellation of the request task (and so of the
upstream call), also while waiting for the first token.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from sluice.errors import SluiceError
from sluice.http.asgi import Headers, Receive, Send
from sluice.relay import RelayStream
from sluice.sse import DONE_FRAME, KEEPALIVE_FRAME

SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
    (b"content-encoding", b"identity"),
]
SHUTDOWN = "server_shutdown"  # the cancel message of `DisconnectWatch.interrupt()`, for tracebacks and logs


class DisconnectWatch:
    """Cancels the request's task when the client goes away; `gone` tells the task why it was cancelled.

    It also registers the request in `inflight` (the app's drain set) until `stop()`, so that a stopping
    server can end it with `interrupt()` when its shutdown grace runs out; `stopped` tells the task so.
    """

    __slots__ = ("_inflight", "_task", "_watcher", "done", "gone", "stopped")

    def __init__(self, receive: Receive, inflight: set[DisconnectWatch] | None = None) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self.gone = False
        self.done = False
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
                        self._task.cancel()
                return

    def absorb(self) -> bool:
        """In an `except CancelledError`: True (and the cancel is undone) when it came from a disconnect."""
        if self.gone and not self.stopped:
            self._task.uncancel()
            return True
        return False

    def interrupt(self) -> bool:
        """Cancel the request because the server is stopping; False when it is over or its client left."""
        if self.done or self.gone or self.stopped:
            return False
        self.stopped = True
        self._task.cancel(SHUTDOWN)
        return True

    def absorb_stop(self) -> bool:
        """In an `except CancelledError`: True (and the cancel is undone) when it came from `interrupt()`."""
        if self.stopped:
            self._task.uncancel()
            return True
        return False

    def stop(self) -> None:
        self.done = True
        self._watcher.cancel()
        if self._inflight is not None:
            self._inflight.discard(self)


class _Beat:
    __slots__ = ("last",)

    def __init__(self, now: float) -> None:
        self.last = now


async def send_stream(send: Send, rs: RelayStream, headers: Headers, heartbeat: float) -> None:
    """Send the 200, then every frame as it comes; the `[DONE]` frame also ends the response."""
    loop = asyncio.get_running_loop()
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + headers})
    beat = _Beat(loop.time())
    hb = loop.create_task(_heartbeat(send, beat, heartbeat, KEEPALIVE_FRAME))
    ended = False
    try:
        async for frame in rs.frames():
            if frame is DONE_FRAME:
                hb.cancel()
                ended = True
                await send({"type": "http.response.body", "body": frame, "more_body": False})
                break
            await send({"type": "http.response.body", "body": frame, "more_body": True})
            beat.last = loop.time()
    finally:
        hb.cancel()
    if not ended:
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def send_frames(send: Send, frames: AsyncIterator[bytes], headers: Headers, heartbeat: float,
                      ping: bytes) -> None:
    """Send the 200, then each frame as it comes and `ping` whenever the source was silent for `heartbeat`
    seconds (a dialect's own keep-alive: clients that ignore SSE comments still see the stream alive)."""
    loop = asyncio.get_running_loop()
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + headers})
    beat = _Beat(loop.time())
    hb = loop.create_task(_heartbeat(send, beat, heartbeat, ping))
    try:
        async for frame in frames:
            await send({"type": "http.response.body", "body": frame, "more_body": True})
            beat.last = loop.time()
    finally:
        hb.cancel()
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def error_frame(exc: SluiceError) -> bytes:
    """The last event of a stream that failed after its 200: OpenAI's error envelope, no `[DONE]` after it."""
    return b"data: " + exc.to_body() + b"\n\n"


async def _heartbeat(send: Send, beat: _Beat, interval: float, frame: bytes) -> None:
    loop = asyncio.get_running_loop()
    while True:
        idle = loop.time() - beat.last
        if idle < interval:
            await asyncio.sleep(interval - idle)
            continue
        await send({"type": "http.response.body", "body": frame, "more_body": True})
        beat.last = loop.time()
