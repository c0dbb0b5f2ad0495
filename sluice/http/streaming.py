"""The one SSE response for every dialect: headers once the upstream answered, one write per event,
the dialect's heartbeat while the source is silent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from sluice.http.asgi import Headers, Send

SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
    (b"content-encoding", b"identity"),
]


class _Beat:
    __slots__ = ("last",)

    def __init__(self, now: float) -> None:
        self.last = now


async def send_frames(send: Send, frames: AsyncIterator[bytes], headers: Headers, heartbeat: float,
                      ping: bytes) -> None:
    """Send the 200, then each frame of any dialect as it comes, and `ping` whenever the source was silent
    for `heartbeat` seconds: the dialect's own keep-alive (`: keep-alive` for OpenAI's, `event: ping` for
    Anthropic's, whose clients ignore comments). The dialect's frames carry its terminal marker."""
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


async def _heartbeat(send: Send, beat: _Beat, interval: float, frame: bytes) -> None:
    loop = asyncio.get_running_loop()
    while True:
        idle = loop.time() - beat.last
        if idle < interval:
            await asyncio.sleep(interval - idle)
            continue
        await send({"type": "http.response.body", "body": frame, "more_body": True})
        beat.last = loop.time()
