"""One request and its response on a connection: the body as the parser delivers it (reading pauses once
64 KiB wait untaken), the ASGI `receive`/`send` the app is called with, and the response framed straight
onto the transport. What the app sends within one step of the event loop goes out as one write (a head with
its body; the frames of a stream that arrived together; the last frame with the terminating chunk), at the
end of that step or at once past 64 KiB; `send` waits while the client's socket is full."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any

from sluice.server.wire import CONTINUE, LAST_CHUNK, PLAIN_500, status_line

if TYPE_CHECKING:
    from sluice.server.protocol import HttpProtocol

log = logging.getLogger("sluice.server")

Message = MutableMapping[str, Any]
App = Callable[[MutableMapping[str, Any], Callable[[], Any], Callable[[Message], Any]], Any]

HIGH_WATER = 64 << 10  # request body bytes buffered for the app before the connection stops reading


_FRAMING = frozenset((b"content-length", b"transfer-encoding", b"connection"))
_KINDS: dict[bytes, bytes] = {}  # response header names found valid -> the framing header each is, or b""


def _kind(name: bytes) -> bytes:
    """Check a response header name once (no CR, LF or colon) and say which framing header it is, if any:
    an app's header names are a handful of constants, so `_start` looks each up instead of checking it."""
    if b"\n" in name or b"\r" in name or b":" in name:
        raise RuntimeError("Invalid HTTP header.")
    low = name.lower()
    kind = low if low in _FRAMING else b""
    if len(_KINDS) < 1024:
        _KINDS[name] = kind
    return kind


class Exchange:
    """The state of one request/response pair. The protocol feeds it (`feed`, `end_of_body`, `lost`); the
    app's task runs `run`, which calls the app with `receive` and `send`."""

    __slots__ = ("_flush", "_gone_cb", "_out", "_out_size", "_waiter", "body", "body_size", "chunked", "complete",
                 "conn", "expect_100", "gone", "head_only", "http10", "keep_alive", "more_body", "remaining", "scope",
                 "started", "taken")

    def __init__(self, conn: HttpProtocol, scope: MutableMapping[str, Any], *, keep_alive: bool,
                 expect_100: bool, http10: bool, head_only: bool) -> None:
        self.conn = conn
        self.scope = scope
        self.keep_alive = keep_alive
        self.expect_100 = expect_100
        self.http10 = http10
        self.head_only = head_only
        self.body: list[bytes] = []
        self.body_size = 0
        self.more_body = True
        self.taken = False          # the app has had the whole body
        self.started = False        # the response head was sent (or is pending in `_out`)
        self.complete = False       # the response's last byte was written
        self.gone = False           # the client left (or was refused) before the response completed
        self.chunked = False
        self.remaining: int | None = None  # body bytes the head's content-length still owes
        self._out: list[bytes] = []        # response bytes of this loop step, not yet written
        self._out_size = 0
        self._flush: asyncio.Handle | None = None  # writes `_out` at the end of the step
        self._waiter: asyncio.Future[None] | None = None
        self._gone_cb: Callable[[], None] | None = None

    # -- fed by the protocol -----------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        if self.complete or self.gone:
            return  # answered already (e.g. 413 before reading): the rest of the body is dropped
        self.body.append(data)
        self.body_size += len(data)
        if self.body_size > HIGH_WATER:
            self.conn.pause_reading()
        self._wake()

    def end_of_body(self) -> None:
        self.more_body = False
        self._wake()

    def lost(self) -> None:
        """The client went away, or the server refused the connection, before the response completed."""
        if self.complete or self.gone:
            return
        self.gone = True
        self._wake()
        self._drop_output()
        cb, self._gone_cb = self._gone_cb, None
        if cb is not None:
            cb()

    def on_disconnect(self, callback: Callable[[], None] | None) -> None:
        """The disconnect hook apps find in `scope["extensions"]`: `callback` is called once if the client
        goes away before the response completes (at once if it already has); None unregisters. It replaces
        a task per request awaiting `receive()` for `http.disconnect`."""
        if callback is not None and self.gone:
            callback()
            return
        self._gone_cb = callback

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    # -- ASGI --------------------------------------------------------------------------------------
    async def receive(self) -> Message:
        if self.expect_100:
            self.expect_100 = False
            if not self.conn.transport.is_closing():
                self.conn.transport.write(CONTINUE)
        while not (self.gone or self.complete):
            if self.body or (not self.more_body and not self.taken):
                body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
                self.body = []
                self.body_size = 0
                if self.more_body:
                    self.conn.resume_reading()
                else:
                    self.taken = True
                return {"type": "http.request", "body": body, "more_body": self.more_body}
            if self.more_body:
                self.conn.resume_reading()
            self._waiter = self.conn.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        conn = self.conn
        if conn.write_paused and not self.gone:
            await conn.drain()
        if self.gone:
            return
        if self.complete:
            raise RuntimeError(f"Unexpected ASGI message {message['type']!r} after the response completed.")
        if not self.started:
            if message["type"] != "http.response.start":
                raise RuntimeError(f"Expected 'http.response.start', got {message['type']!r}.")
            self._start(message["status"], message.get("headers", ()))
            return
        if message["type"] != "http.response.body":
            raise RuntimeError(f"Expected 'http.response.body', got {message['type']!r}.")
        self._body(message.get("body", b""), message.get("more_body", False))

    def _start(self, status: int, headers: Iterable[tuple[bytes, bytes]]) -> None:
        self.started = True
        self.expect_100 = False
        parts = [status_line(status), self.conn.default_head()]
        length: int | None = None
        te_chunked = close = False
        lines: list[bytes] = []
        for name, value in headers:
            kind = _KINDS.get(name)
            if kind is None:
                kind = _kind(name)
            if kind:
                if kind == b"content-length":
                    length = int(value)
                elif kind == b"transfer-encoding":
                    te_chunked = value.lower() == b"chunked"
                elif b"close" in value.lower():  # connection
                    close = True
                    self.keep_alive = False
            lines.append(b"%b: %b\r\n" % (name, value))
        block = b"".join(lines)
        if block.count(b"\n") != len(lines) or block.count(b"\r") != len(lines):  # one CRLF a line: none in a value
            raise RuntimeError("Invalid HTTP header.")
        parts.append(block)
        if length is not None:
            self.remaining = length
        elif te_chunked:
            self.chunked = True
        elif self.head_only or status in (204, 304) or status < 200:
            self.remaining = 0
        elif self.http10:
            self.keep_alive = False  # no chunked framing in HTTP/1.0: the body ends with the connection
        else:
            self.chunked = True
            parts.append(b"transfer-encoding: chunked\r\n")
        if not self.keep_alive and not close:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        self._write(b"".join(parts))  # the body (or a stream's first frames) usually follows in this step

    def _write(self, data: bytes) -> None:
        self._out.append(data)
        self._out_size += len(data)
        if self._out_size > HIGH_WATER:
            self._flush_output()
        elif self._flush is None:
            self._flush = self.conn.loop.call_soon(self._flush_output)

    def _flush_output(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        out = self._out
        if out:
            self.conn.transport.write(out[0] if len(out) == 1 else b"".join(out))
            self._out = []
            self._out_size = 0

    def _drop_output(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        self._out = []
        self._out_size = 0

    def _body(self, body: bytes, more: bool) -> None:
        if self.head_only:
            body = b""
        elif self.chunked:
            if body:
                body = b"%x\r\n%b\r\n" % (len(body), body)  # size, data and CRLF: one piece
        elif self.remaining is not None:
            self.remaining -= len(body)
            if self.remaining < 0:
                raise RuntimeError("Response content longer than Content-Length.")
        if more:
            if body:
                self._write(body)
            return
        if self.remaining and not self.head_only:
            raise RuntimeError("Response content shorter than Content-Length.")
        if body:
            self._out.append(body)
        if self.chunked:
            self._out.append(LAST_CHUNK)
        self._flush_output()
        self._completed()

    def _completed(self) -> None:
        self.complete = True
        self._gone_cb = None
        self._wake()
        if not self.keep_alive:
            self.conn.transport.close()
        self.conn.exchange_done(self)

    # -- the app's task ----------------------------------------------------------------------------
    async def run(self, app: App) -> None:
        try:
            await app(self.scope, self.receive, self.send)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                log.debug("request task cancelled: %s", exc.args)
            else:
                log.error("Exception in ASGI application", exc_info=exc)
            self._abort()
        else:
            if not self.complete and not self.gone:
                log.error("ASGI app returned without %s the response.",
                          "completing" if self.started else "starting")
                self._abort()
        finally:
            # the hook in the scope refers back to this exchange: break the cycle so that reference counting
            # frees the request at once instead of the cyclic collector later
            self.scope.pop("extensions", None)

    def _abort(self) -> None:
        """The app failed: a plain 500 if nothing was sent yet, else the connection is cut (the client
        must see that the response is incomplete, never a fake end)."""
        if self.gone or self.complete:
            return
        transport = self.conn.transport
        if not self.started and not transport.is_closing():
            self.keep_alive = False
            transport.write(status_line(500) + self.conn.default_head() + PLAIN_500)
            self.complete = True
        else:
            self._flush_output()  # what the app sent before failing, then the cut
        transport.close()
