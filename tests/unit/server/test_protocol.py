"""Sluice's HTTP/1.1 server protocol on real loopback sockets, under uvicorn's Server as `sluice serve` runs
it: pipelining in order, backpressure from a client that does not read, the disconnect hook (no watcher
task), Expect: 100-continue, HEAD, chunked request bodies, HTTP/1.0, and apps that fail."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn

from sluice.http.disconnect import CLIENT_GONE, DisconnectWatch
from sluice.server.protocol import HttpProtocol
from tests.e2e.rawhttp import RawConn

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@asynccontextmanager
async def serve(app: Any, http: Any = HttpProtocol) -> AsyncIterator[tuple[int, uvicorn.Server]]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    # a bounded shutdown: a test that fails with a request still open ends instead of waiting for it
    config = uvicorn.Config(app, lifespan="off", log_level="warning", http=http, loop="none",
                            timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            assert not task.done(), task.result()
            await asyncio.sleep(0.01)
        yield sock.getsockname()[1], server
    finally:
        server.should_exit = True
        await task
        sock.close()


async def read_body(receive: Receive) -> bytes:
    parts, more = [], True
    while more:
        msg = await receive()
        assert msg["type"] == "http.request", msg
        parts.append(msg["body"])
        more = msg["more_body"]
    return b"".join(parts)


async def reply(send: Send, body: bytes, status: int = 200) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    body = await read_body(receive)
    await reply(send, scope["method"].encode() + b" " + scope["path"].encode() + b" " + body)


async def until(cond: Callable[[], bool]) -> None:
    """Poll state the server does not signal (its transport's flags, its connection set), up to 10 s."""
    async with asyncio.timeout(10):
        while not cond():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def test_pipelined_requests_are_answered_in_order_one_at_a_time() -> None:
    started: list[str] = []
    release = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        started.append(scope["path"])
        if scope["path"] == "/a":
            await release.wait()
        await echo(scope, receive, send)

    async with serve(app) as (port, _):
        conn = await RawConn.open(port)
        conn.writer.write(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
                          b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                          b"GET /c?q=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            await until(lambda: bool(started))
            await asyncio.sleep(0.05)  # /b and /c are parsed by now, and must still wait for /a
            assert started == ["/a"]
            release.set()
            bodies = []
            for _ in range(3):
                head = await conn.head()
                assert head.status == 200
                bodies.append(await conn.body(head))
            assert bodies == [b"GET /a ", b"POST /b hello", b"GET /c "]
            assert started == ["/a", "/b", "/c"]
        finally:
            release.set()
            conn.abort()


async def test_a_client_that_does_not_read_holds_the_app_instead_of_growing_the_buffer() -> None:
    chunk = b"x" * (256 << 10)
    total = 256  # 64 MiB in all
    sent: list[int] = []   # the transport's write buffer after each send
    done = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)
        proto = next(iter(server.server_state.connections))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for _ in range(total):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            sent.append(proto.transport.get_write_buffer_size())
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        done.set()

    async with serve(app) as (port, server):
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 10)
        raw.setblocking(False)
        await asyncio.get_running_loop().sock_connect(raw, ("127.0.0.1", port))
        r, w = await asyncio.open_connection(sock=raw)
        conn = RawConn(r, w)
        try:
            await conn.send("GET", "/stream")
            proto = await _the_connection(server)
            await until(lambda: proto.write_paused or done.is_set())
            await asyncio.sleep(0.05)  # the app stays held for as long as the client does not read
            assert len(sent) < total // 4
            assert max(sent) <= (256 << 10) + (64 << 10)  # one chunk over the transport's high-water mark at most
            head = await conn.head()
            got = await conn.body(head)
            assert len(got) == len(chunk) * total and done.is_set()
            assert max(sent) <= (256 << 10) + (64 << 10)
        finally:
            conn.abort()  # on a failure too: a server holding unread megabytes would wait for this client


async def _the_connection(server: uvicorn.Server) -> HttpProtocol:
    await until(lambda: len(server.server_state.connections) == 1)
    proto = next(iter(server.server_state.connections))
    assert isinstance(proto, HttpProtocol)
    return proto


def _watcher_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if getattr(t.get_coro(), "__qualname__", "") == "DisconnectWatch._watch"]


@pytest.mark.parametrize("http", [HttpProtocol, "httptools"])
async def test_a_disconnect_cancels_the_request_with_client_gone(http: Any) -> None:
    """Under Sluice's protocol the watch is a callback (no task); under another ASGI server a task."""
    waiting = asyncio.Event()
    causes: list[str | None] = []
    watchers: list[int] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)
        watch = DisconnectWatch(receive, None, scope)
        await asyncio.sleep(0)
        watchers.append(len(_watcher_tasks()))
        try:
            waiting.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError as exc:
            causes.append(watch.cause(exc))
        finally:
            watch.stop()

    async with serve(app, http) as (port, _):
        conn = await RawConn.open(port)
        await conn.send("POST", "/v1/chat/completions", body=b"{}")
        await waiting.wait()
        conn.abort()
        await until(lambda: bool(causes))
    assert causes == [CLIENT_GONE]
    assert watchers == ([0] if http is HttpProtocol else [1])


async def test_a_disconnect_before_the_watch_is_registered_still_cancels() -> None:
    causes: list[str | None] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)
        assert (await receive())["type"] == "http.disconnect"  # the client has gone by now
        watch = DisconnectWatch(receive, None, scope)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError as exc:
            causes.append(watch.cause(exc))
        finally:
            watch.stop()

    async with serve(app) as (port, _):
        conn = await RawConn.open(port)
        await conn.send("POST", "/x", body=b"{}")
        conn.abort()
        await until(lambda: bool(causes))
    assert causes == [CLIENT_GONE]


async def test_expect_100_continue_is_answered_when_the_app_reads() -> None:
    async with serve(echo) as (port, _):
        conn = await RawConn.open(port)
        conn.writer.write(b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        interim = await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), 10)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        conn.writer.write(b"ping")
        head = await conn.head()
        assert head.status == 200 and await conn.body(head) == b"POST /e ping"
        conn.close()


async def test_head_sends_the_length_but_no_body_and_the_connection_goes_on() -> None:
    async with serve(echo) as (port, _):
        conn = await RawConn.open(port)
        await conn.send("HEAD", "/h")
        head = await conn.head()
        assert head.status == 200 and head.get("content-length") == str(len(b"HEAD /h "))
        await conn.send("GET", "/g")
        head = await conn.head()  # nothing of a body came in between
        assert await conn.body(head) == b"GET /g "
        conn.close()


async def test_a_chunked_request_body_is_reassembled() -> None:
    async with serve(echo) as (port, _):
        conn = await RawConn.open(port)
        conn.writer.write(b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
        head = await conn.head()
        assert await conn.body(head) == b"POST /c abcdefg"
        conn.close()


async def test_http_1_0_gets_a_body_ended_by_the_close_and_connection_close_is_honoured() -> None:
    async def stream(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"one ", b"two"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async with serve(stream) as (port, _):
        conn = await RawConn.open(port)
        conn.writer.write(b"GET /s HTTP/1.0\r\n\r\n")
        data = await asyncio.wait_for(conn.reader.read(), 10)  # until the server closes
        head, _, body = data.partition(b"\r\n\r\n")
        assert b"transfer-encoding" not in head.lower() and b"connection: close" in head
        assert body == b"one two"
        conn.close()
        conn = await RawConn.open(port)
        await conn.send("GET", "/s", headers={"Connection": "close"})
        head2 = await conn.head()
        assert head2.get("connection") == "close" and await conn.chunks() == [b"one ", b"two"]
        assert await conn.eof()
        conn.close()


async def test_an_app_that_fails_gets_a_500_before_its_head_and_a_cut_after() -> None:
    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/late":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise ValueError("boom")

    async with serve(failing) as (port, _):
        conn = await RawConn.open(port)
        await conn.send("GET", "/early")
        head = await conn.head()
        assert head.status == 500 and head.get("connection") == "close"
        assert await conn.body(head) == b"Internal Server Error"
        conn.close()
        conn = await RawConn.open(port)
        await conn.send("GET", "/late")
        assert (await conn.head()).status == 200
        assert await conn.chunk() == b"partial"
        with pytest.raises(asyncio.IncompleteReadError):
            await conn.chunk()  # no terminating chunk: the client sees the cut
        conn.close()


@pytest.mark.parametrize("bad", [(b"x-a", b"1\r\nx-injected: 1"), (b"x-a", b"1\nx"), (b"x-a: b", b"1"),
                                 (b"x-a\r\nx-injected", b"1")])
async def test_a_response_header_that_would_split_the_head_is_never_written(bad: tuple[bytes, bytes]) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)
        if scope["path"] == "/bad":
            await send({"type": "http.response.start", "status": 200, "headers": [bad]})
        else:  # framing headers are found whatever their case
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"Content-Length", b"2"), (b"X-Fine", b"a: b")]})
        await send({"type": "http.response.body", "body": b"ok"})

    async with serve(app) as (port, _):
        for _ in range(2):  # a bad name is refused every time, not remembered as checked
            conn = await RawConn.open(port)
            await conn.send("GET", "/bad")
            with pytest.raises(asyncio.IncompleteReadError):
                await conn.head()  # the app failed after starting: the connection is cut, nothing written
            conn.close()
        conn = await RawConn.open(port)
        await conn.send("GET", "/good")
        head = await conn.head()
        assert head.get("content-length") == "2" and head.get("transfer-encoding") is None
        assert head.get("x-fine") == "a: b" and await conn.body(head) == b"ok"
        conn.close()
