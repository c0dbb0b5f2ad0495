"""Readiness and the graceful stop as the app sees them: `/ready` answers 503 once `begin()` ran, and
`cut()` ends the relay requests still open when the shutdown grace runs out (the signal side, what
calls these and when, is `sluice/cli/serve.py`).
"""

from __future__ import annotations

import logging

from sluice.http.disconnect import DisconnectWatch

log = logging.getLogger("sluice")


class Drain:
    """One per app. `inflight` holds every relay request from authentication to its end (a set add and
    discard per request, nothing per chunk); a request removes itself when it ends."""

    __slots__ = ("draining", "inflight")

    def __init__(self) -> None:
        self.draining = False
        self.inflight: set[DisconnectWatch] = set()

    def begin(self) -> bool:
        """Stop saying ready (everything is still served); True the first time. Safe in a signal handler."""
        first = not self.draining
        self.draining = True
        return first

    def cut(self) -> int:
        """Cancel every open relay request; each ends itself with a `server_shutdown` error (a 503, or an
        error event on a stream) and is settled once. Returns how many were cut."""
        self.draining = True
        n = sum(w.interrupt() for w in list(self.inflight))
        if n:
            log.warning("shutdown grace over: ending %d open request(s) with server_shutdown", n)
        return n
