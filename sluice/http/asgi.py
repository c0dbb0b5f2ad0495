"""Small pure-ASGI helpers: typed aliases, body reading with a size limit, JSON and error responses."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from sluice.errors import BodyTooLarge, InvalidRequest, SluiceError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON_CT = (b"content-type", b"application/json")


_HEADER_MAP = "sluice.header_map"


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a request header (names are lower case in ASGI). The request's headers are made a
    dict once, on the first look-up (a request looks up four or five)."""
    found = scope.get(_HEADER_MAP)
    if found is None:
        found = scope[_HEADER_MAP] = dict(reversed(scope["headers"]))  # reversed: the first value wins
    return found.get(name)


def credentials(scope: Scope) -> bytes | None:
    """The client's key as a Bearer header value: `x-api-key` (Anthropic's SDKs) or `Authorization`."""
    api_key = header(scope, b"x-api-key")
    return b"Bearer " + api_key if api_key else header(scope, b"authorization")


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    cl = header(scope, b"content-length")
    if cl is not None:
        try:
            if int(cl) > limit:
                raise BodyTooLarge(f"The request body is larger than the limit of {limit} bytes.")
        except ValueError:
            raise InvalidRequest("Invalid Content-Length header.") from None
    msg = await receive()
    body: bytes = msg.get("body", b"")
    if not msg.get("more_body"):
        if len(body) > limit:
            raise BodyTooLarge(f"The request body is larger than the limit of {limit} bytes.")
        return body
    parts = [body]
    size = len(body)
    while msg.get("more_body"):
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ClientGone()
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"The request body is larger than the limit of {limit} bytes.")
        parts.append(chunk)
    return b"".join(parts)


class ClientGone(Exception):
    """The client disconnected before we answered."""


async def send_bytes(send: Send, status: int, body: bytes, headers: Headers) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_json(send: Send, status: int, doc: Any, headers: Headers) -> None:
    await send_bytes(send, status, orjson.dumps(doc), [JSON_CT, *headers])


async def send_error(send: Send, exc: SluiceError, headers: Headers) -> None:
    await send_bytes(send, exc.status, exc.to_body(), [JSON_CT, *exc.headers(), *headers])
