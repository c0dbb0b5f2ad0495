"""An in-process `Transport` for tests and docs: a handler sees each request and scripts the reply.

    transport = MockTransport(lambda req: MockReply.events([b'{"choices": []}'], done=True))
    app = create_app(settings, transport=transport)

Pieces arrive exactly as scripted (so fragmentation is under the test's control), with optional
`Delay`s and `Fail`ures between them. Nothing touches a socket."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

from sluice.errors import UpstreamError, UpstreamTimeout
from sluice.sse import DONE, encode_data
from sluice.upstream import Timeouts, UpstreamLimits, _too_large


@dataclass(frozen=True, slots=True)
class MockRequest:
    """What a provider sent: header names lower-cased, the body as bytes (b"" when none)."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    timeouts: Timeouts


@dataclass(frozen=True, slots=True)
class Delay:
    """Wait before the next piece. Longer than the request's idle timeout: the read fails at once with the
    idle timeout, as the real client would after waiting (no test sits through it)."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Fail:
    """Raise `error` when the reader reaches this point of the body (a cut connection, say)."""

    error: BaseException


Piece = bytes | Delay | Fail


@dataclass(slots=True)
class MockReply:
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    pieces: list[Piece] = field(default_factory=list)

    @classmethod
    def json(cls, body: bytes, status: int = 200, headers: Mapping[str, str] | None = None) -> MockReply:
        return cls(status, {"content-type": "application/json", **(headers or {})}, [body])

    @classmethod
    def events(cls, payloads: Iterable[bytes], *, done: bool = True, status: int = 200) -> MockReply:
        """An event stream of `data:` events, one piece each, ending with `[DONE]` when `done`."""
        pieces: list[Piece] = [encode_data(p) for p in payloads]
        if done:
            pieces.append(encode_data(DONE))
        return cls(status, {"content-type": "text/event-stream"}, pieces)


Handler = Callable[[MockRequest], MockReply | Awaitable[MockReply]]


class MockResponse:
    """A scripted reply read through the `Response` protocol; `closed` tells a test it was released."""

    def __init__(self, reply: MockReply, limits: UpstreamLimits, idle: float) -> None:
        self.status = reply.status
        self.headers: Mapping[str, str] = {k.lower(): v for k, v in reply.headers.items()}
        self.limits = limits
        self.closed = False
        self.progress_marks = 0
        self._pieces = list(reply.pieces)
        self._idle = idle

    def mark_progress(self) -> None:
        self.progress_marks += 1

    def check_progress(self) -> None:
        return None  # scripted bytes never trickle past the idle timeout unless a Delay says so

    async def read(self, limit: int | None = None) -> bytes:
        limit = self.limits.max_reply if limit is None else limit
        body = bytearray()
        async for part in self.iter_chunks():
            body += part
            if len(body) > limit:
                self.close()
                raise _too_large(limit)
        return bytes(body)

    async def read_error_body(self) -> bytes:
        try:
            return await self.read(1 << 20)
        except UpstreamError:
            return b""

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        try:
            while self._pieces and not self.closed:
                piece = self._pieces.pop(0)
                if isinstance(piece, Delay):
                    if piece.seconds > self._idle:
                        raise UpstreamTimeout(f"the upstream sent nothing for {self._idle:g}s")
                    await asyncio.sleep(piece.seconds)
                elif isinstance(piece, Fail):
                    raise piece.error
                elif piece:
                    yield piece
        finally:
            self.close()

    def close(self) -> None:
        self.closed = True


class MockTransport:
    """Answers every request with what `handler(request)` returns (a `MockReply`, or an awaitable of one).
    A handler that raises an `UpstreamError` plays a failed connection; one slower than the request's
    first-byte timeout plays an upstream that never answered. `requests` and `responses` record it all."""

    def __init__(self, handler: Handler, *, limits: UpstreamLimits | None = None) -> None:
        self.limits = limits or UpstreamLimits()
        self._handler = handler
        self.requests: list[MockRequest] = []
        self.responses: list[MockResponse] = []
        self.closed = False

    async def request(self, method: str, url: str, *, headers: Mapping[str, str], body: bytes | None,
                      timeouts: Timeouts) -> MockResponse:
        req = MockRequest(method, url, {k.lower(): v for k, v in headers.items()}, body or b"", timeouts)
        self.requests.append(req)
        got = self._handler(req)
        if inspect.isawaitable(got):
            try:
                async with asyncio.timeout(timeouts.first_byte):
                    got = await got
            except TimeoutError:
                raise UpstreamTimeout(f"the upstream did not answer within {timeouts.first_byte:g}s") from None
        assert isinstance(got, MockReply), f"a MockTransport handler returned {type(got).__name__}"
        resp = MockResponse(got, self.limits, timeouts.idle)
        self.responses.append(resp)
        return resp

    def variant(self, *, proxy: str | None, ca_file: str | None) -> MockTransport:
        """The same script: a proxy or CA file changes how a real client connects, not what it gets."""
        return self

    async def aclose(self) -> None:
        self.closed = True
