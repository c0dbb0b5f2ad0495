"""The bytes the server writes itself: status lines, the server-wide default headers (Date) as one cached
block, and the error envelope for the requests it refuses before any app sees them."""

from __future__ import annotations

import http

import orjson

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"

# the `scope["extensions"]` key of the disconnect hook (see `Exchange.on_disconnect`)
ON_DISCONNECT = "sluice.on_disconnect"


def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase.encode()
    except ValueError:
        phrase = b""
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase)


STATUS_LINES = {status: _status_line(status) for status in range(100, 600)}


def status_line(status: int) -> bytes:
    line = STATUS_LINES.get(status)
    if line is None:
        raise RuntimeError(f"Invalid HTTP status {status!r}.")
    return line


class DefaultHead:
    """`default_headers` (uvicorn refreshes the Date in it once a second) as one block of bytes, rebuilt only
    when the server swaps the list."""

    __slots__ = ("_block", "_src")

    def __init__(self) -> None:
        self._src: list[tuple[bytes, bytes]] | None = None
        self._block = b""

    def get(self, headers: list[tuple[bytes, bytes]]) -> bytes:
        if headers is not self._src:
            self._src = headers
            self._block = b"".join(b"%s: %s\r\n" % (name, value) for name, value in headers)
        return self._block


def refusal(status: int, code: str, message: str, request_id: str, default_head: bytes) -> bytes:
    """A complete `connection: close` response in the OpenAI error envelope, for a request refused by the
    server's own limits (too large a head, too slow, not HTTP)."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = orjson.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}})
    return b"".join((status_line(status), default_head, b"content-type: application/json\r\n",
                     b"x-request-id: ", request_id.encode(), b"\r\n",
                     b"content-length: %d\r\n" % len(body), b"connection: close\r\n\r\n", body))


PLAIN_500 = (b"content-type: text/plain; charset=utf-8\r\ncontent-length: 21\r\nconnection: close\r\n\r\n"
             b"Internal Server Error")
