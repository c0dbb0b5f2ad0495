"""The transport seam: what providers need from an upstream HTTP client, as protocols.

`UpstreamClient` (the real keep-alive pool) and `sluice.upstream.mock.MockTransport` (scripted replies,
in process) both satisfy `Transport`; providers are typed against these protocols only."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from sluice.upstream import Timeouts, UpstreamLimits


class Response(Protocol):
    """An upstream's answer: status and headers now, the body as it arrives. Close it in a `finally`."""

    status: int
    headers: Mapping[str, str]  # lower-case names

    @property
    def limits(self) -> UpstreamLimits: ...

    def mark_progress(self) -> None:
        """A complete event arrived: the idle timeout counts from now."""

    def check_progress(self) -> None:
        """Raise `UpstreamTimeout` when bytes kept coming but no event completed within the idle timeout."""

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body, at most `limit` bytes (default: the limits' `max_reply`)."""
        ...

    async def read_error_body(self) -> bytes:
        """An error reply's body, or b"" when it cannot be read."""
        ...

    def iter_chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive, in whatever pieces the transport got them."""
        ...

    def close(self) -> None:
        """Done with the body (read to its end or not)."""


class Transport(Protocol):
    """Sends one request and waits for the head; every failure is a `sluice.errors.UpstreamError`."""

    limits: UpstreamLimits

    async def request(self, method: str, url: str, *, headers: Mapping[str, str], body: bytes | None,
                      timeouts: Timeouts) -> Response: ...

    def variant(self, *, proxy: str | None, ca_file: str | None) -> Transport:
        """The transport for a provider with its own outbound proxy and/or CA file (closed with this one)."""
        ...

    async def aclose(self) -> None: ...
