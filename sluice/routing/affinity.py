"""Session affinity: one client session goes to the same target from every instance while that target is
healthy, so the upstream's prompt cache keeps hitting. Rendezvous hashing, no state; and where the
session id comes from."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from sluice.rendezvous import ranked
from sluice.routing.table import Route, Target

MAX_SESSION_ID = 200  # longer ids are cut: they only seed a hash and fill a ledger column


def session_of(body: Mapping[str, Any], header: bytes | None = None) -> str | None:
    """The client's session id: the `X-Claude-Code-Session-Id` header, else `session_id` or
    `prompt_cache_key` from the body, else the session inside Claude Code's `metadata.user_id`
    (`user_..._session_<uuid>`, or a JSON object with `session_id`), which arrives here as `user`."""
    if header:
        return session_of_header(header)
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


def session_of_header(header: bytes | None) -> str | None:
    """The session id the `X-Claude-Code-Session-Id` header gives, if any (`session_of` without a body)."""
    return _clean(header.decode("latin-1")) if header else None


def _clean(v: str) -> str | None:
    v = v.strip()[:MAX_SESSION_ID]
    return v or None


def session_order(route: Route, session: str) -> list[Target]:
    """The order to try `route`'s targets for a session: tier by tier, ranked by weighted rendezvous hashing
    of (public model, session), so every instance picks the same first target for the session and, when
    it fails or cools down, the same next one. Targets of weight 0 stay out of a tier of several, as in
    the weighted pick. A target added or removed moves only the sessions it wins or won."""
    seed = f"{route.name}\0{session}"
    out: list[Target] = []
    for tier in route.tiers:
        if len(tier) == 1:
            out.extend(tier)
        else:
            out.extend(ranked(seed, [t for t in tier if t.weight > 0], _ident, _weight))
    return out


def _ident(t: Target) -> str:
    return f"{t.provider}\0{t.model}"


def _weight(t: Target) -> float:
    return t.weight
