"""Session affinity: one client session stays on one target while that target is healthy, so the
upstream's prompt cache keeps hitting. A bounded LRU map, consulted before the weighted pick."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import orjson

from sluice.routing.table import Target

MAX_SESSION_ID = 200  # longer ids are cut: they only key a map and a ledger column


def session_of(body: Mapping[str, Any], header: bytes | None = None) -> str | None:
    """The client's session id: the `X-Claude-Code-Session-Id` header, else `session_id` or
    `prompt_cache_key` from the body, else the session inside Claude Code's `metadata.user_id`
    (`user_..._session_<uuid>`, or a JSON object with `session_id`), which arrives here as `user`."""
    if header:
        return _clean(header.decode("latin-1"))
    for name in ("session_id", "prompt_cache_key"):
        v = body.get(name)
        if isinstance(v, str) and v:
            return _clean(v)
    meta = body.get("metadata")
    user = meta.get("user_id") if isinstance(meta, dict) else body.get("user")
    if not isinstance(user, str):
        return None
    if "_session_" in user:
        return _clean(user.rsplit("_session_", 1)[1])
    if user.startswith("{"):
        try:
            doc = orjson.loads(user)
        except orjson.JSONDecodeError:
            return None
        sid = doc.get("session_id") if isinstance(doc, dict) else None
        return _clean(sid) if isinstance(sid, str) else None
    return None


def _clean(v: str) -> str | None:
    v = v.strip()[:MAX_SESSION_ID]
    return v or None


class SessionAffinity:
    """(model, session) -> the target that last served it, least recently used dropped first."""

    def __init__(self, max_sessions: int = 100_000) -> None:
        self._max = max_sessions
        self._pins: OrderedDict[tuple[str, str], tuple[str, str]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pins)

    def prefer(self, model: str, session: str | None, order: list[Target]) -> list[Target]:
        """`order` with the session's pinned target moved first, when it is still among the targets
        (the caller has already dropped none: cooldowns are applied after, so a cooling target falls
        back to the weighted order by itself)."""
        if session is None:
            return order
        pin = self._pins.get((model, session))
        if pin is None:
            return order
        for i, t in enumerate(order):
            if (t.provider, t.model) == pin:
                self._pins.move_to_end((model, session))
                return [t, *order[:i], *order[i + 1:]] if i else order
        return order

    def remember(self, model: str, session: str | None, provider: str | None, upstream_model: str | None) -> None:
        if session is None or provider is None or upstream_model is None:
            return
        key = (model, session)
        self._pins[key] = (provider, upstream_model)
        self._pins.move_to_end(key)
        if len(self._pins) > self._max:
            self._pins.popitem(last=False)
