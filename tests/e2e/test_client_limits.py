"""Clients that attack the server side (issue 10, item 5), on raw sockets against a real `sluice serve`:
huge header lines, header floods, silent and half-sent requests, protocol errors. Each gets nginx's answer
(431/414/408/400) in the OpenAI error envelope with x-request-id, and the connection is closed."""

from __future__ import annotations

import asyncio
import contextlib
import json

from tests.e2e.conftest import SluiceServer
from tests.e2e.rawhttp import Head, RawConn

SERVER_OPTIONS = {"header_timeout_seconds": 0.5, "body_timeout_seconds": 0.5, "keepalive_seconds": 0.5}
WAIT = 20.0  # far above the configured timeouts: only a connection that is never closed runs into it


async def refused(port: int, head: bytes, stream: bytes = b"", repeat: int = 0) -> tuple[Head, dict[str, str]]:
    """Send `head` (then `stream` up to `repeat` times, while the server still reads); read the answer."""
    conn = await RawConn.open(port)
    try:
        conn.writer.write(head)

        async def flood() -> None:
            with contextlib.suppress(ConnectionError):
                for _ in range(repeat):
                    conn.writer.write(stream)
                    await conn.writer.drain()

        pump = asyncio.create_task(flood())
        got = await conn.head()
        body = json.loads(await conn.body(got))
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await pump
        assert got.get("connection") == "close"
        assert (got.get("x-request-id") or "").startswith("req_")
        assert set(body["error"]) == {"message", "type", "param", "code"}
        assert await asyncio.wait_for(closed(conn), WAIT)
        return got, body["error"]
    finally:
        conn.abort()


async def closed(conn: RawConn) -> bool:
    """True once the server has closed the connection (whatever it still had to say is read and dropped)."""
    with contextlib.suppress(ConnectionError):
        while await conn.reader.read(65536):
            pass
    return True


async def test_an_endless_header_line_is_431_and_memory_stays_flat(sluice: SluiceServer) -> None:
    before = sluice.rss_kib()
    head, err = await refused(sluice.port, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ", b"a" * (1 << 20), 300)
    assert head.status == 431 and err["code"] == "request_header_fields_too_large"
    grown = sluice.rss_kib() - before
    assert grown < 64 << 10, f"RSS grew by {grown} KiB for a refused header"


async def test_ten_thousand_headers_are_431(sluice: SluiceServer) -> None:
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(10_000))
    head, err = await refused(sluice.port, b"GET /health HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert head.status == 431 and "headers" in err["message"]


async def test_one_header_of_a_megabyte_is_431(sluice: SluiceServer) -> None:
    head, _ = await refused(sluice.port, b"GET /health HTTP/1.1\r\nHost: x\r\nCookie: " + b"c" * (1 << 20) +
                              b"\r\n\r\n")
    assert head.status == 431


async def test_a_header_just_over_the_line_limit_is_431_and_one_under_is_served(sluice: SluiceServer) -> None:
    head, _ = await refused(sluice.port, b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 8200 + b"\r\n\r\n")
    assert head.status == 431
    conn = await RawConn.open(sluice.port)
    try:
        await conn.send("GET", "/health", headers={"X-A": "a" * 8000})
        assert (await conn.head()).status == 200
    finally:
        conn.close()


async def test_a_long_url_is_414(sluice: SluiceServer) -> None:
    head, err = await refused(sluice.port, b"GET /" + b"u" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head.status == 414 and err["code"] == "request_uri_too_long"


async def test_protocol_errors_get_the_envelope(sluice: SluiceServer) -> None:
    cl_te = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
             b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    bad_chunk = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n"
    for raw in (cl_te, bad_chunk, b"NOT HTTP AT ALL\r\n\r\n"):
        head, err = await refused(sluice.port, raw)
        assert head.status == 400 and err["code"] == "invalid_http_request", raw


async def test_silent_and_half_sent_connections_are_closed_after_the_timeouts(sluice: SluiceServer,
                                                                              api_key: str) -> None:
    partial_head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Le"
    partial_body = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + api_key.encode() +
                    b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"mo")
    conns: list[tuple[bytes, RawConn]] = []
    for kind in (b"", partial_head, partial_body):
        for _ in range(100):
            c = await RawConn.open(sluice.port)
            c.writer.write(kind)
            conns.append((kind, c))

    async def outcome(kind: bytes, c: RawConn) -> tuple[bytes, bytes]:
        try:
            return kind, await asyncio.wait_for(c.reader.read(), WAIT)  # everything until the server closes
        finally:
            c.abort()

    results = await asyncio.gather(*(outcome(k, c) for k, c in conns))
    for kind, data in results:
        if kind == b"":
            assert data == b""  # nothing asked, nothing answered: just closed
        else:
            assert data.startswith(b"HTTP/1.1 408 "), data[:200]
            assert b'"code":"request_timeout"' in data and b"x-request-id: req_" in data


async def test_an_idle_kept_alive_connection_is_closed(sluice: SluiceServer) -> None:
    conn = await RawConn.open(sluice.port)
    try:
        await conn.send("GET", "/health")
        head = await conn.head()
        assert head.status == 200 and await conn.body(head)
        assert await asyncio.wait_for(conn.reader.read(), WAIT) == b""  # closed after keepalive_seconds
    finally:
        conn.close()
