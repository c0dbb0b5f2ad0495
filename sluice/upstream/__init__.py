"""The shared upstream HTTP/1.1 client pool, and the ONE place that turns transport failures into errors.

A small keep-alive client on an asyncio Protocol with httptools' response parser (llhttp, the parser of
Node.js): a relayed request costs one write and the reads it needs, with no per-request objects beyond
the connection's own state. It replaced aiohttp, whose request machinery was the largest block in the
profile (see docs/decisions.md); the connection itself is `_conn.Conn`. Providers see the `Transport`
and `Response` protocols (`transport.py`), which `UpstreamClient` and `UpstreamResponse` implement;
every transport failure comes out as a `sluice.errors.UpstreamError` subclass.
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

from sluice.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from sluice.upstream._conn import Conn
from sluice.upstream.proxy import tunnel
from sluice.upstream.transport import Response, Transport

__all__ = ["Response", "Timeouts", "Transport", "UpstreamClient", "UpstreamLimits", "UpstreamResponse",
           "retry_after_seconds"]

_MAX_ERROR_BODY = 1 << 20
_KEEPALIVE = 15.0              # idle pooled connections older than this are closed, not reused
_MAX_IDLE_PER_HOST = 512
_PIECE = 256 << 10             # most bytes one decompression step may produce


@dataclass(slots=True)
class Timeouts:
    """Seconds. `first_byte` bounds the wait for the upstream's answer (status and headers); `idle` the
    time without progress after it (a complete event marked by the reader, see `mark_progress`: bytes
    that never form one do not count); `total` the whole exchange, body included."""

    connect: float = 10.0
    first_byte: float = 600.0
    idle: float = 300.0
    total: float | None = None


@dataclass(frozen=True, slots=True)
class UpstreamLimits:
    """Bytes. The most a plain reply may hold, and an event-stream line and event (see `sluice.sse`)."""

    max_reply: int = 64 << 20
    max_line: int = 4 << 20
    max_event: int = 4 << 20


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


class UpstreamResponse:
    """An upstream's answer. Close it (`close()`) in a `finally`; reading the body to the end releases it."""

    __slots__ = ("_client", "_conn", "_deadline", "_decoder", "_idle", "_origin_key", "_progress_at", "headers",
                 "status")

    def __init__(self, client: UpstreamClient, conn: Conn, key: tuple[bool, str, int], idle: float,
                 deadline: float | None) -> None:
        self._client = client
        self._conn: Conn | None = conn
        self._origin_key = key
        self._idle = idle
        self._deadline = deadline
        self._progress_at: float | None = None  # None: idle bounds each gap between reads
        self.status = conn.status
        self.headers: Mapping[str, str] = conn.headers
        enc = conn.headers.get("content-encoding", "").lower()
        self._decoder = zlib.decompressobj(47 if enc == "gzip" else zlib.MAX_WBITS) \
            if enc in ("gzip", "deflate") else None

    @property
    def limits(self) -> UpstreamLimits:
        return self._client.limits

    def mark_progress(self) -> None:
        """From the first call on, idle bounds the time without progress instead of the gap between
        reads: the reader calls it when a complete event arrived (trickled bytes never count)."""
        self._progress_at = asyncio.get_running_loop().time()

    def check_progress(self) -> None:
        """Raise the idle timeout when bytes keep coming but no event completed for `idle` seconds."""
        at = self._progress_at
        if at is not None and asyncio.get_running_loop().time() - at > self._idle:
            self.close()
            raise UpstreamTimeout(f"the upstream sent bytes but no complete event for {self._idle:g}s")

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body, at most `limit` bytes (the client's `max_reply`). Used for plain replies and
        error bodies; it must arrive within the idle timeout of the head (a body is not progress)."""
        limit = self._client.limits.max_reply if limit is None else limit
        self.mark_progress()  # a body trickled byte by byte must still be whole within idle
        parts: list[bytes] = []
        size = 0
        conn = self._conn
        # an uncompressed body is read without `iter_chunks`: an async generator costs a plain request its
        # creation, its registration with the loop (a WeakSet) and its finalisation
        chunks = None if self._decoder is None and conn is not None else self.iter_chunks()
        try:
            while True:
                part = await self._raw(conn) if chunks is None else await anext(chunks, None)
                if part is None:
                    break
                parts.append(part)
                size += len(part)
                if size > limit:  # (closed in `finally`)
                    parts.clear()  # the traceback keeps this frame: let the bytes go now, not at a GC pass
                    raise _too_large(limit)  # no local holds the error: a local would make frame and error a cycle
        finally:
            self.close()
            conn = chunks = None
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def read_error_body(self) -> bytes:
        try:
            return await self.read(_MAX_ERROR_BODY)
        except UpstreamError:
            return b""

    async def _raw(self, conn: Conn | None) -> bytes | None:
        """The next bytes the connection has for this response as they came (None at the end, or once the
        response was closed); each wait for more is bounded by the idle (and total) timeout."""
        while conn is not None and self._conn is conn:
            if conn.buf:
                return conn.take()
            if conn.done:
                return None
            if conn.error is not None:
                raise conn.error
            if not await conn.wait(self._wait_for()):
                raise self._timeout()
        return None

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive (decompressed); each wait for more is bounded by the idle (and total)
        timeout."""
        conn = self._conn
        if conn is None:
            return
        decoder = self._decoder
        try:
            while (data := await self._raw(conn)) is not None:
                if decoder is None:
                    yield data
                    continue
                while data:  # bounded pieces, so read(limit) bounds memory for compressed bodies too
                    out = decoder.decompress(data, _PIECE)
                    data = decoder.unconsumed_tail
                    if out:
                        yield out
            if conn.done and decoder is not None and (tail := decoder.flush()):
                yield tail
        except zlib.error:
            raise UpstreamError("the upstream sent a body that does not decompress") from None
        finally:
            self.close()
            # an error raised here keeps this frame in its traceback, and `conn` keeps the error
            # (`conn.error`): drop the locals so that frame, error and buffers go without a GC pass
            conn = data = decoder = None

    def _wait_for(self) -> float:
        now = asyncio.get_running_loop().time()
        end = now + self._idle if self._progress_at is None else self._progress_at + self._idle
        if self._deadline is not None and self._deadline < end:
            end = self._deadline
        return end - now

    def _timeout(self) -> UpstreamTimeout:
        if self._deadline is not None and asyncio.get_running_loop().time() >= self._deadline:
            return UpstreamTimeout("the upstream reply took longer than the total timeout")
        conn = self._conn
        if conn is not None and self._progress_at is not None and conn.last_read > self._progress_at:
            return UpstreamTimeout(f"the upstream sent bytes but no complete event for {self._idle:g}s")
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
    """A keep-alive connection pool shared by every provider of one Sluice process (the real `Transport`)."""

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None, proxy: str | None = None,
                 limits: UpstreamLimits | None = None) -> None:
        self.limits = limits or UpstreamLimits()
        self._idle: dict[tuple[bool, str, int], list[Conn]] = {}
        self._origins: dict[str, tuple[_Origin, str]] = {}
        self._ssl = ssl_context
        self._proxy = proxy
        self._variants: dict[tuple[str | None, str | None], UpstreamClient] = {}
        self._closed = False

    def variant(self, *, proxy: str | None, ca_file: str | None) -> UpstreamClient:
        """A pool of its own for a provider's outbound proxy and/or CA file; closed with this one."""
        if not proxy and not ca_file:
            return self
        key = (proxy or None, ca_file)
        got = self._variants.get(key)
        if got is None:
            ctx = ssl.create_default_context(cafile=ca_file) if ca_file else None
            got = self._variants[key] = UpstreamClient(ssl_context=ctx, proxy=proxy or None, limits=self.limits)
        return got

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

    async def _connect(self, o: _Origin, seconds: float) -> Conn:
        loop = asyncio.get_running_loop()
        ctx: ssl.SSLContext | None = None
        if o.tls:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            ctx = self._ssl
        try:
            async with asyncio.timeout(seconds):
                if self._proxy:
                    sock = await tunnel(self._proxy, o.host, o.port, seconds)
                    _, conn = await loop.create_connection(lambda: Conn(loop), sock=sock, ssl=ctx,
                                                           server_hostname=o.host if ctx else None)
                else:
                    _, conn = await loop.create_connection(lambda: Conn(loop), o.host, o.port, ssl=ctx,
                                                           server_hostname=o.host if ctx else None)
        except TimeoutError:
            raise UpstreamTimeout(f"connecting to the upstream took longer than {seconds:g}s") from None
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamUnavailable(f"the upstream could not be reached: {_describe(exc)}") from None
        return conn

    def _get_idle(self, key: tuple[bool, str, int]) -> Conn | None:
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

    def _put(self, key: tuple[bool, str, int], conn: Conn) -> None:
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
        head = "".join([f"{method} {target} HTTP/1.1\r\nhost: {o.host_header}\r\n",
                        *[f"{k}: {v}\r\n" for k, v in headers.items()],
                        f"content-length: {len(body) if body else 0}\r\n\r\n"
                        if body is not None or method in ("POST", "PUT", "PATCH") else "\r\n"]).encode("latin-1")
        data = head + body if body else head
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

    async def _exchange(self, conn: Conn, o: _Origin, data: bytes, timeouts: Timeouts,
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
            conn.error = None  # the error's traceback holds this frame, which holds conn: no cycle
            raise
        return UpstreamResponse(self, conn, o.key, timeouts.idle, deadline)

    async def aclose(self) -> None:
        for variant in self._variants.values():
            await variant.aclose()
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


def _too_large(limit: int) -> UpstreamError:
    err = UpstreamError(f"the upstream reply is larger than the limit of {limit} bytes",
                        code="upstream_reply_too_large")
    err.retryable = False  # the same request would get the same reply
    return err


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:300]
