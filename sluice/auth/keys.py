"""Key format: `sk-` + a 12-character public id + a 40-character secret. Only a SHA-256 hash is stored.

The secret carries ~238 bits of entropy, so a fast hash is the right one (no password stretching);
comparison is constant-time. The public id finds the record without revealing anything.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string

PREFIX = "sk-"
ID_LEN = 12
SECRET_LEN = 40
KEY_LEN = len(PREFIX) + ID_LEN + SECRET_LEN
_ALPHABET = string.ascii_letters + string.digits
_ID_ALPHABET = string.ascii_lowercase + string.digits


def new_key() -> tuple[str, str]:
    """(key id, full secret key)."""
    kid = "".join(secrets.choice(_ID_ALPHABET) for _ in range(ID_LEN))
    secret = "".join(secrets.choice(_ALPHABET) for _ in range(SECRET_LEN))
    return kid, PREFIX + kid + secret


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_id(key: str) -> str | None:
    """The public id of a well-formed key, else None."""
    if len(key) != KEY_LEN or not key.startswith(PREFIX):
        return None
    return key[len(PREFIX):len(PREFIX) + ID_LEN]


def matches(key: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_key(key), stored_hash)


def redact(key: str) -> str:
    """What may appear in logs and listings: the prefix and public id only."""
    kid = key_id(key)
    return f"{PREFIX}{kid}…" if kid else "sk-…"
