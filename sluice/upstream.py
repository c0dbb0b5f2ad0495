"""The shared upstream HTTP/1.1 client pool, and the ONE place that turns transport failures into errors.

A small keep-alive client on an asyncio Protocol with httptools' response parser (llhttp, the parser of
Node.js): a relayed request costs one write and the reads it needs, with no per-request objects beyond
the connection's own state. It replaced aiohttp, which cost more CPU per request than the rest of the
gateway together (see docs/decisions.md). Providers see `UpstreamClient.request()` and
`UpstreamResponse`; every transport failure comes out as a `sluice.errors.UpstreamError` subclass.
"""

from __future__ import annotations

import asyncio
import email.utils
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

from sluice.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable

_MAX_ERROR_BODY = 1 << 20
_MAX_HEAD = 64 << 10           # bytes of status line + headers an upstream may send
_HIGH_WATER = 256 << 10        # buffered body bytes before the socket stops being read
_KEEPALIVE = 15.0              # idle pooled connections older than this are closed, not reused
_MAX_IDLE_PER_HOST = 512
_PIECE = 256 << 10             # most bytes one decompression step may produce


@dataclass(slots=True)
class Timeouts:
    """Seconds. `first_byte` bounds the wait for the upstream's answer; `idle` the gap between reads."""

    connect: float = 10.0
    first_byte: float = 600.0
    idle: float = 300.0
    total: float | None = None


class _Origin:
    """Where a URL points: the pool key, the request target and the Host header."""

    __slots__ = ("host", "host_header", "key", "port", "tls")

    def __init__(self, url: str) -> None:
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise UpstreamError(f"unsupported upstream URL: {url[:200]}")
        self.tls = u.scheme == "https"
        self.host = u.hostname
        self.port = u.port or (443 if self.tls else 80)
        default = self.port == (443 if self.tls else 80)
        name = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = name if default else f"{name}:{self.port}"
        self.key = (self.tls, self.host, self.port)


class _Conn(asyncio.Protocol):
    """One HTTP/1.1 connection. Carries one exchange at a time; parser callbacks fill its state."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.watchdog: asyncio.TimerHandle | None = None
        self.wait_deadline = 0.0
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self._hname = b""
        self.head_done = False
        self.done = False
        self.keep_alive = False
        self.error: BaseException | None = None
        self.received = False
        self.buf: list[bytes] = []
        self.buffered = 0
        self.paused = False
        self.last_read = 0.0
        self.waiter: asyncio.Future[bool] | None = None
        self.head_bytes = 0
        self.raw_head = 0
        self.exchange = False
        self.no_body = False
        self.unsolicited = False

    # -- asyncio.Protocol --------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received = True
        self.last_read = self._loop.time()
        if not self.exchange:  # bytes nobody asked for (e.g. a 408 on an idle connection): never reuse it
            self.abort()
            return
        head_pending = not self.head_done
        try:
            self.parser.feed_data(data)
            if head_pending and not self.head_done:
                # a head still incomplete after N bytes is at least N bytes long
                self.raw_head += len(data)
                if self.raw_head > _MAX_HEAD:
                    raise httptools.HttpParserError("response head too large")
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"the upstream sent a malformed HTTP response: {exc}"))
            self.abort()
            return
        if self.buffered > _HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.head_done and not self.done and self.headers.get("content-length") is None \
                and "chunked" not in self.headers.get("transfer-encoding", "").lower() and exc is None:
            self.done = True  # a body delimited by the end of the connection
            self._wake()
            return
        if not self.done:
            self._fail(UpstreamUnavailable("the upstream closed the connection") if not self.received
                       else UpstreamError("the upstream closed the connection before its reply was complete"))

    # -- httptools callbacks -----------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.done:  # a second reply to one request: the connection can no longer be trusted
            self.keep_alive = False
            self.unsolicited = True

    def on_status(self, reason: bytes) -> None:
        self.head_bytes += len(reason)
        if self.head_bytes > _MAX_HEAD:
            raise httptools.HttpParserError("response status line too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.unsolicited:
            return
        self.head_bytes += len(name) + len(value)
        if self.head_bytes > _MAX_HEAD:
            raise httptools.HttpParserError("response headers too large")
        if name:
            self._hname = name.lower()
            k = self._hname.decode("latin-1")
            v = value.decode("latin-1")
            old = self.headers.get(k)
            self.headers[k] = v if old is None else old + ", " + v

    def on_headers_complete(self) -> None:
        if self.unsolicited:
            return
        self.status = self.parser.get_status_code()
        if 100 <= self.status < 200:  # an interim reply: the real head follows
            self.status, self.headers, self.head_bytes = 0, {}, 0
            return
        self.head_done = True
        if self.no_body:  # a reply to HEAD: no body follows whatever its headers say; not reusable
            self.done = True
            self.keep_alive = False
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.unsolicited:
            return
        self.buf.append(body)
        self.buffered += len(body)
        self._wake()

    def on_message_complete(self) -> None:
        if self.head_done and not self.unsolicited:
            self.keep_alive = self.parser.should_keep_alive()  # only valid inside the callback
            self.done = True
            self._wake()

    # -- consumer side -----------------------------------------------------------------------------
    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(False)

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self._wake()

    def abort(self) -> None:
        self.closed = True
        self.cancel_watchdog()
        if self.transport is not None:
            self.transport.abort()

    def take(self) -> bytes:
        """Everything buffered so far (resumes reading if it was paused)."""
        buf = self.buf
        data = buf[0] if len(buf) == 1 else b"".join(buf)
        self.buf = []
        self.buffered = 0
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data

    async def wait(self, seconds: float) -> bool:
        """Until the parser has more for us; False when `seconds` passed first.

        One watchdog timer per connection instead of a timer per wait: it is re-armed only when it
        fires early, so a stream's chunks cost no timer operations.
        """
        loop = self._loop
        w: asyncio.Future[bool] = loop.create_future()
        self.waiter = w
        self.wait_deadline = loop.time() + seconds
        dog = self.watchdog
        if dog is None or dog.when() > self.wait_deadline:
            if dog is not None:
                dog.cancel()
            self.watchdog = loop.call_at(self.wait_deadline, self._watch)
        try:
            return not await w
        finally:
            self.waiter = None

    def _watch(self) -> None:
        self.watchdog = None
        w = self.waiter
        if w is None or w.done():
            return
        if self._loop.time() >= self.wait_deadline:
            w.set_result(True)
        else:
            self.watchdog = self._loop.call_at(self.wait_deadline, self._watch)

    def cancel_watchdog(self) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None


class UpstreamResponse:
    """An upstream's answer. Close it (`close()`) in a `finally`; reading the body to the end releases it."""

    __slots__ = ("_client", "_conn", "_deadline", "_decoder", "_idle", "_origin_key", "headers", "status")

    def __init__(self, client: UpstreamClient, conn: _Conn, key: tuple[bool, str, int], idle: float,
                 deadline: float | None) -> None:
        self._client = client
        self._conn: _Conn | None = conn
        self._origin_key = key
        self._idle = idle
        self._deadline = deadline
        self.status = conn.status
        self.headers: Mapping[str, str] = conn.headers
        enc = conn.headers.get("content-encoding", "").lower()
        self._decoder = zlib.decompressobj(47 if enc == "gzip" else zlib.MAX_WBITS) \
            if enc in ("gzip", "deflate") else None

    async def read(self, limit: int = 64 << 20) -> bytes:
        """The whole body (bounded). Used for plain replies and error bodies."""
        parts: list[bytes] = []
        size = 0
        async for part in self.iter_chunks():
            parts.append(part)
            size += len(part)
            if size > limit:
                self.close()
                raise UpstreamError("the upstream reply exceeded the size limit")
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def read_error_body(self) -> bytes:
        try:
            return await self.read(_MAX_ERROR_BODY)
        except UpstreamError:
            return b""

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive; each wait for more is bounded by the idle (and total) timeout."""
        conn = self._conn
        if conn is None:
            return
        decoder = self._decoder
        try:
            while self._conn is conn:
                if conn.buf:
                    data = conn.take()
                    if decoder is None:
                        yield data
                        continue
                    while data:  # bounded pieces, so read(limit) bounds memory for compressed bodies too
                        out = decoder.decompress(data, _PIECE)
                        data = decoder.unconsumed_tail
                        if out:
                            yield out
                    continue
                if conn.done:
                    if decoder is not None and (tail := decoder.flush()):
                        yield tail
                    return
                if conn.error is not None:
                    raise conn.error
                if not await conn.wait(self._wait_for()):
                    raise self._timeout()
        except zlib.error:
            raise UpstreamError("the upstream sent a body that does not decompress") from None
        finally:
            self.close()

    def _wait_for(self) -> float:
        if self._deadline is None:
            return self._idle
        return min(self._idle, self._deadline - asyncio.get_running_loop().time())

    def _timeout(self) -> UpstreamTimeout:
        if self._deadline is not None and asyncio.get_running_loop().time() >= self._deadline:
            return UpstreamTimeout("the upstream reply took longer than the total timeout")
        return UpstreamTimeout(f"the upstream sent nothing for {self._idle:g}s")

    def close(self) -> None:
        """Done with the body: a connection read to its end goes back to the pool, any other is dropped."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if conn.done and not conn.buf and conn.error is None:
            self._client._put(self._origin_key, conn)
        else:
            conn.abort()


class UpstreamClient:
    """A keep-alive connection pool shared by every provider of one Sluice process."""

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self._idle: dict[tuple[bool, str, int], list[_Conn]] = {}
        self._origins: dict[str, tuple[_Origin, str]] = {}
        self._ssl = ssl_context
        self._closed = False

    def _origin(self, url: str) -> tuple[_Origin, str]:
        got = self._origins.get(url)
        if got is None:
            o = _Origin(url)
            u = urlsplit(url)
            target = (u.path or "/") + (f"?{u.query}" if u.query else "")
            if len(self._origins) > 4096:
                self._origins.clear()
            got = self._origins[url] = (o, target)
        return got

    async def _connect(self, o: _Origin, seconds: float) -> _Conn:
        loop = asyncio.get_running_loop()
        ctx: ssl.SSLContext | None = None
        if o.tls:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            ctx = self._ssl
        try:
            async with asyncio.timeout(seconds):
                _, conn = await loop.create_connection(lambda: _Conn(loop), o.host, o.port, ssl=ctx,
                                                       server_hostname=o.host if ctx else None)
        except TimeoutError:
            raise UpstreamTimeout(f"connecting to the upstream took longer than {seconds:g}s") from None
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamUnavailable(f"the upstream could not be reached: {_describe(exc)}") from None
        return conn

    def _get_idle(self, key: tuple[bool, str, int]) -> _Conn | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < _KEEPALIVE:
                return conn
            conn.abort()
        return None

    def _put(self, key: tuple[bool, str, int], conn: _Conn) -> None:
        if self._closed or conn.closed or not conn.keep_alive or conn.unsolicited or conn.error is not None:
            conn.abort()
            return
        idle = self._idle.setdefault(key, [])
        if len(idle) >= _MAX_IDLE_PER_HOST:
            conn.abort()
            return
        conn.cancel_watchdog()
        conn._reset()
        conn.idle_since = time.monotonic()
        idle.append(conn)

    async def request(self, method: str, url: str, *, headers: Mapping[str, str], body: bytes | None,
                      timeouts: Timeouts) -> UpstreamResponse:
        """Send and wait for the status line and headers (bounded by connect, then first_byte)."""
        o, target = self._origin(url)
        head = [f"{method} {target} HTTP/1.1\r\nhost: {o.host_header}\r\n"]
        for k, v in headers.items():
            head.append(f"{k}: {v}\r\n")
        if body is not None or method in ("POST", "PUT", "PATCH"):
            head.append(f"content-length: {len(body) if body else 0}\r\n")
        head.append("\r\n")
        data = "".join(head).encode("latin-1")
        if body:
            data += body
        for attempt in range(2):
            conn = self._get_idle(o.key) if attempt == 0 else None
            reused = conn is not None
            if conn is None:
                conn = await self._connect(o, timeouts.connect)
            try:
                return await self._exchange(conn, o, data, timeouts, method)
            except UpstreamUnavailable:
                # a pooled connection the upstream had already closed: retry once on a fresh one
                if not reused:
                    raise
        raise UpstreamUnavailable("the upstream closed the connection")  # pragma: no cover

    async def _exchange(self, conn: _Conn, o: _Origin, data: bytes, timeouts: Timeouts,
                        method: str) -> UpstreamResponse:
        assert conn.transport is not None
        conn.exchange = True
        conn.no_body = method == "HEAD"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeouts.total if timeouts.total else None
        wait = timeouts.first_byte if deadline is None else min(timeouts.first_byte, timeouts.total or 0.0)
        conn.transport.write(data)
        try:
            while not conn.head_done:
                if conn.error is not None:
                    raise conn.error
                if not await conn.wait(wait):
                    raise UpstreamTimeout(f"the upstream did not answer within {wait:g}s")
        except BaseException:
            conn.abort()
            raise
        return UpstreamResponse(self, conn, o.key, timeouts.idle, deadline)

    async def aclose(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.abort()
        self._idle.clear()


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """An upstream's `retry-after-ms` / `retry-after` (seconds or HTTP date) in seconds, if any."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if not ra:
        return None
    try:
        return max(0.0, float(ra))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(ra)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:300]
