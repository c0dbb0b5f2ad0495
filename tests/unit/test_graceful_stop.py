"""GracefulStop's timeline on a real loop and real signals, with a recording handler in uvicorn's place:
ready flips at once, the signal reaches the server only after the drain delay (at once on a second
signal), and the requests still open when the grace runs out are interrupted in a way they recognise.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Iterator
from types import FrameType

import pytest

from sluice.cli.serve import GracefulStop
from sluice.http.asgi import Message
from sluice.http.disconnect import SHUTDOWN, DisconnectWatch
from sluice.http.drain import Drain

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class ServerHandler:
    """Stands in for uvicorn's handle_exit: records what reached it and when."""

    def __init__(self) -> None:
        self.got: list[tuple[int, float]] = []

    def __call__(self, sig: int, frame: FrameType | None) -> None:
        self.got.append((sig, time.monotonic()))


@pytest.fixture
def server() -> Iterator[ServerHandler]:
    handler = ServerHandler()
    old = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield handler
    finally:
        for s, h in old.items():
            signal.signal(s, h)


async def _never() -> Message:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def _request(drain: Drain) -> str:
    """A request in flight as its scope holds one: registered with the drain until it ends; the cancel
    carries its cause."""
    watch = DisconnectWatch(_never, drain.inflight)
    try:
        await asyncio.sleep(60)
        return "finished"
    except asyncio.CancelledError as exc:
        if watch.cause(exc) == SHUTDOWN:
            return "stopped"
        raise
    finally:
        watch.stop()


async def _until(cond: Callable[[], object], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not cond():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)


async def test_ready_flips_at_once_the_server_hears_after_the_drain_and_open_requests_end_after_the_grace(
        server: ServerHandler) -> None:
    drain = Drain()
    GracefulStop(drain, drain_seconds=0.4, grace_seconds=0.4).install()
    req = asyncio.create_task(_request(drain))
    await asyncio.sleep(0)
    assert len(drain.inflight) == 1

    sent = time.monotonic()
    signal.raise_signal(signal.SIGTERM)
    await asyncio.sleep(0)
    assert drain.draining and server.got == []          # not ready at once; still serving
    await _until(lambda: server.got)
    assert server.got[0][0] == signal.SIGTERM and server.got[0][1] - sent >= 0.35
    assert not req.done()                               # the grace has only begun
    assert await asyncio.wait_for(req, 10) == "stopped"
    assert time.monotonic() - server.got[0][1] >= 0.35
    assert drain.inflight == set() and len(server.got) == 1


async def test_a_second_signal_skips_the_rest_of_the_drain(server: ServerHandler) -> None:
    drain = Drain()
    GracefulStop(drain, drain_seconds=60, grace_seconds=60).install()
    signal.raise_signal(signal.SIGTERM)
    await asyncio.sleep(0.05)
    assert drain.draining and server.got == []
    signal.raise_signal(signal.SIGINT)                  # Ctrl-C while draining: stop accepting now
    await _until(lambda: server.got)
    assert [s for s, _ in server.got] == [signal.SIGINT]
    signal.raise_signal(signal.SIGINT)                  # and again: uvicorn's own force-quit
    await _until(lambda: len(server.got) == 2)


async def test_without_a_drain_delay_the_signal_goes_straight_on(server: ServerHandler) -> None:
    drain = Drain()
    GracefulStop(drain, drain_seconds=0, grace_seconds=60).install()
    signal.raise_signal(signal.SIGINT)
    await asyncio.sleep(0)
    assert drain.draining and [s for s, _ in server.got] == [signal.SIGINT]


async def test_cut_leaves_finished_and_disconnected_requests_alone() -> None:
    drain = Drain()
    req = asyncio.create_task(_request(drain))
    await asyncio.sleep(0)
    (watch,) = drain.inflight
    watch.done = True                                   # e.g. a plain reply already being written
    assert drain.cut() == 0 and not req.done()
    watch.done = False
    watch.gone = True                                   # its client has left: the disconnect path owns it
    assert drain.cut() == 0
    watch.gone = False
    assert drain.cut() == 1 and drain.cut() == 0        # once
    assert await req == "stopped"
