"""Which web origins may read a response: one policy for the API and the console, and a separate one for
/admin/*, which no origin may call from a browser unless `server.admin_cors_origins` names it."""

from __future__ import annotations


class CorsPolicy:
    def __init__(self, origins: list[str]) -> None:
        self._any = "*" in origins
        self._origins = {o.encode() for o in origins}

    def allow(self, origin: bytes | None) -> bytes | None:
        """The Access-Control-Allow-Origin value for a request from `origin`; None: none is sent."""
        if origin is None or not (self._any or origin in self._origins):
            return None
        return b"*" if self._any else origin
