"""One request's lifecycle, shared by every relay route: read the body, authenticate, meter, watch for a
disconnect, map errors to the route's envelope, and settle exactly once however the request ended
(a server shutdown whose grace ran out included).

Routes supply only what differs: where the key comes from, how the body is served, how an error looks
before the 200 (`send_error`) and after it, as a stream's last event (`stream_error`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from sluice.errors import ServerShutdown, SluiceError
from sluice.http.asgi import ClientGone, Headers, Receive, Scope, Send, header, read_body
from sluice.http.streaming import DisconnectWatch
from sluice.metering.meter import Meter
from sluice.observability import metrics
from sluice.relay import Relay, RelayStream
from sluice.routing.affinity import session_of
from sluice.storage.base import KeyRecord

log = logging.getLogger("sluice.http")

SendError = Callable[[Send, SluiceError, Headers], Awaitable[None]]
StreamError = Callable[[SluiceError], bytes]


class Exchange:
    """What a route's `serve` callback works with; it sets `stream` once an upstream stream is open."""

    __slots__ = ("key", "meter", "raw", "stream", "watch")

    def __init__(self, key: KeyRecord, raw: bytes, meter: Meter, watch: DisconnectWatch) -> None:
        self.key = key
        self.raw = raw
        self.meter = meter
        self.watch = watch
        self.stream: RelayStream | None = None


async def run_exchange(relay: Relay, scope: Scope, receive: Receive, send: Send, rid: str, headers: Headers, *,
                       max_body: int, auth: bytes | None, inflight: set[DisconnectWatch],
                       serve: Callable[[Exchange], Awaitable[None]], send_error: SendError,
                       stream_error: StreamError) -> None:
    try:
        raw = await read_body(scope, receive, max_body)
        key = await relay.auth.authenticate(auth)
    except ClientGone:
        return
    except SluiceError as exc:
        metrics.rejected(_front_door(scope["path"]), exc.code)
        await send_error(send, exc, headers)
        return
    meter = relay.meter(rid, _front_door(scope["path"]))
    meter.key_id = key.id
    meter.key_name, meter.account = key.name, key.owner
    meter.session_id = session_of({}, header(scope, b"x-claude-code-session-id"))
    ex = Exchange(key, raw, meter, DisconnectWatch(receive, inflight))
    try:
        await serve(ex)
    except asyncio.CancelledError:
        if ex.watch.absorb():
            meter.disconnected = True
            if meter.status == 0:
                meter.status = 499  # client closed before we answered
        elif ex.watch.absorb_stop():
            await _cut_short(ex, send, headers, send_error, stream_error)
        else:
            raise
    except SluiceError as exc:
        meter.error_code = exc.code or exc.type
        if meter.status == 0:
            meter.status = exc.status
            await send_error(send, exc, headers)
    except Exception:
        log.exception("unexpected error in %s %s", scope["path"], rid)
        meter.error_code = "internal_error"
        if meter.status == 0:
            meter.status = 500
            await send_error(send, SluiceError("The server had an error processing your request."), headers)
    finally:
        ex.watch.stop()
        if ex.stream is not None:
            await asyncio.shield(ex.stream.close(disconnected=meter.disconnected))
        else:
            await asyncio.shield(relay.settle(meter, durable=False))


def _front_door(path: str) -> str:
    """`/v1/chat/completions` -> `chat_completions`: a bounded label, as only relay routes get here."""
    return path.removeprefix("/v1/").strip("/").replace("/", "_")


async def _cut_short(ex: Exchange, send: Send, headers: Headers, send_error: SendError,
                     stream_error: StreamError) -> None:
    """The server's shutdown grace ran out: a request not answered yet gets a 503, an open stream a last
    error event; both say `server_shutdown`, and the stream is settled before the client sees its end."""
    exc = ServerShutdown()
    meter = ex.meter
    meter.error_code = exc.code
    meter.disconnected = ex.watch.gone
    try:
        if ex.stream is None:
            if meter.status == 0:
                meter.status = exc.status
            await send_error(send, exc, headers)
        else:
            await ex.stream.fail(exc)
            await send({"type": "http.response.body", "body": stream_error(exc), "more_body": False})
    except Exception:  # e.g. cut before the response had started: the connection just closes
        log.warning("could not tell %s that the server is shutting down", meter.request_id, exc_info=True)
