"""The admin token: the configured one, or on a first start of the embedded SQLite store one Sluice
creates itself (`sadm-` + 43 random characters), stored only as a SHA-256 hash in a file next to the
database (created with O_EXCL, so of several processes starting at once exactly one writes it)."""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from sluice.auth.keys import hash_key
from sluice.config import Settings, sqlite_path

PREFIX = "sadm-"
FILE_NAME = "admin-token.sha256"


def token_file(settings: Settings) -> Path | None:
    """Where a generated token's hash lives: beside the SQLite database; None for PostgreSQL (configure one)."""
    url = settings.storage.url
    return sqlite_path(url).parent / FILE_NAME if url.startswith("sqlite:///") else None


def create_first_admin_token(settings: Settings) -> str | None:
    """A new token's secret if none is configured and none was created before; else None."""
    path = token_file(settings)
    if settings.admin.token or path is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = PREFIX + secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return None
    with os.fdopen(fd, "w") as f:
        f.write(hash_key(secret) + "\n")
    return secret


class AdminToken:
    """Checks a presented bearer token against the configured token or the stored hash, in constant time."""

    def __init__(self, configured: str | None, stored_hash: str | None) -> None:
        self._hashes = [hash_key(t) for t in (configured,) if t] + ([stored_hash] if stored_hash else [])

    @classmethod
    def from_settings(cls, settings: Settings) -> AdminToken:
        path = token_file(settings)
        stored = None
        if path is not None and path.is_file():
            stored = path.read_text(encoding="ascii").strip() or None
        return cls(settings.admin.token, stored)

    @property
    def enabled(self) -> bool:
        return bool(self._hashes)

    def check(self, authorization: bytes | None) -> bool:
        scheme, _, value = (authorization or b"").decode("latin-1").partition(" ")
        if scheme.lower() != "bearer":
            return False
        got = hash_key(value.strip())
        ok = False
        for h in self._hashes:  # no early exit: the time taken does not tell which matched
            ok |= hmac.compare_digest(got, h)
        return ok
