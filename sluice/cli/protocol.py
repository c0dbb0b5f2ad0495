"""uvicorn's httptools protocol with the client-side limits nginx has: head size and header count, time to
send the head and the body, and protocol errors answered in the OpenAI error envelope with x-request-id.

uvicorn bounds none of these itself (its httptools parser buffers a header line of any length, and a
connection that sends nothing is held until the client leaves). `configure()` sets the limits from
`[server]` in each serving process, before the first connection.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from sluice.config import ServerConfig
from sluice.relay import new_request_id

LINGER_SECONDS = 2.0  # after refusing a request, read and drop what the client still sends, then close


class _Refuse(Exception):
    """Raised in a parser callback: answer with this status and error code, then close."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class SluiceHttpProtocol(HttpToolsProtocol):
    # class-wide, set once per process by configure(); the defaults are nginx's
    max_line = 8 << 10           # the request line, or one header (large_client_header_buffers 4 8k)
    max_head = 32 << 10          # request line and headers together
    max_headers = 100
    header_timeout = 60.0        # from the first byte of a request (or the connection) to its last header
    body_timeout = 60.0          # between two reads of a request body

    @classmethod
    def configure(cls, s: ServerConfig) -> None:
        cls.max_line = s.max_header_bytes
        cls.max_head = s.max_head_bytes
        cls.max_headers = s.max_headers
        cls.header_timeout = s.header_timeout_seconds
        cls.body_timeout = s.body_timeout_seconds

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_started = False  # a request's first bytes came, its last header has not
        self._in_body = False
        self._head_bytes = 0
        self._nheaders = 0
        self._url_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout, self._head_timed_out)  # a connection that never says anything

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering: drop what the client still sends
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
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
        super().on_message_begin()
        self._head_started = True
        self._head_bytes = 0
        self._nheaders = 0
        self._url_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url_bytes += len(url)
        if self._url_bytes > self.max_line:
            raise _Refuse(414, "request_uri_too_long", f"The request URL is longer than {self.max_line} bytes.")
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._nheaders += 1
        if self._nheaders > self.max_headers:
            raise _Refuse(431, "request_header_fields_too_large",
                          f"The request has more than {self.max_headers} headers.")
        if len(name) + len(value) > self.max_line:
            raise _Refuse(431, "request_header_fields_too_large",
                          f"A request header is larger than {self.max_line} bytes.")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_started = False
        self._in_body = True
        self._head_bytes = 0
        self._disarm()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        self._disarm()
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, "invalid_http_request", msg)

    # -- timers and refusals -----------------------------------------------------------------------
    def _arm(self, seconds: float, fire: Any) -> None:
        self._timer = self.loop.call_later(seconds, fire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_timed_out(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if not self._head_started:
            self.transport.close()  # nothing of a request arrived: nobody to answer
            return
        self._refuse(408, "request_timeout", f"The request headers did not arrive within {self.header_timeout:g}s.")

    def _body_timed_out(self) -> None:
        self._timer = None
        cycle = self.cycle
        if self.transport.is_closing() or cycle is None or cycle.response_started:
            return  # the app answered without waiting for the body: nothing to refuse
        if self.flow.read_paused:  # the app is behind, not the client: keep waiting
            self._arm(self.body_timeout, self._body_timed_out)
            return
        cycle.disconnected = True  # the app's receive() now says http.disconnect; its answer is dropped
        cycle.message_event.set()
        self._refuse(408, "request_timeout", f"The request body did not arrive within {self.body_timeout:g}s.")

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer in the OpenAI error envelope, half-close, and close once the client has had time to read it
        (closing with unread bytes pending would reset the connection and lose the answer)."""
        if self._refused or self.transport.is_closing():
            return
        self._refused = True
        self._disarm()
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        err = "invalid_request_error" if status < 500 else "server_error"
        body = orjson.dumps({"error": {"message": message, "type": err, "param": None, "code": code}})
        head = [STATUS_LINE[status], b"content-type: application/json\r\n",
                b"x-request-id: " + new_request_id().encode() + b"\r\n",
                b"content-length: " + str(len(body)).encode() + b"\r\n", b"connection: close\r\n\r\n"]
        self.transport.write(b"".join(head) + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._timer = self.loop.call_later(LINGER_SECONDS, self.transport.close)
