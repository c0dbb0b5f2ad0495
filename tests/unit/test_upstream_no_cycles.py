"""A closed upstream connection leaves no reference cycle behind: its protocol and parser go with their last
reference. Pooled connections live long, so a cycle each would be found only by full collections, which with
thousands of held streams walk the whole heap (docs/decisions.md, "Held streams")."""

from __future__ import annotations

import asyncio
import gc

import uvloop

from sluice.upstream._conn import Conn
from tests.unit.test_upstream import EOF, fetch, get, head, reply, upstream


async def test_closed_upstream_connections_leave_no_cycle_for_the_collector() -> None:
    gc.collect()
    flags = gc.get_debug()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        async with upstream([reply(b"one", "Connection: close")], [head(200, "content-length: 9") + b"x", EOF],
                            [reply(b"pooled")]) as (srv, client):
            assert await fetch(client, srv) == b"one"  # closed by the upstream
            resp = await get(client, srv)  # closed by us mid-body
            resp.close()
            await asyncio.wait_for(srv.peers[1].client_closed.wait(), 2)
            assert await fetch(client, srv) == b"pooled"  # pooled, then closed with the client
            await client.aclose()
            await asyncio.wait_for(srv.peers[2].client_closed.wait(), 2)
            await asyncio.sleep(0.01)  # the transports' connection_lost callbacks
        gc.collect()
        left = [type(o).__name__ for o in gc.garbage if isinstance(o, Conn)]
    finally:
        gc.set_debug(flags)
        gc.garbage.clear()
    assert left == []


def test_on_uvloop() -> None:
    """The same on uvloop, the loop Sluice serves on (its transports hold the protocol in C)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(test_closed_upstream_connections_leave_no_cycle_for_the_collector())
