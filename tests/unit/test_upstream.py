"""The upstream HTTP/1.1 client against a scripted TCP server on loopback: body framing, content codings,
keep-alive and the pool, timeouts, malformed and hostile replies. Every scenario also runs on uvloop.

The server reads a request and writes back exactly the bytes a test scripts (with pauses, waits on events,
a clean close or a reset), and counts the connections it accepted.
"""

from __future__ import annotations

import asyncio
import gzip
import inspect
import random
import socket
import struct
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import uvloop

from sluice.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from sluice.providers.base import Timeouts
from sluice.upstream import UpstreamClient, UpstreamResponse, retry_after_seconds

BOUND = 10.0                                           # no scenario may take longer than this
T = Timeouts(connect=2.0, first_byte=5.0, idle=5.0)    # generous: only the timeout tests use short ones


# -- the scripted server ---------------------------------------------------------------------------------

class _Mark:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


CLOSE = _Mark("CLOSE")   # close cleanly (FIN) and stop serving this connection
ABORT = _Mark("ABORT")   # reset the connection (RST) and stop serving it
EOF = _Mark("EOF")       # send nothing more; wait until the client closes the connection

Step = bytes | float | asyncio.Event | Callable[[], Awaitable[None]] | _Mark
Script = list[Step]


class Peer:
    """The server's side of one accepted connection."""

    def __init__(self, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.index = index
        self.reader = reader
        self.writer = writer
        self.client_closed = asyncio.Event()   # the client closed or reset the connection
        self.server_closed = asyncio.Event()   # a script closed it

    async def read_request(self) -> bytes | None:
        """One request's raw bytes (head and Content-Length body); None when the client closed."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            return head + (await self.reader.readexactly(length) if length else b"")
        except (asyncio.IncompleteReadError, ConnectionError):
            self.client_closed.set()
            return None

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def wait_client_close(self) -> None:
        with suppress(ConnectionError):
            while await self.reader.read(65536):
                pass
        self.client_closed.set()

    def reset(self) -> None:
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    async def run(self, script: Script) -> bool:
        """Play one reply; False when the connection is finished with."""
        for step in script:
            try:
                if isinstance(step, bytes):
                    await self.write(step)
                elif isinstance(step, float | int):
                    await asyncio.sleep(step)
                elif isinstance(step, asyncio.Event):
                    await step.wait()
                elif step is CLOSE:
                    self.writer.close()
                    self.server_closed.set()
                    return False
                elif step is ABORT:
                    self.reset()
                    self.server_closed.set()
                    return False
                elif step is EOF:
                    await self.wait_client_close()
                    return False
                else:
                    assert callable(step)
                    await step()
            except ConnectionError:
                self.client_closed.set()
                return False
        return True


class ScriptedServer:
    """Answers the n-th request it receives (on whichever connection) with the n-th script; a request
    beyond the scripts gets its connection closed. A custom `handler` takes over whole connections."""

    def __init__(self, scripts: list[Script], handler: Callable[[Peer], Awaitable[None]] | None = None) -> None:
        self.scripts = scripts
        self.handler = handler or self._serve
        self.peers: list[Peer] = []
        self.requests: list[bytes] = []
        self.request_seen = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepted = asyncio.Condition()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def accepted(self) -> int:
        return len(self.peers)

    def url(self, path: str = "/v1/chat/completions") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_connect, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # a task of our own: asyncio 3.11 logs an error when it has to cancel its callback's task
        peer = Peer(len(self.peers), reader, writer)
        self.peers.append(peer)
        task = asyncio.get_running_loop().create_task(self._handle(peer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, peer: Peer) -> None:
        async with self._accepted:
            self._accepted.notify_all()
        await self.handler(peer)

    async def wait_accepted(self, n: int) -> None:
        async with self._accepted:
            await self._accepted.wait_for(lambda: self.accepted >= n)

    async def _serve(self, peer: Peer) -> None:
        while True:
            request = await peer.read_request()
            if request is None:
                return
            self.requests.append(request)
            self.request_seen.set()
            script = self.scripts.pop(0) if self.scripts else [CLOSE]
            if not await peer.run(script):
                return

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for peer in self.peers:
            peer.writer.close()
            with suppress(ConnectionError, asyncio.CancelledError):
                await peer.writer.wait_closed()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()


@asynccontextmanager
async def upstream(*scripts: Script, handler: Callable[[Peer], Awaitable[None]] | None = None
                   ) -> AsyncIterator[tuple[ScriptedServer, UpstreamClient]]:
    """A scripted server and a client pool, both torn down after the block; the whole block is bounded."""
    async with asyncio.timeout(BOUND):
        srv = ScriptedServer(list(scripts), handler)
        await srv.start()
        client = UpstreamClient()
        try:
            yield srv, client
        finally:
            await client.aclose()
            await srv.stop()


# -- reply bytes -----------------------------------------------------------------------------------------

def head(status: int = 200, *headers: str, version: str = "1.1", reason: str = "OK") -> bytes:
    return f"HTTP/{version} {status} {reason}\r\n".encode() + b"".join(f"{h}\r\n".encode() for h in headers) + b"\r\n"


def reply(body: bytes = b"", *headers: str, status: int = 200) -> bytes:
    return head(status, f"content-length: {len(body)}", *headers) + body


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
CHUNKED = "transfer-encoding: chunked"


def cut(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def paced(data: bytes, size: int, pause: float) -> Script:
    """`data` written `size` bytes at a time with `pause` seconds between writes."""
    out: Script = []
    for piece in cut(data, size):
        out += [piece, pause]
    return out


async def get(client: UpstreamClient, srv: ScriptedServer, timeouts: Timeouts = T, *, method: str = "POST",
              path: str = "/v1/chat/completions", body: bytes | None = b"{}",
              headers: dict[str, str] | None = None) -> UpstreamResponse:
    return await client.request(method, srv.url(path), headers=headers or {"content-type": "application/json"},
                                body=body, timeouts=timeouts)


async def fetch(client: UpstreamClient, srv: ScriptedServer, timeouts: Timeouts = T) -> bytes:
    resp = await get(client, srv, timeouts)
    assert resp.status == 200
    return await resp.read()


def exactly(exc: pytest.ExceptionInfo[BaseException], kind: type[BaseException]) -> None:
    """UpstreamTimeout and UpstreamUnavailable are UpstreamErrors too: say which one was meant."""
    assert type(exc.value) is kind, f"{type(exc.value).__name__}: {exc.value}"


# -- body framing ----------------------------------------------------------------------------------------

async def test_content_length_body() -> None:
    async with upstream([reply(b'{"id":"x"}', "content-type: application/json")]) as (srv, client):
        resp = await get(client, srv)
        assert resp.status == 200
        assert resp.headers["content-type"] == "application/json"
        assert await resp.read() == b'{"id":"x"}'


async def test_content_length_body_in_pieces_across_the_head() -> None:
    raw = reply(b"0123456789" * 50, "x-a: 1")
    async with upstream(paced(raw, 7, 0.001)) as (srv, client):
        assert await fetch(client, srv) == b"0123456789" * 50


async def test_empty_bodies_are_empty() -> None:
    async with upstream([reply(b"")], [head(204)], [head(304)]) as (srv, client):
        for status in (200, 204, 304):
            resp = await get(client, srv)
            assert resp.status == status
            assert await resp.read() == b""
        assert srv.accepted == 1


async def test_chunked_body_is_yielded_as_it_arrives() -> None:
    events = [b"data: {\"n\":%d}\n\n" % i for i in range(30)]
    first_seen = asyncio.Event()
    finished = False

    async def mark_finished() -> None:
        nonlocal finished
        finished = True

    rest = b"".join(chunk(e) for e in events[1:]) + LAST_CHUNK
    script: Script = [head(200, CHUNKED, "content-type: text/event-stream") + chunk(events[0]), first_seen,
                      *paced(rest, 5, 0.002), mark_finished]
    async with upstream(script) as (srv, client):
        resp = await get(client, srv)
        pieces = resp.iter_chunks()
        got = b""
        while got != events[0]:   # the server sends nothing more until the client has the first event
            got += await anext(pieces)
        assert not finished
        first_seen.set()
        async for piece in pieces:
            got += piece
        assert got == b"".join(events)


async def test_chunked_body_with_extensions_and_trailers() -> None:
    body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n"
    async with upstream([head(200, CHUNKED) + body], [reply(b"next")]) as (srv, client):
        assert await fetch(client, srv) == b"hello world"
        assert await fetch(client, srv) == b"next"
        assert srv.accepted == 1


async def test_close_delimited_body_http11_connection_close() -> None:
    body = b"no length, no chunks: the end of the connection ends the body" * 20
    script: Script = [head(200, "connection: close"), *paced(body, 100, 0.002), CLOSE]
    async with upstream(script, [reply(b"second")]) as (srv, client):
        assert await fetch(client, srv) == body
        assert await fetch(client, srv) == b"second"
        assert srv.accepted == 2


async def test_close_delimited_body_http10() -> None:
    body = b"an HTTP/1.0 reply without a length"
    script: Script = [head(200, "content-type: text/plain", version="1.0"), body[:10], 0.01, body[10:], CLOSE]
    async with upstream(script, [reply(b"second")]) as (srv, client):
        assert await fetch(client, srv) == body
        assert await fetch(client, srv) == b"second"
        assert srv.accepted == 2


async def test_http10_reply_with_length_is_not_reused() -> None:
    async with upstream([head(200, "content-length: 3", version="1.0") + b"one"], [reply(b"two")]) as (srv, client):
        assert await fetch(client, srv) == b"one"
        assert await fetch(client, srv) == b"two"
        assert srv.accepted == 2


async def test_close_delimited_body_cut_by_a_reset_is_an_error() -> None:
    script: Script = [head(200, "connection: close") + b"partial", 0.05, ABORT]
    async with upstream(script) as (srv, client):
        resp = await get(client, srv)
        with pytest.raises(UpstreamError) as exc:
            await resp.read()
        exactly(exc, UpstreamError)


async def test_content_length_body_cut_short_is_an_error() -> None:
    async with upstream([head(200, "content-length: 100") + b"only this", CLOSE]) as (srv, client):
        resp = await get(client, srv)
        with pytest.raises(UpstreamError) as exc:
            await resp.read()
        exactly(exc, UpstreamError)


async def test_chunked_body_cut_short_is_an_error() -> None:
    async with upstream([head(200, CHUNKED) + chunk(b"hello"), 0.01, CLOSE]) as (srv, client):
        resp = await get(client, srv)
        got = b""
        with pytest.raises(UpstreamError) as exc:
            async for piece in resp.iter_chunks():
                got += piece
        exactly(exc, UpstreamError)
        assert got == b"hello"


async def test_chunked_is_recognised_whatever_its_case() -> None:
    async with upstream([head(200, "Transfer-Encoding: Chunked") + chunk(b"hello") + LAST_CHUNK]) as (srv, client):
        assert await fetch(client, srv) == b"hello"


async def test_chunked_body_cut_short_is_an_error_whatever_its_case() -> None:
    async with upstream([head(200, "Transfer-Encoding: Chunked") + chunk(b"hello"), 0.01, CLOSE]) as (srv, client):
        resp = await get(client, srv)
        with pytest.raises(UpstreamError) as exc:
            await resp.read()
        exactly(exc, UpstreamError)


async def test_bad_chunk_size_mid_body_is_an_error_after_the_good_part() -> None:
    async with upstream([head(200, CHUNKED) + chunk(b"good"), 0.01, b"zz\r\nbad\r\n", EOF]) as (srv, client):
        resp = await get(client, srv)
        got = b""
        with pytest.raises(UpstreamError) as exc:
            async for piece in resp.iter_chunks():
                got += piece
        exactly(exc, UpstreamError)
        assert got == b"good"


# -- content codings -------------------------------------------------------------------------------------

PLAIN = b"".join(b'data: {"choices":[{"delta":{"content":"token %d"}}]}\n\n' % i for i in range(400))


async def test_gzip_body_is_decoded() -> None:
    packed = gzip.compress(PLAIN)
    script: Script = [head(200, CHUNKED, "content-encoding: gzip"),
                      *paced(b"".join(chunk(p) for p in cut(packed, 97)) + LAST_CHUNK, 301, 0.001)]
    async with upstream(script, [reply(gzip.compress(b"again"), "Content-Encoding: GZIP")]) as (srv, client):
        resp = await get(client, srv)
        assert resp.headers["content-encoding"] == "gzip"
        assert await resp.read() == PLAIN
        assert await fetch(client, srv) == b"again"
        assert srv.accepted == 1


async def test_deflate_body_is_decoded() -> None:
    packed = zlib.compress(PLAIN)
    script: Script = [head(200, f"content-length: {len(packed)}", "content-encoding: deflate"),
                      *paced(packed, 50, 0.001)]
    async with upstream(script) as (srv, client):
        assert await fetch(client, srv) == PLAIN


async def test_gzip_body_is_decoded_incrementally() -> None:
    comp = zlib.compressobj(wbits=31)
    first = comp.compress(b"first event\n\n") + comp.flush(zlib.Z_SYNC_FLUSH)
    rest = comp.compress(b"second event\n\n") + comp.flush()
    first_seen = asyncio.Event()
    script: Script = [head(200, CHUNKED, "content-encoding: gzip") + chunk(first), first_seen,
                      chunk(rest) + LAST_CHUNK]
    async with upstream(script) as (srv, client):
        resp = await get(client, srv)
        pieces = resp.iter_chunks()
        got = b""
        while got != b"first event\n\n":
            got += await anext(pieces)
        first_seen.set()
        async for piece in pieces:
            got += piece
        assert got == b"first event\n\nsecond event\n\n"


async def test_body_that_does_not_decompress_is_an_error() -> None:
    async with upstream([reply(b"this is not gzip at all", "content-encoding: gzip")]) as (srv, client):
        resp = await get(client, srv)
        with pytest.raises(UpstreamError) as exc:
            await resp.read()
        exactly(exc, UpstreamError)
        assert "decompress" in str(exc.value)


async def test_read_limit_bounds_memory_for_a_compressed_body() -> None:
    bomb = gzip.compress(bytes(48 << 20), 9)   # ~48 KB on the wire, 48 MB decoded
    async with upstream([reply(bomb, "content-encoding: gzip")]) as (srv, client):
        resp = await get(client, srv)
        tracemalloc.start()
        try:
            with pytest.raises(UpstreamError):
                await resp.read(limit=1 << 20)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 16 << 20, f"peak {peak >> 20} MB to refuse a body over 1 MB"


# -- keep-alive and the pool -----------------------------------------------------------------------------

async def test_keep_alive_reuses_one_connection() -> None:
    async with upstream([reply(b"one")], [head(200, CHUNKED) + chunk(b"two") + LAST_CHUNK],
                        [reply(b"three")]) as (srv, client):
        assert [await fetch(client, srv) for _ in range(3)] == [b"one", b"two", b"three"]
        assert srv.accepted == 1
        assert len(srv.requests) == 3


async def test_no_reuse_after_connection_close() -> None:
    async with upstream([reply(b"one", "Connection: close")], [reply(b"two")]) as (srv, client):
        assert await fetch(client, srv) == b"one"
        assert await fetch(client, srv) == b"two"
        assert srv.accepted == 2
        await asyncio.wait_for(srv.peers[0].client_closed.wait(), 2)


async def test_no_reuse_after_close_mid_body() -> None:
    script: Script = [head(200, "content-length: 100000") + b"x" * 1000, EOF]
    async with upstream(script, [reply(b"fresh")]) as (srv, client):
        resp = await get(client, srv)
        pieces = resp.iter_chunks()
        assert (await anext(pieces)).startswith(b"x")
        resp.close()
        await pieces.aclose()
        await asyncio.wait_for(srv.peers[0].client_closed.wait(), 2)   # dropped, not pooled
        assert await fetch(client, srv) == b"fresh"
        assert srv.accepted == 2


async def test_no_reuse_when_closed_before_the_body_was_read() -> None:
    async with upstream([reply(b"unread body")], [reply(b"fresh")]) as (srv, client):
        resp = await get(client, srv)
        resp.close()
        resp.close()   # idempotent
        assert await resp.read() == b""
        assert await fetch(client, srv) == b"fresh"
        assert srv.accepted == 2


async def test_pooled_connection_closed_by_the_server_while_idle_is_replaced() -> None:
    async with upstream([reply(b"one"), 0.05, CLOSE], [reply(b"two")]) as (srv, client):
        assert await fetch(client, srv) == b"one"
        await asyncio.wait_for(srv.peers[0].server_closed.wait(), 2)
        await asyncio.sleep(0.02)   # let the client see the FIN
        assert await fetch(client, srv) == b"two"
        assert srv.accepted == 2


async def test_pooled_connection_closed_when_the_request_arrives_is_retried_on_a_fresh_one() -> None:
    # the race with the server's keep-alive timeout: it reads our request and closes without a reply
    async with upstream([reply(b"one")], [CLOSE], [reply(b"two")]) as (srv, client):
        assert await fetch(client, srv) == b"one"
        assert await fetch(client, srv) == b"two"
        assert srv.accepted == 2
        assert len(srv.requests) == 3


async def test_retry_after_a_stale_pooled_connection_uses_a_fresh_one() -> None:
    both = asyncio.Event()

    async def handler(peer: Peer) -> None:
        if peer.index >= 2:
            while await peer.read_request() is not None:
                await peer.write(reply(b"fresh"))
            return
        if await peer.read_request() is None:
            return
        if peer.index == 1:
            both.set()
        await both.wait()
        await peer.write(reply(b"first"))
        await peer.read_request()
        peer.writer.close()   # both hit their keep-alive timeout: the next request on either is dropped

    async with upstream(handler=handler) as (srv, client):
        assert await asyncio.gather(fetch(client, srv), fetch(client, srv)) == [b"first", b"first"]
        assert await fetch(client, srv) == b"fresh"


async def test_unsolicited_bytes_on_an_idle_connection_are_not_the_next_reply() -> None:
    sent = asyncio.Event()

    async def handler(peer: Peer) -> None:
        await peer.read_request()
        await peer.write(reply(b"first"))
        await peer.write(reply(b"", status=408))   # e.g. a proxy's 408 on an idle keep-alive connection
        sent.set()
        while await peer.read_request() is not None:
            await peer.write(reply(b"second"))

    async with upstream(handler=handler) as (srv, client):
        assert await fetch(client, srv) == b"first"
        await sent.wait()
        await asyncio.sleep(0.02)
        resp = await get(client, srv)
        # not the stale 408: the connection that carried it is dropped and a fresh one answers
        assert (resp.status, await resp.read()) == (200, b"first")
        assert srv.accepted == 2


async def test_concurrent_requests_get_separate_connections() -> None:
    async def both_connected() -> None:
        await srv.wait_accepted(2)

    scripts: list[Script] = [[both_connected, reply(b"a")], [both_connected, reply(b"b")]]
    async with upstream(*scripts, [reply(b"c")], [reply(b"d")]) as (srv, client):
        # each reply waits until both connections exist: one connection for both would never finish
        assert sorted(await asyncio.gather(fetch(client, srv), fetch(client, srv))) == [b"a", b"b"]
        assert srv.accepted == 2
        assert sorted([await fetch(client, srv), await fetch(client, srv)]) == [b"c", b"d"]
        assert srv.accepted == 2   # both went back to the pool


async def test_aclose_closes_idle_connections() -> None:
    async def both_connected() -> None:
        await srv.wait_accepted(2)

    async with upstream([both_connected, reply(b"a")], [both_connected, reply(b"b")]) as (srv, client):
        await asyncio.gather(fetch(client, srv), fetch(client, srv))
        assert not any(p.client_closed.is_set() for p in srv.peers)
        await client.aclose()
        await asyncio.wait_for(asyncio.gather(*(p.client_closed.wait() for p in srv.peers)), 2)


async def test_a_reply_finished_after_aclose_is_not_pooled() -> None:
    async with upstream([reply(b"late")]) as (srv, client):
        resp = await get(client, srv)
        await client.aclose()
        assert await resp.read() == b"late"
        await asyncio.wait_for(srv.peers[0].client_closed.wait(), 2)


# -- the request on the wire -----------------------------------------------------------------------------

async def test_request_bytes() -> None:
    async with upstream([reply(b"1")], [reply(b"2")], [reply(b"3")]) as (srv, client):
        resp = await client.request("POST", srv.url("/v1/chat/completions?api-version=2"),
                                    headers={"authorization": "Bearer k", "x-trace": "é"},
                                    body=b'{"model":"m"}', timeouts=T)
        await resp.read()
        resp = await client.request("GET", f"http://127.0.0.1:{srv.port}", headers={}, body=None, timeouts=T)
        await resp.read()
        resp = await client.request("POST", srv.url("/empty"), headers={}, body=None, timeouts=T)
        await resp.read()
        host = f"host: 127.0.0.1:{srv.port}\r\n".encode()
        assert srv.requests[0] == (b"POST /v1/chat/completions?api-version=2 HTTP/1.1\r\n" + host +
                                   b"authorization: Bearer k\r\nx-trace: \xe9\r\ncontent-length: 13\r\n\r\n"
                                   b'{"model":"m"}')
        assert srv.requests[1] == b"GET / HTTP/1.1\r\n" + host + b"\r\n"
        assert srv.requests[2] == b"POST /empty HTTP/1.1\r\n" + host + b"content-length: 0\r\n\r\n"


async def test_unsupported_url_is_an_error() -> None:
    client = UpstreamClient()
    for url in ("ftp://example.com/x", "http:///nohost", "not a url"):
        with pytest.raises(UpstreamError) as exc:
            await client.request("GET", url, headers={}, body=None, timeouts=T)
        exactly(exc, UpstreamError)
    await client.aclose()


# -- connection failures and timeouts --------------------------------------------------------------------

async def test_connection_refused_is_unavailable() -> None:
    with socket.socket() as held:   # bound, never listening: connecting to it is refused
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        client = UpstreamClient()
        async with asyncio.timeout(BOUND):
            with pytest.raises(UpstreamUnavailable) as exc:
                await client.request("POST", f"http://127.0.0.1:{port}/v1", headers={}, body=b"{}", timeouts=T)
        exactly(exc, UpstreamUnavailable)
        await client.aclose()


async def test_closed_without_a_reply_is_unavailable_and_not_retried() -> None:
    async with upstream([CLOSE]) as (srv, client):
        with pytest.raises(UpstreamUnavailable) as exc:
            await get(client, srv)
        exactly(exc, UpstreamUnavailable)
        assert srv.accepted == 1


async def test_reset_after_part_of_the_head_is_an_error() -> None:
    async with upstream([b"HTTP/1.1 200 OK\r\ncontent-le", 0.05, CLOSE]) as (srv, client):
        with pytest.raises(UpstreamError) as exc:
            await get(client, srv)
        exactly(exc, UpstreamError)


async def test_first_byte_timeout() -> None:
    loop = asyncio.get_running_loop()
    async with upstream([EOF], [reply(b"next")]) as (srv, client):
        t0 = loop.time()
        with pytest.raises(UpstreamTimeout):
            await get(client, srv, Timeouts(connect=2, first_byte=0.2, idle=5))
        assert 0.15 <= loop.time() - t0 < 2.0
        await asyncio.wait_for(srv.peers[0].client_closed.wait(), 2)   # the late reply can never be misread
        assert await fetch(client, srv) == b"next"
        assert srv.accepted == 2


async def test_idle_timeout_mid_body() -> None:
    loop = asyncio.get_running_loop()
    async with upstream([head(200, CHUNKED) + chunk(b"first"), EOF]) as (srv, client):
        resp = await get(client, srv, Timeouts(connect=2, first_byte=5, idle=0.2))
        pieces = resp.iter_chunks()
        assert await anext(pieces) == b"first"
        t0 = loop.time()
        with pytest.raises(UpstreamTimeout) as exc:
            await anext(pieces)
        assert 0.15 <= loop.time() - t0 < 2.0
        assert "0.2s" in str(exc.value)
        await asyncio.wait_for(srv.peers[0].client_closed.wait(), 2)


async def test_idle_timeout_before_any_body() -> None:
    async with upstream([head(200, "content-length: 10"), EOF]) as (srv, client):
        resp = await get(client, srv, Timeouts(connect=2, first_byte=5, idle=0.2))
        with pytest.raises(UpstreamTimeout):
            await resp.read()


async def test_a_stream_that_outlasts_idle_in_short_gaps_does_not_time_out() -> None:
    # one watchdog timer serves many waits: armed for an earlier wait, it must re-arm, not fire
    events = [chunk(b"event %d\n" % i) for i in range(24)]
    script: Script = [head(200, CHUNKED)]
    for e in events:
        script += [e, 0.05]   # 1.2 s in all, every gap far below the idle timeout
    script.append(LAST_CHUNK)
    async with upstream(script) as (srv, client):
        resp = await get(client, srv, Timeouts(connect=2, first_byte=5, idle=0.6))
        body = b"".join([part async for part in resp.iter_chunks()])  # raw reads: idle bounds each gap
        assert body == b"".join(b"event %d\n" % i for i in range(24))


async def test_total_timeout_while_the_body_keeps_coming() -> None:
    loop = asyncio.get_running_loop()

    async def dribble() -> None:
        peer = srv.peers[0]
        for _ in range(400):   # a chunk every 20 ms: the idle timeout never fires
            if peer.writer.is_closing() or peer.reader.at_eof():
                return
            await peer.write(chunk(b"."))
            await asyncio.sleep(0.02)

    async with upstream([head(200, CHUNKED), dribble]) as (srv, client):
        t0 = loop.time()
        resp = await get(client, srv, Timeouts(connect=2, first_byte=5, idle=3, total=0.5))
        got = b""
        with pytest.raises(UpstreamTimeout) as exc:
            async for piece in resp.iter_chunks():
                got += piece
        assert 0.45 <= loop.time() - t0 < 2.5
        assert "total" in str(exc.value)
        assert got.startswith(b"...")


async def test_total_timeout_bounds_the_wait_for_the_head() -> None:
    loop = asyncio.get_running_loop()
    async with upstream([EOF]) as (srv, client):
        t0 = loop.time()
        with pytest.raises(UpstreamTimeout):
            await get(client, srv, Timeouts(connect=2, first_byte=5, idle=5, total=0.3))
        assert 0.25 <= loop.time() - t0 < 2.0


async def test_first_byte_longer_than_idle_lets_a_late_head_through() -> None:
    body = b"worth the wait"
    script: Script = [1.0, head(200, CHUNKED) + chunk(body[:5]), chunk(body[5:]) + LAST_CHUNK]
    async with upstream(script, [reply(b"again")]) as (srv, client):
        assert await fetch(client, srv, Timeouts(connect=2, first_byte=5, idle=0.3)) == body
        # the connection (and its timer) is reused: a quick reply with the same idle timeout is fine
        assert await fetch(client, srv, Timeouts(connect=2, first_byte=5, idle=0.3)) == b"again"
        assert srv.accepted == 1


async def test_cancel_while_waiting_for_the_head_drops_the_connection() -> None:
    async with upstream([EOF], [reply(b"next")]) as (srv, client):
        task = asyncio.create_task(get(client, srv))
        await srv.request_seen.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(srv.peers[0].client_closed.wait(), 2)
        assert await fetch(client, srv) == b"next"
        assert srv.accepted == 2


# -- the head --------------------------------------------------------------------------------------------

async def test_malformed_status_line_is_an_error() -> None:
    for garbage in (b"HTTX/1.1 200 OK\r\n\r\n", b"HTTP/1.1 2x0 OK\r\ncontent-length: 0\r\n\r\n",
                    b"<html>not http</html>\r\n\r\n"):
        async with upstream([garbage, EOF]) as (srv, client):
            with pytest.raises(UpstreamError) as exc:
                await get(client, srv)
            exactly(exc, UpstreamError)
            await asyncio.wait_for(srv.peers[0].client_closed.wait(), 2)


async def test_headers_over_64k_are_an_error() -> None:
    many = [f"x-h{i}: {'v' * 1000}" for i in range(70)]
    async with upstream([head(200, *many, "content-length: 0"), EOF]) as (srv, client):
        with pytest.raises(UpstreamError) as exc:
            await get(client, srv)
        exactly(exc, UpstreamError)


async def test_headers_just_under_64k_are_fine() -> None:
    many = [f"x-h{i}: {'v' * 1000}" for i in range(60)]
    async with upstream([head(200, *many, "content-length: 2") + b"ok"]) as (srv, client):
        resp = await get(client, srv)
        assert resp.headers["x-h59"] == "v" * 1000
        assert await resp.read() == b"ok"


async def test_an_endless_header_is_an_error_not_a_timeout() -> None:
    script: Script = [b"HTTP/1.1 200 OK\r\nx-big: ", *([b"a" * 8192] * 16), EOF]
    async with upstream(script) as (srv, client):
        with pytest.raises(UpstreamError) as exc:
            await get(client, srv, Timeouts(connect=2, first_byte=1.0, idle=5))
        exactly(exc, UpstreamError)


async def test_a_status_line_over_64k_is_an_error() -> None:
    raw = b"HTTP/1.1 200 " + b"O" * (100 << 10) + b"\r\ncontent-length: 0\r\n\r\n"
    async with upstream([raw, EOF]) as (srv, client):
        with pytest.raises(UpstreamError) as exc:
            await get(client, srv)
        exactly(exc, UpstreamError)


async def test_interim_100_continue_before_the_real_reply() -> None:
    script: Script = [head(100, "x-interim: yes", reason="Continue"), 0.02,
                      head(103, "link: </a.css>", reason="Early Hints"), 0.02, reply(b"real", "x-final: 1")]
    async with upstream(script, [reply(b"again")]) as (srv, client):
        resp = await get(client, srv)
        assert resp.status == 200
        assert resp.headers.get("x-final") == "1"
        assert "x-interim" not in resp.headers and "link" not in resp.headers
        assert await resp.read() == b"real"
        assert await fetch(client, srv) == b"again"
        assert srv.accepted == 1


async def test_header_names_lower_cased_and_duplicates_joined() -> None:
    raw = head(429, "Content-Type: application/json", "X-Dup: a", "x-dup: b", "X-DUP: c", "Retry-After: 7",
               "content-length: 2", reason="Too Many Requests") + b"{}"
    async with upstream([raw]) as (srv, client):
        resp = await get(client, srv)
        assert resp.status == 429
        assert dict(resp.headers) == {"content-type": "application/json", "x-dup": "a, b, c",
                                      "retry-after": "7", "content-length": "2"}
        assert retry_after_seconds(resp.headers) == 7.0
        assert await resp.read() == b"{}"


async def test_headers_survive_the_connection_going_back_to_the_pool() -> None:
    async with upstream([reply(b"one", "x-n: 1")], [reply(b"two", "x-n: 2")]) as (srv, client):
        first = await get(client, srv)
        assert await first.read() == b"one"
        second = await get(client, srv)
        assert await second.read() == b"two"
        assert (first.status, first.headers["x-n"], second.headers["x-n"]) == (200, "1", "2")
        assert srv.accepted == 1


async def test_head_request_reply_has_no_body() -> None:
    async with upstream([head(200, "content-length: 5")]) as (srv, client):
        resp = await get(client, srv, Timeouts(connect=2, first_byte=5, idle=0.5), method="HEAD", body=None)
        assert await resp.read() == b""


# -- bodies: size, backpressure --------------------------------------------------------------------------

async def test_large_body_read_slowly_arrives_intact() -> None:
    body = random.Random(7).randbytes(2 << 20)
    async with upstream([reply(body)]) as (srv, client):
        resp = await get(client, srv)
        await asyncio.sleep(0.1)   # not reading: far more than the client buffers arrives meanwhile
        got = bytearray()
        async for piece in resp.iter_chunks():
            got += piece
            await asyncio.sleep(0.002)
        assert bytes(got) == body


async def test_a_reader_that_stops_stops_the_socket() -> None:
    # big enough that the kernel's socket buffers cannot hold what the client does not take
    body = random.Random(8).randbytes(16 << 20)
    raw = reply(body)
    async with upstream([raw]) as (srv, client):
        resp = await get(client, srv)
        await asyncio.sleep(0.3)
        unsent = srv.peers[0].writer.transport.get_write_buffer_size()
        assert unsent > 0, "the client kept reading the socket with nobody taking the body"
        got = bytearray()
        async for piece in resp.iter_chunks():
            got += piece
        assert bytes(got) == body
        assert srv.peers[0].writer.transport.get_write_buffer_size() == 0


async def test_read_limit() -> None:
    body = b"z" * 1000
    async with upstream([reply(body)], [head(200, CHUNKED) + chunk(body) + chunk(b"!"), EOF],
                        [reply(b"ok")]) as (srv, client):
        assert await (await get(client, srv)).read(limit=1000) == body
        resp = await get(client, srv)
        with pytest.raises(UpstreamError) as exc:
            await resp.read(limit=1000)
        exactly(exc, UpstreamError)
        assert "larger than the limit of 1000 bytes" in str(exc.value)
        assert exc.value.code == "upstream_reply_too_large" and exc.value.status == 502 and not exc.value.retryable
        assert await resp.read() == b""   # closed
        await asyncio.wait_for(srv.peers[0].client_closed.wait(), 2)   # the unfinished reply is dropped
        assert await fetch(client, srv) == b"ok"


async def test_read_error_body_swallows_failures() -> None:
    async with upstream([reply(b'{"error":{}}', status=500)], [head(502, "content-length: 50") + b"cut", CLOSE],
                        ) as (srv, client):
        resp = await get(client, srv)
        assert resp.status == 500
        assert await resp.read_error_body() == b'{"error":{}}'
        resp = await get(client, srv)
        assert await resp.read_error_body() == b""


# -- retry-after -----------------------------------------------------------------------------------------

def test_retry_after_seconds() -> None:
    assert retry_after_seconds({}) is None
    assert retry_after_seconds({"retry-after": "12"}) == 12.0
    assert retry_after_seconds({"retry-after": "1.5"}) == 1.5
    assert retry_after_seconds({"retry-after": "-3"}) == 0.0
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_seconds({"retry-after-ms": "soon", "retry-after": "9"}) == 9.0
    assert retry_after_seconds({"retry-after": "whenever"}) is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    assert 100 < (retry_after_seconds({"retry-after": later}) or 0) <= 120
    earlier = format_datetime(datetime.now(UTC) - timedelta(seconds=120), usegmt=True)
    assert retry_after_seconds({"retry-after": earlier}) == 0.0


# -- the same scenarios on uvloop, the loop Sluice serves on ---------------------------------------------

def _scenarios() -> Iterator[object]:
    for name, fn in list(globals().items()):
        if name.startswith("test_") and inspect.iscoroutinefunction(fn):
            yield pytest.param(fn, id=name.removeprefix("test_"), marks=getattr(fn, "pytestmark", []))


@pytest.mark.parametrize("scenario", list(_scenarios()))
def test_on_uvloop(scenario: Callable[[], Awaitable[None]]) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())  # type: ignore[arg-type]
