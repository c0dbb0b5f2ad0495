"""Heartbeats from one timer per event loop: a silent stream gets its dialect's ping, a stream that writes
gets none, no stream costs a task while it is silent, and the wheel lets go of streams that ended."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from sluice.http import streaming
from sluice.http.asgi import Message
from sluice.http.streaming import Heartbeats, send_frames

PING = b": keep-alive\n\n"
INTERVAL = 0.05


class Client:
    """Collects what a stream sends, and wakes whoever waits for a given number of pings."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.pinged = asyncio.Event()

    async def send(self, msg: Message) -> None:
        self.sent.append(msg)
        if msg.get("body") == PING:
            self.pinged.set()

    def bodies(self) -> list[bytes]:
        return [m["body"] for m in self.sent if m["type"] == "http.response.body"]


async def _source(q: asyncio.Queue[bytes | None]) -> AsyncIterator[bytes]:
    while (frame := await q.get()) is not None:
        yield frame


async def test_silent_streams_get_pings_without_a_task_each_and_leave_the_wheel_when_done() -> None:
    n = 200
    clients = [Client() for _ in range(n)]
    queues: list[asyncio.Queue[bytes | None]] = [asyncio.Queue() for _ in range(n)]
    before = len(asyncio.all_tasks())
    streams = [asyncio.create_task(send_frames(c.send, _source(q), [], INTERVAL, PING))
               for c, q in zip(clients, queues, strict=True)]
    await asyncio.sleep(0)
    wheel = Heartbeats.of(asyncio.get_running_loop(), INTERVAL)
    assert len(wheel) == n
    assert len(asyncio.all_tasks()) == before + n  # the streams themselves, nothing per stream besides
    await asyncio.wait_for(asyncio.gather(*(c.pinged.wait() for c in clients)), 30)
    for q in queues:
        q.put_nowait(b"data: 1\n\n")
        q.put_nowait(None)
    await asyncio.wait_for(asyncio.gather(*streams), 30)
    assert len(wheel) == 0 and wheel._timer is None
    assert INTERVAL not in streaming._WHEELS.get(asyncio.get_running_loop(), {})  # it left the loop's registry
    for c in clients:
        bodies = c.bodies()
        assert c.sent[0]["type"] == "http.response.start" and bodies[-2:] == [b"data: 1\n\n", b""]
        assert set(bodies[:-2]) == {PING}


async def test_a_stream_that_keeps_writing_is_not_pinged_while_a_silent_one_is() -> None:
    busy, quiet = Client(), Client()
    bq: asyncio.Queue[bytes | None] = asyncio.Queue()
    qq: asyncio.Queue[bytes | None] = asyncio.Queue()
    tasks = [asyncio.create_task(send_frames(busy.send, _source(bq), [], 30.0, PING)),
             asyncio.create_task(send_frames(quiet.send, _source(qq), [], INTERVAL, PING))]
    # the busy stream writes every iteration of the loop; its interval (30 s) never passes in this test
    while not quiet.pinged.is_set():
        bq.put_nowait(b"data: x\n\n")
        await asyncio.sleep(0.001)
    bq.put_nowait(None)
    qq.put_nowait(None)
    await asyncio.wait_for(asyncio.gather(*tasks), 30)
    assert PING not in busy.bodies() and PING in quiet.bodies()


async def test_a_ping_the_client_does_not_take_is_not_repeated_and_ends_with_the_stream() -> None:
    """A client that does not read: the ping's send never returns; no second ping piles up behind it, and
    the stream's end cancels it."""
    stuck = asyncio.Event()
    sent: list[Message] = []

    async def send(msg: Message) -> None:
        sent.append(msg)
        if msg.get("body") == PING:
            stuck.set()
            await asyncio.Event().wait()  # never drained

    q: asyncio.Queue[bytes | None] = asyncio.Queue()
    task = asyncio.create_task(send_frames(send, _source(q), [], INTERVAL, PING))
    await asyncio.wait_for(stuck.wait(), 30)
    await asyncio.sleep(INTERVAL * 4)  # several intervals more of silence
    q.put_nowait(None)
    await asyncio.wait_for(task, 30)
    assert [m.get("body") for m in sent[1:]] == [PING, b""]
