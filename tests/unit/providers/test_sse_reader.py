"""EventReader over a scripted upstream: pings and comments are not progress, complete events are."""

from __future__ import annotations

import asyncio

import pytest

from sluice.errors import UpstreamError, UpstreamTimeout
from sluice.providers.sse_reader import EventReader
from sluice.upstream import Timeouts, UpstreamLimits
from tests.unit.test_upstream import CHUNKED, Script, ScriptedServer, chunk, get, head, upstream

PING = b'event: ping\ndata: {"type": "ping"}\n\n'
DELTA = b'event: content_block_delta\ndata: {"type": "content_block_delta"}\n\n'


def forever(data: bytes, every: float) -> tuple[Script, list[ScriptedServer]]:
    """A script that sends `data` as a chunk every `every` s until the client leaves; fill the list with
    the server once it runs (the step finds its connection there)."""
    box: list[ScriptedServer] = []

    async def send() -> None:
        peer = box[0].peers[-1]
        while not (peer.writer.is_closing() or peer.reader.at_eof()):
            await peer.write(chunk(data))
            await asyncio.sleep(every)
    return [head(200, CHUNKED), send], box


async def read_all(reader: EventReader) -> int:
    n = 0
    async for events in reader.batches():
        n += len(events)
    return n


@pytest.mark.parametrize("noise", [PING, b": keep-alive\n\n", b"x"])
async def test_pings_comments_and_stray_bytes_do_not_reset_idle(noise: bytes) -> None:
    script, box = forever(noise, 0.02)
    async with upstream(script) as (srv, client):
        box.append(srv)
        resp = await get(client, srv, Timeouts(connect=2, first_byte=5, idle=0.3, total=10))  # no hang if broken
        with pytest.raises(UpstreamTimeout, match="no complete event"):
            await read_all(EventReader(resp))


async def test_complete_events_are_progress_until_the_total_deadline() -> None:
    script, box = forever(DELTA, 0.02)
    async with upstream(script) as (srv, client):
        box.append(srv)
        resp = await get(client, srv, Timeouts(connect=2, first_byte=5, idle=0.3, total=1.0))
        reader = EventReader(resp)
        got = 0
        with pytest.raises(UpstreamTimeout, match="total timeout"):
            async for events in reader.batches():
                got += len(events)
        assert got > 1


async def test_an_oversized_event_is_an_upstream_error_naming_the_limit() -> None:
    script, box = forever(b"data: " + b"y" * 2000 + b"\n", 0.0)
    async with upstream(script) as (srv, client):
        box.append(srv)
        client.limits = UpstreamLimits(max_line=4096, max_event=8192)
        resp = await get(client, srv)
        with pytest.raises(UpstreamError, match="larger than 8192") as exc:
            await read_all(EventReader(resp))
        assert exc.value.code == "upstream_event_too_large"
