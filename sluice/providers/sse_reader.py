"""An upstream event stream read through the bounded SSE decoder: limits and progress in one place.

Every provider's stream reads through `EventReader`, so an over-long line or event becomes one clear
`UpstreamError`, and only complete events (not comments, not pings, not bytes that never form an
event) count as progress for the upstream's idle timeout.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from sluice.errors import UpstreamError
from sluice.sse import SSEDecoder, SSEEvent, SSELimitExceeded
from sluice.upstream import Response


class EventReader:
    """`async for events in reader.batches()`: the events completed by each read of the body."""

    __slots__ = ("_decoder", "_resp")

    def __init__(self, resp: Response) -> None:
        lim = resp.limits
        self._resp = resp
        self._decoder = SSEDecoder(lim.max_line, lim.max_event)
        resp.mark_progress()  # the head: idle now counts until the first complete event

    async def batches(self) -> AsyncIterator[list[SSEEvent]]:
        resp = self._resp
        async for data in resp.iter_chunks():
            events = self._feed(data)
            # one clock read per read: progress when an event other than a keep-alive ping completed
            if events and (events[-1].event != "ping" or any(ev.event != "ping" for ev in events)):
                resp.mark_progress()
            else:
                resp.check_progress()
            if events:
                yield events

    def finish(self) -> list[SSEEvent]:
        """At EOF: an event whose closing blank line never came."""
        return self._feed(b"\n\n")

    def _feed(self, data: bytes) -> list[SSEEvent]:
        try:
            return self._decoder.feed(data)
        except SSELimitExceeded as exc:
            self._resp.close()
            raise UpstreamError(f"the upstream's event stream broke a limit: {exc}",
                                code="upstream_event_too_large") from None
