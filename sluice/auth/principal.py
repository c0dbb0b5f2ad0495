"""Bearer header -> the key record it proves, with a short-lived cache that revocation here clears at once.

Other processes see a revocation within `ttl` seconds (the cache lifetime).
"""

from __future__ import annotations

from sluice.auth.keys import key_id, matches
from sluice.clock import SYSTEM_CLOCK, Clock
from sluice.errors import AuthenticationFailed
from sluice.storage.base import KeyRecord, Store

_MISSING = ("You didn't provide an API key. Send it in the Authorization header: "
            "'Authorization: Bearer sk-...'.")


class Authenticator:
    def __init__(self, store: Store, *, ttl: float = 2.0, max_entries: int = 100_000,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self._store = store
        self._clock = clock
        self._ttl = ttl
        self._max = max_entries
        self._cache: dict[str, tuple[KeyRecord | None, float]] = {}

    async def authenticate(self, header: bytes | str | None) -> KeyRecord:
        """The active key the header proves; AuthenticationFailed otherwise. Never echoes the key."""
        key = _bearer(header)
        kid = key_id(key)
        if kid is None:
            raise AuthenticationFailed("Incorrect API key provided.")
        hit = self._cache.get(kid)
        now = self._clock.monotonic()
        if hit is not None and hit[1] > now:
            rec = hit[0]
        else:
            rec = await self._store.get_key(kid)
            if len(self._cache) >= self._max:
                self._cache.clear()
            self._cache[kid] = (rec, now + self._ttl)
        if rec is None or not matches(key, rec.key_hash):
            raise AuthenticationFailed("Incorrect API key provided.")
        if not rec.active:
            raise AuthenticationFailed("This API key has been revoked or disabled.", code="key_revoked")
        return rec

    def forget(self, kid: str) -> None:
        self._cache.pop(kid, None)


def _bearer(header: bytes | str | None) -> str:
    if not header:
        raise AuthenticationFailed(_MISSING)
    text = header.decode("latin-1") if isinstance(header, bytes) else header
    scheme, _, value = text.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        if text.startswith("sk-"):
            return text.strip()  # some clients send the bare key
        raise AuthenticationFailed(_MISSING)
    return value.strip()
