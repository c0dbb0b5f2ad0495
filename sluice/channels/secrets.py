"""Upstream keys at rest: Fernet (AES-128-CBC + HMAC-SHA256, from `cryptography`) under a key derived
from `channels.secret`. Without a secret, the database holds no upstream keys at all."""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sluice.errors import Conflict

_PREFIX = "fernet1:"


class SecretBox:
    def __init__(self, secret: str | None) -> None:
        self._fernet: Fernet | None = None
        if secret:
            raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                       info=b"sluice channel upstream keys").derive(secret.encode())
            self._fernet = Fernet(base64.urlsafe_b64encode(raw))

    def seal(self, plain: str) -> str:
        if self._fernet is None:
            raise Conflict("Storing upstream keys needs channels.secret (or SLUICE_CHANNELS_SECRET) set "
                                 "on the server, to encrypt them.", code="channels_secret_missing")
        return _PREFIX + self._fernet.encrypt(plain.encode()).decode()

    def open(self, sealed: str) -> str | None:
        """The plain text, or None when it cannot be read here (no secret, another secret, damaged)."""
        if self._fernet is None or not sealed.startswith(_PREFIX):
            return None
        try:
            return self._fernet.decrypt(sealed[len(_PREFIX):].encode()).decode()
        except InvalidToken:
            return None
