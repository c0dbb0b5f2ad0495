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
from sluice.metering.record import Asked, Outcome, Stats, Tokens, tokens_of
from sluice.metering.ticket import Ticket
from sluice.observability import metrics
from sluice.providers.base import Completion, NativeBody
from sluice.relay import Relay, RelayStream
from sluice.routing.affinity import session_of, session_of_header
from sluice.routing.fallback import Served, Tries
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
        """A relay request (`metered`: a ticket, the disconnect race, the drain, a ledger record), or an
        authenticated side request that is never billed (count_tokens, model listings)."""
        return RequestScope(self, scope, receive, send, rid, headers, door, auth, metered)


class RequestScope:
    """What a route works with inside `async with`: the `raw` body, the `key`, the relay calls (`stream`,
    `complete`), what served (`served`) and the tokens the record will say (`tokens`).

    It owns the request's outcome (status, error code, disconnect) and its one settlement: `_settle` is the
    only caller of `Relay.record` and `Relay.settle`; the first path to reach it (a route's `settle()` before
    its reply, a stream's `finish()` or `fail()`, or the scope's exit) settles, and a later one gets that
    record."""

    __slots__ = ("_asked", "_auth", "_disconnected", "_error_code", "_life", "_metered", "_receive", "_record",
                 "_session", "_started", "_stats", "_status", "_stream", "_ticket", "_tries", "_watch", "created_at",
                 "door", "headers", "key", "raw", "rid", "scope", "send")

    def __init__(self, life: Lifecycle, scope: Scope, receive: Receive, send: Send, rid: str, headers: Headers,
                 door: Door, auth: bytes | None, metered: bool) -> None:
        self._life = life
        self.scope, self._receive, self.send, self.rid, self.headers = scope, receive, send, rid, headers
        self.door = door
        self._auth = auth
        self._metered = metered
        self._watch: DisconnectWatch | None = None
        self._stream: RelayStream | None = None
        self._asked: Asked | None = None    # once the route named its request
        self._stats: Stats | None = None    # once an upstream answered
        self._status = 0
        self._error_code: str | None = None
        self._disconnected = False
        self._record: LedgerRecord | None = None
        self.raw = b""
        self.key: KeyRecord
        self._ticket: Ticket
        self._tries: Tries
        self._started = self.created_at = 0.0
        self._session: str | None = None

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
            self._open()
        return self

    def _open(self) -> None:
        """From here on the request is in flight and settles exactly once."""
        metrics.request_started()
        clock = self._life.relay.clock
        self._started, self.created_at = clock.monotonic(), clock.time()
        self._ticket = Ticket(self.rid)
        self._tries = Tries()
        self._session = session_of_header(header(self.scope, b"x-claude-code-session-id"))
        self._watch = DisconnectWatch(self._receive, self._life.inflight, self.scope)

    async def __aexit__(self, et: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> bool:
        try:
            return exc is not None and await self._ended_by(exc)
        finally:
            await self._release()

    def _ask(self, req: ChatRequest | None, session: str | None = None) -> Asked:
        """Who asked for what: the session from the header, else the one the front door read from its own
        body (`session`), else the canonical body's."""
        if req is not None and self._session is None:
            self._session = session or session_of(req.body)
        self._asked = asked = Asked(self.rid, _front_door(self.scope["path"]), self.key, self._started,
                                    self.created_at, req, self._session)
        return asked

    async def stream(self, req: ChatRequest, native: NativeBody | None = None, *,
                     session: str | None = None) -> RelayStream:
        """Open the upstream stream; the scope releases and settles it on exit."""
        asked = self._ask(req, session)
        self._stream = rs = await self._life.relay.stream(asked, req, self._ticket, self._tries, self._settle, native)
        self._stats, self._status = rs.stats, 200
        self._let_go(asked)
        return rs

    def _let_go(self, asked: Asked) -> None:
        """The upstream has the request and output may start (no failover after that): the scope keeps none
        of the body for the stream's life, neither the raw bytes nor the parsed request. The record needs
        only the request's small fields and the prompt estimate admission made (always, before any upstream
        was called), so the estimate stays exact."""
        self.raw = b""
        if asked.request is not None and self._ticket.prompt_estimate is not None:
            self._asked = asked._replace(request=asked.request.without_body())

    async def complete(self, req: ChatRequest, native: NativeBody | None = None, *,
                       session: str | None = None) -> tuple[Completion, Headers]:
        """The upstream's reply, and the headers admission adds (limits, a capped max_tokens)."""
        result, self._stats = await self._life.relay.complete(self._ask(req, session), req, self._ticket,
                                                              self._tries, native)
        self._status = 200
        return result, self._ticket.headers

    @property
    def served(self) -> Served:
        """The target that answered (or was tried last)."""
        return self._tries.served

    def tokens(self) -> Tokens:
        """What the record says was used: for a client that must be told the estimate when the upstream
        reported none."""
        asked = self._asked
        return tokens_of(self._stats or Stats(), self._ticket, asked.request if asked is not None else None)

    async def settle(self) -> LedgerRecord:
        """Settle now, before the reply is sent (the record is safe before the client sees it); the reply
        is then owed, so a disconnect no longer cancels it."""
        rec = await self._settle(None)
        if self._watch is not None:
            self._watch.done = True
        return rec

    async def _settle(self, error_code: str | None, *, durable: bool | None = None) -> LedgerRecord:
        """The request's one settlement: the first call assembles the record from the values its parts
        reported and writes it (a stream's `finish()`/`fail()` reach it through `RelayStream`); a later
        call gets the same record."""
        if self._record is not None:
            return self._record
        if error_code is not None:
            self._error_code = error_code
        asked = self._asked or self._ask(None)
        outcome = Outcome(self._status, self._error_code, self._disconnected)
        relay = self._life.relay
        # made before the first await: a cancel while it is written still finds it made
        self._record = rec = relay.record(asked, self._ticket, self._tries.served, self._stats or Stats(), outcome)
        await relay.settle(rec, self._ticket, durable=durable)
        return rec

    async def _ended_by(self, exc: BaseException) -> bool:
        """Answer how the request ended; True when that was its proper end (the exception is absorbed)."""
        if isinstance(exc, asyncio.CancelledError):
            cause = self._watch.cause(exc) if self._watch is not None else None
            if cause == CLIENT_GONE:
                self._disconnected = True
                if self._status == 0:
                    self._status = 499  # the client closed before we answered
            elif cause == SHUTDOWN:
                await self._cut_short()
            return cause is not None
        if isinstance(exc, SluiceError):
            if not self._metered:
                await self.door.send_error(self.send, exc, self.headers)
                return True
            self._error_code = exc.code or exc.type
            if self._status == 0:
                self._status = exc.status
                await self.door.send_error(self.send, exc, self.headers)
            return True
        if isinstance(exc, Exception):
            if not self._metered:
                await self._internal_error(exc)
                return True
            self._error_code = "internal_error"
            if self._status == 0:
                self._status = 500
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
        stream, self._stream = self._stream, None  # the stream holds `_settle`: no cycle left for the collector
        try:
            if stream is not None:
                await asyncio.shield(stream.close())
        finally:
            if self._record is None:  # (a shielded call costs a task: none for a request already settled)
                await asyncio.shield(self._settle(None, durable=False))

    async def _internal_error(self, exc: BaseException | None) -> None:
        """A 500 in the front door's envelope; what went wrong stays in the server log."""
        log.error("unexpected error in %s %s", self.scope["path"], self.rid, exc_info=exc or True)
        await self.door.send_error(self.send, SluiceError("The server had an error processing your request."),
                                   self.headers)

    async def _cut_short(self) -> None:
        """The server's shutdown grace ran out: a request not answered yet gets a 503, an open stream a last
        error event; both say `server_shutdown`, and the stream is settled before the client sees its end."""
        exc = ServerShutdown()
        self._error_code = exc.code
        self._disconnected = self._watch is not None and self._watch.gone
        try:
            if self._stream is None:
                if self._status == 0:
                    self._status = exc.status
                await self.door.send_error(self.send, exc, self.headers)
            else:
                await self._stream.fail(exc)
                await self.send({"type": "http.response.body", "body": self.door.stream_error(exc),
                                 "more_body": False})
        except Exception:  # e.g. cut before the response had started: the connection just closes
            log.warning("could not tell %s that the server is shutting down", self.rid, exc_info=True)


_DOORS: dict[str, str] = {}


def _front_door(path: str) -> str:
    """`/v1/chat/completions` -> `chat_completions`: a bounded label, as only relay routes get here."""
    door = _DOORS.get(path)
    if door is None:
        door = path.removeprefix("/v1/").strip("/").replace("/", "_")
        if len(_DOORS) < 64:
            _DOORS[path] = door
    return door
