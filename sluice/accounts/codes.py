"""Redemption codes: made in batches, shown once (text or CSV), stored as SHA-256 hashes, redeemed once.

A code is `SLC-` + four groups of four characters from a 32-letter alphabet without look-alikes
(80 random bits), so guessing one is hopeless and a fast hash is the right one, as for keys.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import secrets
import time

from sluice.accounts.records import CodeRecord
from sluice.accounts.store import AccountStore
from sluice.errors import Conflict, InvalidRequest, NotFound, SluiceError
from sluice.metering.pricing import fmt_money
from sluice.storage.base import KeyRecord

_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"   # no I, O, 0, 1
PREFIX = "SLC-"
MAX_BATCH = 10_000


def new_code() -> str:
    raw = "".join(secrets.choice(_ALPHABET) for _ in range(16))
    return PREFIX + "-".join(raw[i:i + 4] for i in range(0, 16, 4))


def code_hash(code: str) -> str:
    """The hash of a code as a customer may type it: case, spaces and dashes do not matter."""
    norm = "".join(ch for ch in code.upper() if ch.isalnum())
    return hashlib.sha256(norm.encode()).hexdigest()


async def create_batch(accounts: AccountStore, count: int, amount: int, *, expires_at: float | None = None,
                       group: str | None = None) -> tuple[str, list[str]]:
    """(batch id, the codes in clear): the only time they exist outside the customer's hands."""
    if not 1 <= count <= MAX_BATCH:
        raise InvalidRequest(f"'count' must be between 1 and {MAX_BATCH}", param="count")
    if amount <= 0:
        raise InvalidRequest("'amount' must be positive", param="amount")
    if expires_at is not None and expires_at <= time.time():
        raise Conflict("'expires_at' must be in the future", param="expires_at", code="already_expired")
    batch = "cb_" + os.urandom(6).hex()
    now = time.time()
    codes = [new_code() for _ in range(count)]
    await accounts.add_codes([CodeRecord(code_hash(c), batch, amount, group, expires_at, now) for c in codes])
    return batch, codes


def export_csv(batch: str, codes: list[str], amount: int, expires_at: float | None, group: str | None) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["code", "amount", "expires_at", "group", "batch_id"])
    for c in codes:
        w.writerow([c, fmt_money(amount), "" if expires_at is None else f"{expires_at:.0f}", group or "", batch])
    return out.getvalue()


async def redeem(accounts: AccountStore, key: KeyRecord, code: object) -> tuple[int, str | None]:
    """Redeem for the key's account (or the key's own budget); clear errors for unknown, used, expired."""
    if not isinstance(code, str) or not 4 <= len(code) <= 64:
        raise InvalidRequest("'code' must be a redemption code string", param="code")
    h = code_hash(code)
    got = await accounts.redeem(h, key.id, key.account_id)
    if got is not None:
        return got
    rec = await accounts.get_code(h)
    if rec is None:
        raise NotFound("This redemption code does not exist. Check it for typos.", code="code_not_found")
    if rec.redeemed_at is not None:
        raise Conflict("This redemption code has already been used.", code="code_already_used")
    raise SluiceError("This redemption code has expired.", status=410, type="invalid_request_error",
                      code="code_expired")
