"""One upstream HTTP/1.1 connection: an asyncio Protocol whose httptools (llhttp) parser callbacks fill
its state, and the wait the response reader uses. Used only by `sluice.upstream`."""

from __future__ import annotations

import asyncio

import httptools

from sluice.errors import UpstreamError, UpstreamUnavailable

MAX_HEAD = 64 << 10           # bytes of status line + headers an upstream may send
HIGH_WATER = 256 << 10        # buffered body bytes before the socket stops being read
_LOST = httptools.HttpResponseParser(object())  # what a lost connection's `parser` becomes


class Conn(asyncio.Protocol):
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
                if self.raw_head > MAX_HEAD:
                    raise httptools.HttpParserError("response head too large")
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"the upstream sent a malformed HTTP response: {exc}"))
            self.abort()
            return
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        # the live parser holds our bound methods: a cycle that only a full collection would find in a
        # long-pooled connection; nothing feeds a lost connection
        self.parser = _LOST
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
        if self.head_bytes > MAX_HEAD:
            raise httptools.HttpParserError("response status line too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.unsolicited:
            return
        self.head_bytes += len(name) + len(value)
        if self.head_bytes > MAX_HEAD:
            raise httptools.HttpParserError("response headers too large")
        if name:
            k = name.lower().decode("latin-1")
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
