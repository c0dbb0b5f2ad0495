"""Sluice's HTTP/1.1 server protocol on asyncio (uvloop) and httptools, run by uvicorn's `Server` (sockets,
workers, signals, lifespan) in place of uvicorn's own protocol: keep-alive, pipelined requests answered in
order, and the client-side limits nginx has (head size and header count, time to send the head and the body),
with what it refuses answered in the OpenAI error envelope with x-request-id.

The contract uvicorn's `Server` relies on: constructed as `cls(config=, server_state=, app_state=, _loop=)`,
each connection in `server_state.connections` and each request's task in `server_state.tasks`, `shutdown()`
closes an idle connection or lets the open response finish with `connection: close`.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import unquote

import httptools

from sluice.config import ServerConfig
from sluice.server.exchange import App, Exchange
from sluice.server.wire import ON_DISCONNECT, DefaultHead, refusal

LINGER_SECONDS = 2.0  # after refusing a request, read and drop what the client still sends, then close
ASGI = {"version": "3.0", "spec_version": "2.3"}


class ServerState(Protocol):
    """What uvicorn's `Server` shares with every connection it accepts."""

    connections: set[Any]
    tasks: set[asyncio.Task[None]]
    default_headers: list[tuple[bytes, bytes]]
    total_requests: int


class ServerConfigLike(Protocol):
    """The part of uvicorn's `Config` the protocol reads."""

    loaded: bool
    loaded_app: Any
    timeout_keep_alive: float

    def load(self) -> None: ...


class _Refuse(Exception):
    """Raised in a parser callback: answer with this status and error code, then close."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# what a lost connection's `parser` becomes (see `connection_lost`)
_LOST = httptools.HttpRequestParser(object())


class HttpProtocol(asyncio.Protocol):
    # class-wide, set once per process by configure(); the defaults are nginx's
    max_line = 8 << 10           # the request line, or one header (large_client_header_buffers 4 8k)
    max_head = 32 << 10          # request line and headers together
    max_headers = 100
    header_timeout = 60.0        # from the first byte of a request (or the connection) to its last header
    body_timeout = 60.0          # between two reads of a request body
    request_id: Callable[[], str] = staticmethod(lambda: "req_" + secrets.token_hex(12))
    _default_head = DefaultHead()

    @classmethod
    def configure(cls, s: ServerConfig, request_id: Callable[[], str] | None = None) -> None:
        cls.max_line = s.max_header_bytes
        cls.max_head = s.max_head_bytes
        cls.max_headers = s.max_headers
        cls.header_timeout = s.header_timeout_seconds
        cls.body_timeout = s.body_timeout_seconds
        if request_id is not None:
            cls.request_id = staticmethod(request_id)

    def __init__(self, config: ServerConfigLike, server_state: ServerState, app_state: Any = None,
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        if not config.loaded:
            config.load()
        self.app: App = config.loaded_app
        self.loop = _loop or asyncio.get_event_loop()
        self.keepalive_timeout = config.timeout_keep_alive
        self.state = server_state
        self.parser = httptools.HttpRequestParser(self)
        # answer the first of pipelined requests even when it says `Connection: close`
        self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.client: tuple[str, int] | None = None
        self.server: tuple[str, int] | None = None
        self.scheme = "http"
        self.parsing: Exchange | None = None  # the request whose body the parser is reading
        self.active: Exchange | None = None   # the request the app is answering
        self.queue: deque[Exchange] = deque()  # pipelined requests waiting for it
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.expect_100 = False
        self.reading_paused = False
        self.write_paused = False
        self._drain: list[asyncio.Future[None]] = []
        self._timer: asyncio.TimerHandle | None = None       # header, body or linger deadline
        self._idle_timer: asyncio.TimerHandle | None = None  # keep-alive
        self._head_started = False  # a request's first bytes came, its last header has not
        self._in_body = False
        self._head_bytes = self._nheaders = self._url_bytes = 0
        self._deaf = False  # refused or upgraded: what the client still sends is dropped

    # -- connection --------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.state.connections.add(self)
        self.client = _addr(transport.get_extra_info("peername"))
        self.server = _addr(transport.get_extra_info("sockname"))
        if transport.get_extra_info("sslcontext") is not None:
            self.scheme = "https"
        self._arm(self.header_timeout, self._head_timed_out)  # a connection that never says anything

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.connections.discard(self)
        self._disarm()
        self._idle_off()
        self.queue.clear()
        # an exchange refers back to its connection and the live parser to our bound methods: both dropped
        # here (a lost exchange never completes, and nothing feeds a lost connection), so that reference
        # counting frees the connection instead of the cyclic collector
        ex, self.active = self.active, None
        if ex is not None:
            ex.lost()
        ex, self.parsing = self.parsing, None
        if ex is not None:
            ex.lost()
        self.parser = _LOST
        self.resume_writing()
        if exc is None:
            self.transport.close()

    def eof_received(self) -> bool | None:
        return None  # a half-closed client is a client gone: close

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        waiters, self._drain = self._drain, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    async def drain(self) -> None:
        """Wait until the client has read enough that the transport's buffer is below its low mark."""
        w = self.loop.create_future()
        self._drain.append(w)
        await w

    def pause_reading(self) -> None:
        if not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and not self.queue:
            self.reading_paused = False
            self.transport.resume_reading()

    def default_head(self) -> bytes:
        return self._default_head.get(self.state.default_headers)

    def shutdown(self) -> None:
        """The server is stopping: close now if idle, else once the response in progress is complete."""
        ex = self.active
        self.queue.clear()
        if ex is None or ex.complete:
            self.transport.close()
        else:
            ex.keep_alive = False

    def data_received(self, data: bytes) -> None:
        if self._deaf:
            return
        self._idle_off()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._deaf = True  # no upgrades here: the request is answered as plain HTTP, then the connection closes
            for ex in (self.parsing, self.active, *self.queue):
                if ex is not None:
                    ex.keep_alive = False
            return
        except httptools.HttpParserError as exc:
            why = exc.__context__
            if isinstance(why, _Refuse):
                self._refuse(why.status, why.code, why.message)
            else:
                self._refuse(400, "invalid_http_request", f"Invalid HTTP request: {exc}.")
            return
        if self._head_started:
            # a head still incomplete after N bytes is at least N bytes long
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head:
                self._refuse(431, "request_header_fields_too_large",
                             f"The request line and headers are larger than {self.max_head} bytes.")
            elif self._timer is None:
                self._arm(self.header_timeout, self._head_timed_out)
        elif self._in_body:
            self._disarm()
            self._arm(self.body_timeout, self._body_timed_out)

    # -- parser callbacks --------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._head_started = True
        self._head_bytes = self._nheaders = self._url_bytes = 0
        self.url = b""
        self.headers = []
        self.expect_100 = False

    def on_url(self, url: bytes) -> None:
        self._url_bytes += len(url)
        if self._url_bytes > self.max_line:
            raise _Refuse(414, "request_uri_too_long", f"The request URL is longer than {self.max_line} bytes.")
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._nheaders += 1
        if self._nheaders > self.max_headers:
            raise _Refuse(431, "request_header_fields_too_large",
                          f"The request has more than {self.max_headers} headers.")
        if len(name) + len(value) > self.max_line:
            raise _Refuse(431, "request_header_fields_too_large",
                          f"A request header is larger than {self.max_line} bytes.")
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100 = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._head_started = False
        self._in_body = True
        self._head_bytes = 0
        self._disarm()
        parser = self.parser
        version = parser.get_http_version()
        method = parser.get_method().decode("ascii")
        raw_path, query = _split_target(self.url)
        try:
            path = raw_path.decode("ascii")
        except UnicodeDecodeError:
            raise _Refuse(400, "invalid_http_request", "The request URL is not ASCII.") from None
        if "%" in path:
            path = unquote(path)
        scope: dict[str, Any] = {
            "type": "http", "asgi": ASGI, "http_version": version, "method": method, "scheme": self.scheme,
            "path": path, "raw_path": raw_path, "query_string": query, "root_path": "", "headers": self.headers,
            "client": self.client, "server": self.server}
        http10 = version == "1.0"
        ex = Exchange(self, scope, keep_alive=not http10 and parser.should_keep_alive(),
                      expect_100=self.expect_100, http10=http10, head_only=method == "HEAD")
        scope["extensions"] = {ON_DISCONNECT: ex.on_disconnect}
        self.parsing = ex
        if self.active is None:
            self._run(ex)
        else:
            self.queue.append(ex)
            self.pause_reading()

    def on_body(self, body: bytes) -> None:
        if self.parsing is not None:
            self.parsing.feed(body)

    def on_message_complete(self) -> None:
        self._in_body = False
        self._disarm()
        ex, self.parsing = self.parsing, None
        if ex is not None:
            ex.end_of_body()
        self._maybe_idle()

    # -- requests ----------------------------------------------------------------------------------
    def _run(self, ex: Exchange) -> None:
        self.active = ex
        task = self.loop.create_task(ex.run(self.app))
        tasks = self.state.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def exchange_done(self, ex: Exchange) -> None:
        """`ex`'s response is complete: start the next pipelined request, or wait for one (keep-alive)."""
        self.state.total_requests += 1
        if self.active is ex:
            self.active = None
        if self.transport.is_closing():
            return
        if self.queue:
            self._run(self.queue.popleft())
        self.resume_reading()
        self._maybe_idle()

    def _maybe_idle(self) -> None:
        if (self.active is None and self.parsing is None and not self._head_started and not self.queue
                and not self._deaf and not self.transport.is_closing()):
            self._idle_off()
            self._idle_timer = self.loop.call_later(self.keepalive_timeout, self._idle_timed_out)

    def _idle_off(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _idle_timed_out(self) -> None:
        self._idle_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    # -- timers and refusals -----------------------------------------------------------------------
    def _arm(self, seconds: float, fire: Callable[[], None]) -> None:
        self._timer = self.loop.call_later(seconds, fire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_timed_out(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self.active is not None and not self.active.complete:  # a pipelined head waits for its turn
            self._arm(self.header_timeout, self._head_timed_out)
            return
        if not self._head_started:
            self.transport.close()  # nothing of a request arrived: nobody to answer
            return
        self._refuse(408, "request_timeout", f"The request headers did not arrive within {self.header_timeout:g}s.")

    def _body_timed_out(self) -> None:
        self._timer = None
        ex = self.parsing
        if self.transport.is_closing() or ex is None:
            return
        if ex.complete:  # answered without the body, which stopped coming: nothing left to do here
            self.transport.close()
            return
        if ex.started or self.reading_paused:  # answering, or the app is behind (not the client): wait on
            self._arm(self.body_timeout, self._body_timed_out)
            return
        self._refuse(408, "request_timeout", f"The request body did not arrive within {self.body_timeout:g}s.")

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer in the OpenAI error envelope, half-close, and close once the client has had time to read it
        (closing with unread bytes pending would reset the connection and lose the answer). A request still
        being answered is cut instead (its response cannot be interleaved with another)."""
        if self._deaf or self.transport.is_closing():
            return
        self._deaf = True
        self._disarm()
        self._idle_off()
        busy = self.active is not None and self.active.started and not self.active.complete
        for ex in (self.active, self.parsing, *self.queue):
            if ex is not None:
                ex.lost()
        self.queue.clear()
        if busy:
            self.transport.close()
            return
        self.transport.write(refusal(status, code, message, self.request_id(), self.default_head()))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._timer = self.loop.call_later(LINGER_SECONDS, self.transport.close)


def _split_target(url: bytes) -> tuple[bytes, bytes]:
    """The path and query of a request target (origin-form fast, absolute-form through httptools)."""
    if url[:1] == b"/" and b"#" not in url:
        path, _, query = url.partition(b"?")
        return path, query
    parsed = httptools.parse_url(url)
    return parsed.path or b"/", parsed.query or b""


def _addr(info: Any) -> tuple[str, int] | None:
    if isinstance(info, tuple) and len(info) >= 2:
        return str(info[0]), int(info[1])
    return None
