"""A closed connection leaves no reference cycle behind: its protocol, parser, transport and exchanges go with
their last reference. With thousands of long-lived connections a cycle each would age into generation 2 and
make its collections long (docs/decisions.md, "Held streams"). Counted with the collector keeping what it
frees (`DEBUG_SAVEALL`) after the server has stopped."""

from __future__ import annotations

import asyncio
import gc

import uvloop

from sluice.server.exchange import Exchange
from sluice.server.protocol import HttpProtocol
from tests.e2e.rawhttp import RawConn
from tests.unit.server.test_protocol import Receive, Scope, Send, echo, read_body, serve, until


async def test_closed_connections_leave_no_cycle_for_the_collector() -> None:
    held = asyncio.Event()
    ends: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] != "/held":
            await echo(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        held.set()
        await read_body(receive)
        ends.append((await receive())["type"])  # the client leaves mid-response

    gc.collect()
    flags = gc.get_debug()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        async with serve(app) as (port, server):
            for _ in range(3):  # closed by the client after a keep-alive exchange
                conn = await RawConn.open(port)
                await conn.send("POST", "/echo", body=b"hi")
                assert await conn.body(await conn.head()) == b"POST /echo hi"
                conn.close()
            conn = await RawConn.open(port)  # left in the middle of a streamed response
            await conn.send("GET", "/held")
            await held.wait()
            conn.abort()
            await until(lambda: not server.server_state.connections and bool(ends))
        gc.collect()
        left = [type(o).__name__ for o in gc.garbage if isinstance(o, HttpProtocol | Exchange)]
    finally:
        gc.set_debug(flags)
        gc.garbage.clear()
    assert ends == ["http.disconnect"]
    assert left == []


def test_on_uvloop() -> None:
    """The same on uvloop, the loop Sluice serves on (its transports hold the protocol in C)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(test_closed_connections_leave_no_cycle_for_the_collector())
