"""Minimal HTTP/1.1 keep-alive client on asyncio + httptools, cheap enough to load a gateway from
Python. Streaming responses are split into SSE events, each stamped with the time its read arrived."""

from __future__ import annotations

import asyncio
import time

import httptools


def build_request(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """Serialise one POST once; the same bytes are sent for every request of a scenario."""
    lines = [f"POST {path} HTTP/1.1", f"host: {host}:{port}", "content-type: application/json",
             f"content-length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Response:
    """What one request produced. For streams, `events` holds (recv_us, event bytes) in arrival order."""

    __slots__ = ("body", "events", "headers_us", "sent_us", "status", "stream")

    def __init__(self, stream: bool):
        self.stream = stream
        self.status = 0
        self.headers_us = 0
        self.sent_us = 0
        self.body: list[bytes] = []
        self.events: list[tuple[int, bytes]] = []


class Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Response] | None = None
        self.resp: Response | None = None
        self.buf = b""
        self.now_us = 0
        self.closed = False

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(cls, host, port)
        return conn

    def request(self, data: bytes, stream: bool = False) -> asyncio.Future[Response]:
        loop = asyncio.get_running_loop()
        self.waiter = loop.create_future()
        if self.closed or self.transport is None:
            self.waiter.set_exception(ConnectionError("connection closed"))
            return self.waiter
        self.resp = Response(stream)
        self.buf = b""
        self.resp.sent_us = time.time_ns() // 1000
        self.transport.write(data)
        return self.waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # -- transport callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

    def data_received(self, data: bytes) -> None:
        self.now_us = time.time_ns() // 1000
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self.close()
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_exception(ConnectionError(f"bad response: {e}"))

    # -- parser callbacks
    def on_headers_complete(self) -> None:
        if self.resp is not None:
            self.resp.status = self.parser.get_status_code()
            self.resp.headers_us = self.now_us

    def on_body(self, body: bytes) -> None:
        resp = self.resp
        if resp is None:
            return
        if not resp.stream:
            resp.body.append(body)
            return
        buf = self.buf + body
        while True:
            # events end with a blank line; accept LF and CRLF framings
            i = buf.find(b"\n\n")
            j = buf.find(b"\r\n\r\n")
            if i < 0 and j < 0:
                break
            if j >= 0 and (i < 0 or j < i):
                ev, buf = buf[:j], buf[j + 4:]
            else:
                ev, buf = buf[:i], buf[i + 2:]
            resp.events.append((self.now_us, ev))
        self.buf = buf

    def on_message_complete(self) -> None:
        if not self.parser.should_keep_alive():
            self.close()
        waiter, resp = self.waiter, self.resp
        self.waiter = self.resp = None
        if waiter is not None and not waiter.done() and resp is not None:
            waiter.set_result(resp)


class Pool:
    """Idle keep-alive connections to one host; opens new ones on demand up to `limit`."""

    def __init__(self, host: str, port: int, limit: int = 1024):
        self.host, self.port, self.limit = host, port, limit
        self.idle: list[Connection] = []
        self.count = 0
        self._free = asyncio.Semaphore(limit)

    async def send(self, data: bytes, stream: bool = False) -> Response:
        async with self._free:
            conn = self.idle.pop() if self.idle else None
            if conn is None or conn.closed:
                conn = await Connection.open(self.host, self.port)
                self.count += 1
            try:
                resp = await conn.request(data, stream)
            except BaseException:
                conn.close()
                raise
            if not conn.closed:
                self.idle.append(conn)
            return resp

    def close(self) -> None:
        for c in self.idle:
            c.close()
        self.idle.clear()
