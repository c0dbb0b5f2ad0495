"""SQL for money held on accounts, shared by the SQLite and PostgreSQL stores (qmark placeholders).

A reservation of a key that belongs to an account holds the same amount on the key (its own sub-budget
and quota, when it has them) and on the account, or on neither. Every writer locks rows in one order:
keys by id, then accounts by id; reservation batches take their key holds first, then their account
holds, and give back the key hold of a reservation whose account refused it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sluice.storage.base import LedgerRecord, Reservation

# The account's own check, as sql.RESERVE is the key's. Parameters: nanos, account_id, nanos.
RESERVE_ACCOUNT = ("UPDATE accounts SET reserved = reserved + ? WHERE id = ? AND enabled = 1 "
                   "AND spent + reserved + ? <= credit RETURNING id")
INSERT_RESERVATION = ("INSERT INTO reservations (request_id, key_id, amount, tokens, instance_id, created_at, "
                      "account_id) VALUES (?, ?, ?, ?, ?, ?, ?)")
SETTLE_ACCOUNT = "UPDATE accounts SET spent = spent + ?, reserved = reserved - ? WHERE id = ?"
RELEASE_ACCOUNT = "UPDATE accounts SET reserved = reserved - ? WHERE id = ?"


def reservation_row(r: Reservation, now: float) -> tuple[Any, ...]:
    return (r.request_id, r.key_id, r.nanos, r.tokens, r.instance_id, now, r.account_id)


def account_order(batch: Sequence[Reservation], granted: Sequence[bool]) -> list[int]:
    """Indexes of the key-granted reservations that also need their account, by account id (a stable
    sort: arrival order within each account)."""
    idx = [i for i, r in enumerate(batch) if granted[i] and r.account_id is not None]
    return sorted(idx, key=lambda i: batch[i].account_id or "")


def account_settlements(new: list[LedgerRecord], held: list[Any]) -> list[tuple[int, int, str]]:
    """SETTLE_ACCOUNT parameters, one row per account sorted by id: the cost of the newly written records
    charged to their account, and the reservations they took back (rows of request_id, key_id, amount,
    tokens, account_id) released from the account that held them."""
    per: dict[str, list[int]] = {}
    for rec in new:
        if rec.account_id is not None and rec.key_id is not None and rec.cost:
            per.setdefault(rec.account_id, [0, 0])[0] += rec.cost
    for row in held:
        if row[4] is not None and row[2]:
            per.setdefault(row[4], [0, 0])[1] += row[2]
    return [(c[0], c[1], a) for a, c in sorted(per.items()) if any(c)]


def account_releases(stale: list[Any]) -> list[tuple[int, str]]:
    """RELEASE_ACCOUNT parameters for reservations taken back by reconciliation (key_id, amount, tokens,
    account_id), one per account sorted by id."""
    per: dict[str, int] = {}
    for row in stale:
        if row[3] is not None:
            per[row[3]] = per.get(row[3], 0) + row[1]
    return [(amount, a) for a, amount in sorted(per.items()) if amount]
