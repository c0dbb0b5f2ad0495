"""The one SSE response for every dialect: headers once the upstream answered, then the frames as they come,
and the dialect's heartbeat while the source is silent, from one timer per event loop (`Heartbeats`), not a
task per stream."""

from __future__ import annotations

import asyncio
import math
import weakref
from collections.abc import AsyncIterator, Awaitable

from sluice.http.asgi import Headers, Send

SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
    (b"content-encoding", b"identity"),
]

# A stream silent for `interval` gets its ping at most `interval / TICKS_PER_INTERVAL` late.
TICKS_PER_INTERVAL = 4
MAX_TICK = 1.0


async def send_frames(send: Send, frames: AsyncIterator[bytes], headers: Headers, heartbeat: float,
                      ping: bytes) -> None:
    """Send the 200, then each frame of any dialect as it comes, and `ping` whenever the source was silent
    for `heartbeat` seconds: the dialect's own keep-alive (`: keep-alive` for OpenAI's, `event: ping` for
    Anthropic's, whose clients ignore comments). The dialect's frames carry its terminal marker."""
    loop = asyncio.get_running_loop()
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + headers})
    beat = Heartbeats.of(loop, heartbeat).add(send, ping)
    try:
        async for frame in frames:
            await send({"type": "http.response.body", "body": frame, "more_body": True})
            beat.last = loop.time()
    finally:
        beat.remove()
    await send({"type": "http.response.body", "body": b"", "more_body": False})


class Beat:
    """One open stream on the wheel: when it last wrote (the stream sets `last` after each frame)."""

    __slots__ = ("last", "ping", "send", "sending", "slot", "wheel")

    def __init__(self, wheel: Heartbeats, send: Send, ping: bytes, now: float) -> None:
        self.wheel = wheel
        self.send = send
        self.ping = ping
        self.last = now
        self.slot = 0
        self.sending: asyncio.Task[None] | None = None  # a ping being written (the client reads slowly)

    def remove(self) -> None:
        self.wheel.discard(self)
        if self.sending is not None and not self.sending.done():
            self.sending.cancel()  # its bytes are written; what is left is waiting for the client to drain


_WHEELS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, Heartbeats]] = (
    weakref.WeakKeyDictionary())


class Heartbeats:
    """A timer wheel for one event loop and one heartbeat interval: streams sit in buckets by when they
    would next be due (`last` + interval, rounded up to a tick); one `call_at` runs while any stream is
    open, once a tick. A due stream that wrote since it was filed is filed again by its new `last`; one
    that stayed silent gets its ping (a short task, only then) and is filed an interval later. A frame
    costs the stream one clock read, and no timer operation."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self._loop = loop
        self.interval = interval
        self.tick = min(interval / TICKS_PER_INTERVAL, MAX_TICK)
        self._slots: dict[int, set[Beat]] = {}  # tick number -> the streams to look at then
        self._timer: asyncio.TimerHandle | None = None
        self._armed = 0  # the tick the timer is set for: always the earliest slot

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop, interval: float) -> Heartbeats:
        wheels = _WHEELS.get(loop)
        if wheels is None:
            wheels = _WHEELS[loop] = {}
        wheel = wheels.get(interval)
        if wheel is None:
            wheel = wheels[interval] = cls(loop, interval)
        return wheel

    def __len__(self) -> int:
        return sum(map(len, self._slots.values()))

    def add(self, send: Send, ping: bytes) -> Beat:
        beat = Beat(self, send, ping, self._loop.time())
        self._file(beat, 0)  # due no earlier than any stream filed before it: the timer stays right
        if self._timer is None:
            self._arm()
        return beat

    def discard(self, beat: Beat) -> None:
        slot = self._slots.get(beat.slot)
        if slot is not None:
            slot.discard(beat)
            if not slot:
                del self._slots[beat.slot]
        if not self._slots:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._unregister()

    def _unregister(self) -> None:
        """Leave the loop's registry with the last stream, so a closed loop is not kept alive by its wheel
        (the wheel holds the loop; the next stream makes a new wheel)."""
        wheels = _WHEELS.get(self._loop)
        if wheels is not None and wheels.get(self.interval) is self:
            del wheels[self.interval]
            if not wheels:
                del _WHEELS[self._loop]

    def _file(self, beat: Beat, floor: int) -> None:
        beat.slot = key = max(math.ceil((beat.last + self.interval) / self.tick), floor)
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = set()
        slot.add(beat)

    def _arm(self) -> None:
        self._armed = min(self._slots)
        self._timer = self._loop.call_at(self._armed * self.tick, self._sweep)

    def _sweep(self) -> None:
        self._timer = None
        now = self._loop.time()
        current = max(int(now / self.tick), self._armed)  # a timer may run a hair early
        due: list[Beat] = []
        for key in [k for k in self._slots if k <= current]:
            due.extend(self._slots.pop(key))
        for beat in due:
            if now - beat.last >= self.interval:
                self._ping(beat, now)
            self._file(beat, current + 1)
        if self._slots:
            self._arm()

    def _ping(self, beat: Beat, now: float) -> None:
        if beat.sending is not None and not beat.sending.done():
            return  # the last ping is still being written: the client is not reading
        beat.last = now
        beat.sending = self._loop.create_task(_quietly(beat.send({
            "type": "http.response.body", "body": beat.ping, "more_body": True})))


async def _quietly(sending: Awaitable[None]) -> None:
    """A ping to a client that has gone fails with it; the stream's own task reports that."""
    try:
        await sending
    except Exception:
        pass
