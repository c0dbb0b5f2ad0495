"""One request's life in one scope: read the body, authenticate, register with the drain, race the client's
disconnect, answer every failure in the front door's envelope (with x-request-id), and settle exactly once
on exit. Routes are straight code inside `async with lifecycle.scope(...) as req:`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType

from sluice.errors import ServerShutdown, SluiceError
from sluice.http.asgi import ClientGone, Headers, Receive, Scope, Send, header, read_body
from sluice.http.disconnect import CLIENT_GONE, SHUTDOWN, DisconnectWatch
from sluice.metering.meter import Meter
from sluice.observability import metrics
from sluice.providers.base import Completion, NativeBody
from sluice.relay import Relay, RelayStream
from sluice.routing.affinity import session_of
from sluice.schema.chat import ChatRequest
from sluice.storage.base import KeyRecord, LedgerRecord

log = logging.getLogger("sluice.http")

SendError = Callable[[Send, SluiceError, Headers], Awaitable[None]]
StreamError = Callable[[SluiceError], bytes]


@dataclass(frozen=True, slots=True)
class Door:
    """How a front door states a failure: as a response before the 200, as a stream's last event after."""

    send_error: SendError
    stream_error: StreamError


class Answered(Exception):
    """Raised by entering a scope when the request already ended there (the client left while sending its
    body, or the error response was sent); the app ends the request quietly."""


class Lifecycle:
    """One per app: what every scope shares (the relay, the body limit, the drain's in-flight set)."""

    __slots__ = ("inflight", "max_body", "relay")

    def __init__(self, relay: Relay, *, max_body: int, inflight: set[DisconnectWatch]) -> None:
        self.relay = relay
        self.max_body = max_body
        self.inflight = inflight

    def scope(self, scope: Scope, receive: Receive, send: Send, rid: str, headers: Headers, door: Door, *,
              auth: bytes | None, metered: bool = True) -> RequestScope:
        """A relay request (`metered`: a meter, the disconnect race, the drain, a ledger record), or an
        authenticated side request that is never billed (count_tokens, model listings)."""
        return RequestScope(self, scope, receive, send, rid, headers, door, auth, metered)


class RequestScope:
    """What a route works with inside `async with`: `raw` body, `key`, `meter`, and the relay calls."""

    __slots__ = ("_auth", "_life", "_metered", "_receive", "_record", "_settled", "_stream", "_watch", "door",
                 "headers", "key", "meter", "raw", "rid", "scope", "send")

    def __init__(self, life: Lifecycle, scope: Scope, receive: Receive, send: Send, rid: str, headers: Headers,
                 door: Door, auth: bytes | None, metered: bool) -> None:
        self._life = life
        self.scope, self._receive, self.send, self.rid, self.headers = scope, receive, send, rid, headers
        self.door = door
        self._auth = auth
        self._metered = metered
        self._watch: DisconnectWatch | None = None
        self._stream: RelayStream | None = None
        self._settled = False
        self._record: LedgerRecord | None = None
        self.raw = b""
        self.key: KeyRecord
        self.meter: Meter

    async def __aenter__(self) -> RequestScope:
        try:
            self.raw = await read_body(self.scope, self._receive, self._life.max_body)
            self.key = await self._life.relay.auth.authenticate(self._auth)
        except ClientGone:
            raise Answered from None
        except SluiceError as exc:
            if self._metered:
                metrics.rejected(_front_door(self.scope["path"]), exc.code)
            await self.door.send_error(self.send, exc, self.headers)
            raise Answered from None
        except Exception:
            await self._internal_error(None)
            raise Answered from None
        if self._metered:
            self._open_meter()
        return self

    def _open_meter(self) -> None:
        key = self.key
        self.meter = meter = self._life.relay.meter(self.rid, _front_door(self.scope["path"]))
        meter.key_id, meter.key_name, meter.account = key.id, key.name, key.owner
        meter.session_id = session_of({}, header(self.scope, b"x-claude-code-session-id"))
        self._watch = DisconnectWatch(self._receive, self._life.inflight, self.scope)

    async def __aexit__(self, et: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> bool:
        try:
            return exc is not None and await self._ended_by(exc)
        finally:
            await self._release()

    async def stream(self, req: ChatRequest, native: NativeBody | None = None) -> RelayStream:
        """Open the upstream stream; the scope releases and settles it on exit."""
        self._stream = await self._life.relay.stream(self.key, req, self.meter, native)
        return self._stream

    async def complete(self, req: ChatRequest, native: NativeBody | None = None) -> tuple[Completion, Headers]:
        return await self._life.relay.complete(self.key, req, self.meter, native)

    async def settle(self) -> LedgerRecord | None:
        """Settle now, before the reply is sent (the record is safe before the client sees it); the reply
        is then owed, so a disconnect no longer cancels it."""
        self._record = await self._life.relay.settle(self.meter)
        self._settled = True
        if self._watch is not None:
            self._watch.done = True
        return self._record

    async def _ended_by(self, exc: BaseException) -> bool:
        """Answer how the request ended; True when that was its proper end (the exception is absorbed)."""
        if isinstance(exc, asyncio.CancelledError):
            cause = self._watch.cause(exc) if self._watch is not None else None
            if cause == CLIENT_GONE:
                self.meter.disconnected = True
                if self.meter.status == 0:
                    self.meter.status = 499  # the client closed before we answered
            elif cause == SHUTDOWN:
                await self._cut_short()
            return cause is not None
        if isinstance(exc, SluiceError):
            if not self._metered:
                await self.door.send_error(self.send, exc, self.headers)
                return True
            self.meter.error_code = exc.code or exc.type
            if self.meter.status == 0:
                self.meter.status = exc.status
                await self.door.send_error(self.send, exc, self.headers)
            return True
        if isinstance(exc, Exception):
            if not self._metered:
                await self._internal_error(exc)
                return True
            self.meter.error_code = "internal_error"
            if self.meter.status == 0:
                self.meter.status = 500
                await self._internal_error(exc)
            else:
                log.error("unexpected error in %s %s", self.scope["path"], self.rid, exc_info=exc)
            return True
        return False

    async def _release(self) -> None:
        """Stop the watch, release the upstream, settle unless done: runs once, however the request ended."""
        if self._watch is None:
            return
        self._watch.stop()
        if self._stream is not None:
            await asyncio.shield(self._stream.close(disconnected=self.meter.disconnected))
        elif not self._settled:
            await asyncio.shield(self._life.relay.settle(self.meter, durable=False))

    async def _internal_error(self, exc: BaseException | None) -> None:
        """A 500 in the front door's envelope; what went wrong stays in the server log."""
        log.error("unexpected error in %s %s", self.scope["path"], self.rid, exc_info=exc or True)
        await self.door.send_error(self.send, SluiceError("The server had an error processing your request."),
                                   self.headers)

    async def _cut_short(self) -> None:
        """The server's shutdown grace ran out: a request not answered yet gets a 503, an open stream a last
        error event; both say `server_shutdown`, and the stream is settled before the client sees its end."""
        exc = ServerShutdown()
        meter = self.meter
        meter.error_code = exc.code
        meter.disconnected = self._watch is not None and self._watch.gone
        try:
            if self._stream is None:
                if meter.status == 0:
                    meter.status = exc.status
                await self.door.send_error(self.send, exc, self.headers)
            else:
                await self._stream.fail(exc)
                await self.send({"type": "http.response.body", "body": self.door.stream_error(exc),
                                 "more_body": False})
        except Exception:  # e.g. cut before the response had started: the connection just closes
            log.warning("could not tell %s that the server is shutting down", meter.request_id, exc_info=True)


def _front_door(path: str) -> str:
    """`/v1/chat/completions` -> `chat_completions`: a bounded label, as only relay routes get here."""
    return path.removeprefix("/v1/").strip("/").replace("/", "_")
