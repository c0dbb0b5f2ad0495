"""Accounts, groups, balance events and redemption codes in the database, through the store's two
generic primitives (`fetch_rows`, `guarded`), so the same SQL serves SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import orjson

from sluice.accounts.records import AccountRecord, BalanceEvent, CodeRecord, GroupRecord
from sluice.storage import sql
from sluice.storage.base import Stmt, Store

_ACCOUNT_COLS = "id, name, group_name, enabled, credit, spent, reserved, created_at"
_CODE_COLS = "code_hash, batch_id, amount, group_name, expires_at, created_at, redeemed_at, redeemed_by, account_id"
_INSERT_EVENT = "INSERT INTO balance_events (account_id, kind, amount, note, ref, created_at) VALUES (?, ?, ?, ?, ?, ?)"
_CODES_PER_INSERT = 100


def _account(row: Sequence[Any]) -> AccountRecord:
    return AccountRecord(id=row[0], name=row[1], group=row[2], enabled=bool(row[3]), credit=int(row[4]),
                         spent=int(row[5]), reserved=int(row[6]), created_at=float(row[7]))


def _group(row: Sequence[Any]) -> GroupRecord:
    models = orjson.loads(row[2]) if row[2] else {}
    return GroupRecord(row[0], Decimal(row[1]), {m: Decimal(v) for m, v in models.items()}, float(row[3]))


def _code(row: Sequence[Any]) -> CodeRecord:
    return CodeRecord(row[0], row[1], int(row[2]), row[3], row[4], float(row[5]), row[6], row[7], row[8])


class AccountStore:
    def __init__(self, store: Store) -> None:
        self._db = store

    # --- accounts ---
    async def create_account(self, rec: AccountRecord) -> None:
        rec.created_at = rec.created_at or time.time()
        await self._db.fetch_rows(f"INSERT INTO accounts ({_ACCOUNT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                  (rec.id, rec.name, rec.group, int(rec.enabled), rec.credit, rec.spent,
                                   rec.reserved, rec.created_at))

    async def get_account(self, account_id: str) -> AccountRecord | None:
        rows = await self._db.fetch_rows(f"SELECT {_ACCOUNT_COLS} FROM accounts WHERE id = ?", (account_id,))
        return _account(rows[0]) if rows else None

    async def list_accounts(self) -> list[AccountRecord]:
        return [_account(r) for r in await self._db.fetch_rows(
            f"SELECT {_ACCOUNT_COLS} FROM accounts ORDER BY created_at")]

    async def update_account(self, account_id: str, changes: dict[str, Any]) -> AccountRecord | None:
        cols = {"name": "name", "group": "group_name", "enabled": "enabled"}
        sets = [(cols[k], int(v) if k == "enabled" else v) for k, v in changes.items() if k in cols]
        if sets:
            await self._db.fetch_rows(f"UPDATE accounts SET {', '.join(c + ' = ?' for c, _ in sets)} WHERE id = ?",
                                      (*(v for _, v in sets), account_id))
        return await self.get_account(account_id)

    async def credit(self, account_id: str, nanos: int, kind: str, note: str | None = None,
                     cap: int | None = None) -> AccountRecord | None:
        """Add `nanos` (negative for an adjustment down) and record the balance event, in one transaction.
        With `cap`, only while the credit stays within [-cap, cap], checked by the UPDATE itself so that
        concurrent top-ups cannot pass it together. None: no such account, or the cap refused it."""
        now = time.time()
        bound = "" if cap is None else " AND credit + ? BETWEEN ? AND ?"
        args: tuple[Any, ...] = (nanos, account_id) if cap is None else (nanos, account_id, nanos, -cap, cap)
        got = await self._db.guarded(
            (f"UPDATE accounts SET credit = credit + ? WHERE id = ?{bound} RETURNING id", args),
            lambda _: [(_INSERT_EVENT, (account_id, kind, nanos, note, None, now))])
        return await self.get_account(account_id) if got is not None else None

    async def keys_of(self, account_id: str) -> list[str]:
        return [r[0] for r in await self._db.fetch_rows("SELECT id FROM keys WHERE account_id = ?", (account_id,))]

    # --- groups ---
    async def set_group(self, g: GroupRecord) -> GroupRecord:
        models = orjson.dumps({m: str(v) for m, v in g.models.items()}).decode() if g.models else None
        g.created_at = g.created_at or time.time()
        await self._db.fetch_rows(
            "INSERT INTO groups (name, multiplier, model_multipliers, created_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET multiplier = excluded.multiplier, "
            "model_multipliers = excluded.model_multipliers", (g.name, str(g.multiplier), models, g.created_at))
        return g

    async def get_group(self, name: str) -> GroupRecord | None:
        rows = await self._db.fetch_rows(
            "SELECT name, multiplier, model_multipliers, created_at FROM groups WHERE name = ?", (name,))
        return _group(rows[0]) if rows else None

    async def list_groups(self) -> list[GroupRecord]:
        return [_group(r) for r in await self._db.fetch_rows(
            "SELECT name, multiplier, model_multipliers, created_at FROM groups ORDER BY name")]

    # --- redemption codes ---
    async def add_codes(self, codes: list[CodeRecord]) -> None:
        for i in range(0, len(codes), _CODES_PER_INSERT):
            part = codes[i:i + _CODES_PER_INSERT]
            values = ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(part))
            args = [v for c in part for v in (c.code_hash, c.batch_id, c.amount, c.group, c.expires_at, c.created_at)]
            await self._db.fetch_rows("INSERT INTO redemption_codes (code_hash, batch_id, amount, group_name, "
                                      f"expires_at, created_at) VALUES {values}", args)

    async def get_code(self, code_hash: str) -> CodeRecord | None:
        rows = await self._db.fetch_rows(f"SELECT {_CODE_COLS} FROM redemption_codes WHERE code_hash = ?",
                                         (code_hash,))
        return _code(rows[0]) if rows else None

    async def list_codes(self, batch_id: str | None = None, limit: int = 1000) -> list[CodeRecord]:
        where, args = (" WHERE batch_id = ?", (batch_id,)) if batch_id else ("", ())
        return [_code(r) for r in await self._db.fetch_rows(
            f"SELECT {_CODE_COLS} FROM redemption_codes{where} ORDER BY created_at DESC, code_hash "
            f"LIMIT {max(1, min(limit, 100_000))}", args)]

    async def redeem(self, code_hash: str, key_id: str, account_id: str | None) -> tuple[int, str | None] | None:
        """Mark the code used by this key and credit its account (or, for a key without one, its own
        budget), all in one transaction; the conditional UPDATE lets exactly one of any number of
        concurrent redemptions through, on any instance. (amount, group) or None if unusable."""
        now = time.time()

        def credit(row: tuple[Any, ...]) -> list[Stmt]:
            amount, group, batch = int(row[0]), row[1], row[2]
            if account_id is None:
                return [(sql.TOP_UP, (amount, amount, key_id)), (sql.INSERT_TOPUP, (key_id, amount, now))]
            out: list[Stmt] = [("UPDATE accounts SET credit = credit + ? WHERE id = ?", (amount, account_id)),
                               (_INSERT_EVENT, (account_id, "redeem", amount, None, batch, now))]
            if group:
                out.append(("UPDATE accounts SET group_name = ? WHERE id = ?", (group, account_id)))
            return out
        row = await self._db.guarded(
            ("UPDATE redemption_codes SET redeemed_at = ?, redeemed_by = ?, account_id = ? WHERE code_hash = ? "
             "AND redeemed_at IS NULL AND (expires_at IS NULL OR expires_at > ?) "
             "RETURNING amount, group_name, batch_id", (now, key_id, account_id, code_hash, now)), credit)
        return (int(row[0]), row[1]) if row is not None else None

    # --- history ---
    async def history(self, account_id: str, since: float | None = None, limit: int = 200) -> list[BalanceEvent]:
        """Every change of the balance, newest first: the events, and the request charges summed per UTC day
        from the ledger (no write per request)."""
        since = since or 0.0
        events = [BalanceEvent(r[0], int(r[1]), float(r[4]), r[2], r[3]) for r in await self._db.fetch_rows(
            "SELECT kind, amount, note, ref, created_at FROM balance_events WHERE account_id = ? AND created_at >= ?",
            (account_id, since))]
        for day, cost, n in await self._db.fetch_rows(   # the log, and the days retention rolled up
                "SELECT day, sum(cost), sum(n) FROM (SELECT floor(created_at / 86400) * 86400 AS day, cost, 1 AS n "
                "FROM ledger WHERE account_id = ? AND created_at >= ? AND cost > 0 UNION ALL SELECT day, cost, "
                "requests FROM usage_daily WHERE account_id = ? AND day >= ? AND cost > 0) c GROUP BY day",
                (account_id, since, account_id, since)):
            events.append(BalanceEvent("charges", -int(cost), float(day), None, f"{int(n)} requests"))
        events.sort(key=lambda e: e.created_at, reverse=True)
        return events[:max(1, min(limit, 10_000))]
