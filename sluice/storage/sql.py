"""SQL shared by the SQLite and PostgreSQL stores (qmark placeholders; `to_dollar()` converts for asyncpg),
the mapping between rows and records, and the batch arithmetic both share (repeats, per-key settlement
sums). Where the dialects agree they run the same statements; where batches need dialect features
(json_each, unnest/ANY, data-modifying CTEs) the store keeps its own. The same storage tests hold for both.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from typing import Any

import orjson

from sluice.storage.base import KeyRecord, LedgerQuery, LedgerRecord, Reservation, UsageRow

KEY_COLS = ("id", "name", "key_hash", "owner", "models", "enabled", "revoked", "created_at", "expires_at",
            "budget", "spent", "reserved", "token_quota", "tokens_used", "tokens_reserved", "period",
            "period_start", "rpm", "tpm", "max_concurrency", "metadata", "account_id")
LEDGER_COLS = ("request_id", "key_id", "model", "provider", "upstream_model", "stream", "status",
               "prompt_tokens", "completion_tokens", "cached_tokens", "usage_source", "ttft_ms", "duration_ms",
               "disconnected", "error_code", "attempts", "cost", "created_at", "extra", "account_id",
               "cache_write_5m_tokens", "cache_write_1h_tokens", "session_id")

SELECT_KEY = f"SELECT {', '.join(KEY_COLS)} FROM keys"
INSERT_KEY = f"INSERT INTO keys ({', '.join(KEY_COLS)}) VALUES ({', '.join('?' * len(KEY_COLS))})"
SELECT_LEDGER = f"SELECT {', '.join(LEDGER_COLS)} FROM ledger"
INSERT_LEDGER = (f"INSERT INTO ledger ({', '.join(LEDGER_COLS)}) VALUES ({', '.join('?' * len(LEDGER_COLS))}) "
                 "ON CONFLICT (request_id) DO NOTHING")

# The one check that keeps a key from overspending, run once per reservation (also in a batch): it
# passes only if this amount still fits after everything already held, and the request holds nothing yet.
# Parameters: nanos, tokens, key_id, nanos, tokens, request_id.
RESERVE = ("UPDATE keys SET reserved = reserved + ?, tokens_reserved = tokens_reserved + ? "
           "WHERE id = ? AND (budget IS NULL OR spent + reserved + ? <= budget) "
           "AND (token_quota IS NULL OR tokens_used + tokens_reserved + ? <= token_quota) "
           "AND NOT EXISTS (SELECT 1 FROM reservations WHERE request_id = ?) RETURNING id")
SETTLE = ("UPDATE keys SET spent = spent + ?, reserved = reserved - ?, tokens_used = tokens_used + ?, "
          "tokens_reserved = tokens_reserved - ? WHERE id = ?")
RELEASE = "UPDATE keys SET reserved = reserved - ?, tokens_reserved = tokens_reserved - ? WHERE id = ?"
HEARTBEAT = ("INSERT INTO instances (id, started_at, last_seen) VALUES (?, ?, ?) "
             "ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen")
TAKE_STALE = ("DELETE FROM reservations WHERE created_at < ? OR instance_id NOT IN "
              "(SELECT id FROM instances WHERE last_seen >= ?) RETURNING key_id, amount, tokens, account_id")
FORGET_INSTANCES = "DELETE FROM instances WHERE last_seen < ?"
RESET_PERIODS = ("UPDATE keys SET spent = 0, tokens_used = 0, period_start = ? WHERE period IS NOT NULL AND "
                 "((period = 'day' AND period_start + 86400 <= ?) OR (period = 'week' AND period_start + 604800 <= ?)"
                 " OR (period = 'month' AND period_start + 2592000 <= ?))")
TOP_UP = ("UPDATE keys SET budget = CASE WHEN budget IS NULL THEN spent + ? ELSE budget + ? END "
          "WHERE id = ? RETURNING id")
INSERT_TOPUP = "INSERT INTO topups (key_id, amount, created_at) VALUES (?, ?, ?)"
# What usage reads: the request log and, for the periods retention rolled up, its daily sums (status 0,
# so a status filter reads the log alone). One row stands for `n` requests, `errs` of them failed.
# Prompt-cache reads and writes are summed apart; the daily sums keep no cache split (NULL adds nothing).
USAGE_SOURCE = ("(SELECT key_id, model, status, created_at, 1 AS n, prompt_tokens, completion_tokens, "
                "CASE WHEN status >= 400 THEN 1 ELSE 0 END AS errs, cost, cached_tokens, cache_write_5m_tokens, "
                "cache_write_1h_tokens FROM ledger UNION ALL "
                "SELECT key_id, model, 0, day, requests, prompt_tokens, completion_tokens, errors, cost, NULL, NULL, "
                "NULL FROM usage_daily)")
_CACHE_SUMS = ("coalesce(sum(l.cached_tokens), 0), coalesce(sum(l.cache_write_5m_tokens), 0), "
               "coalesce(sum(l.cache_write_1h_tokens), 0)")
USAGE_SUMMARY = ("SELECT l.key_id, k.name, l.model, sum(l.n), coalesce(sum(l.prompt_tokens), 0), "
                 "coalesce(sum(l.completion_tokens), 0), sum(l.errs), "
                 f"coalesce(sum(l.cost), 0), {_CACHE_SUMS}, NULL FROM {USAGE_SOURCE} l "
                 "LEFT JOIN keys k ON k.id = l.key_id "
                 "GROUP BY l.key_id, k.name, l.model ORDER BY k.name, l.model")

INSERT_QUARANTINE = ("INSERT INTO ledger_quarantine (request_id, key_id, record, error, created_at) "
                     "VALUES (?, ?, ?, ?, ?) ON CONFLICT (request_id) DO NOTHING")
SELECT_UPSTREAM_KEYS = "SELECT provider, key_id, state, reason, changed_at FROM upstream_key_states"
PUT_UPSTREAM_KEY = ("INSERT INTO upstream_key_states (provider, key_id, state, reason, changed_at) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (provider, key_id) DO UPDATE SET state = excluded.state, "
                    "reason = excluded.reason, changed_at = excluded.changed_at")

CATALOG_VERSION = "SELECT version FROM catalog_version WHERE id = 1"
SELECT_CATALOG = "SELECT kind, name, doc, updated_at FROM catalog ORDER BY kind, name"
PUT_CATALOG = ("INSERT INTO catalog (kind, name, doc, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT (kind, name) "
               "DO UPDATE SET doc = excluded.doc, updated_at = excluded.updated_at")
DELETE_CATALOG = "DELETE FROM catalog WHERE kind = ? AND name = ? RETURNING name"
BUMP_CATALOG = "UPDATE catalog_version SET version = version + 1 WHERE id = 1"

_BUCKETS = {"hour": 3600, "day": 86400}


def to_dollar(sql: str) -> str:
    """qmark -> $1, $2, ... for asyncpg (no statement here has a literal '?')."""
    n = 0

    def repl(_: re.Match[str]) -> str:
        nonlocal n
        n += 1
        return f"${n}"
    return re.sub(r"\?", repl, sql)


def key_row(r: KeyRecord) -> tuple[Any, ...]:
    return (r.id, r.name, r.key_hash, r.owner, _json(r.models), int(r.enabled), int(r.revoked),
            r.created_at or time.time(), r.expires_at, r.budget, r.spent, r.reserved, r.token_quota,
            r.tokens_used, r.tokens_reserved, r.period, r.period_start or (time.time() if r.period else 0.0),
            r.rpm, r.tpm, r.max_concurrency, _json(r.metadata or None), r.account_id)


def key_from(row: Any) -> KeyRecord:
    v = list(row)
    return KeyRecord(
        id=v[0], name=v[1], key_hash=v[2], owner=v[3], models=_unjson(v[4]), enabled=bool(v[5]),
        revoked=bool(v[6]), created_at=float(v[7]), expires_at=v[8], budget=v[9], spent=int(v[10]),
        reserved=int(v[11]), token_quota=v[12], tokens_used=int(v[13]), tokens_reserved=int(v[14]),
        period=v[15], period_start=float(v[16] or 0), rpm=v[17], tpm=v[18], max_concurrency=v[19],
        metadata=_unjson(v[20]) or {}, account_id=v[21])


def key_update(changes: dict[str, Any]) -> tuple[str, list[Any]]:
    """`SET a = ?, b = ?` and its values for the allowed fields."""
    sets: list[str] = []
    vals: list[Any] = []
    for name, value in changes.items():
        if name in ("models", "metadata"):
            value = _json(value)
        elif name == "enabled":
            value = int(bool(value))
        sets.append(f"{name} = ?")
        vals.append(value)
        if name == "period":
            sets.append("period_start = ?")
            vals.append(time.time())
    return ", ".join(sets), vals


def ledger_row(r: LedgerRecord) -> tuple[Any, ...]:
    return (r.request_id, r.key_id, r.model, r.provider, r.upstream_model, int(r.stream), r.status,
            r.prompt_tokens, r.completion_tokens, r.cached_tokens, r.usage_source, r.ttft_ms, r.duration_ms,
            int(r.disconnected), r.error_code, r.attempts, r.cost, r.created_at or time.time(),
            _json(r.extra or None), r.account_id, r.cache_write_5m_tokens, r.cache_write_1h_tokens, r.session_id)


def quarantine_row(r: LedgerRecord, error: str) -> tuple[str, str | None, str, str, float]:
    """INSERT_QUARANTINE's parameters: the whole record as JSON (stdlib json: its numbers may be past
    int64, which orjson refuses), and the error."""
    doc = {name: getattr(r, name) for name in r.__slots__}
    return (r.request_id, r.key_id, json.dumps(doc, default=str), error[:2000], time.time())


def ledger_from(row: Any) -> LedgerRecord:
    v = list(row)
    return LedgerRecord(
        request_id=v[0], key_id=v[1], model=v[2], provider=v[3], upstream_model=v[4], stream=bool(v[5]),
        status=v[6], prompt_tokens=v[7], completion_tokens=v[8], cached_tokens=v[9], usage_source=v[10],
        ttft_ms=v[11], duration_ms=float(v[12]), disconnected=bool(v[13]), error_code=v[14], attempts=v[15],
        cost=v[16], created_at=float(v[17]), extra=_unjson(v[18]) or {}, account_id=v[19],
        cache_write_5m_tokens=v[20], cache_write_1h_tokens=v[21], session_id=v[22])


def usage_from(row: Any) -> UsageRow:
    v = list(row)
    return UsageRow(key_id=v[0], key_name=v[1], model=v[2], requests=int(v[3]), prompt_tokens=int(v[4]),
                    completion_tokens=int(v[5]), errors=int(v[6] or 0), cost=int(v[7] or 0),
                    cached_tokens=int(v[8]), cache_write_5m_tokens=int(v[9]), cache_write_1h_tokens=int(v[10]),
                    bucket=float(v[11]) if v[11] is not None else None)


def charged_tokens(rec: LedgerRecord) -> int:
    if rec.quota_tokens is not None:
        return rec.quota_tokens
    return (rec.prompt_tokens or 0) + (rec.completion_tokens or 0)


def reserve_args(r: Reservation) -> tuple[int, int, str, int, int, str]:
    """RESERVE's parameters for one reservation."""
    return (r.nanos, r.tokens, r.key_id, r.nanos, r.tokens, r.request_id)


def first_flags(batch: Sequence[Reservation]) -> list[bool]:
    """For each reservation, whether it is the first of its request_id in the batch (a repeat is refused)."""
    seen: set[str] = set()
    out = []
    for r in batch:
        out.append(r.request_id not in seen)
        seen.add(r.request_id)
    return out


def first_per_request(records: list[LedgerRecord]) -> list[LedgerRecord]:
    """The batch without repeats: the first record of each request_id, in order."""
    seen: dict[str, LedgerRecord] = {}
    for rec in records:
        seen.setdefault(rec.request_id, rec)
    return list(seen.values()) if len(seen) < len(records) else records


def settlements(new: list[LedgerRecord], held: list[Any]) -> list[tuple[int, int, int, int, str]]:
    """SETTLE parameters, one row per key sorted by id (one lock order for every writer): the cost and
    tokens of the newly written records, and the reservations they took back (rows of request_id,
    key_id, amount, tokens; released from the key that held them). Keys with nothing to do are left out."""
    per_key: dict[str, list[int]] = {}
    for rec in new:
        if rec.key_id is None:
            continue
        cost, tokens = rec.cost or 0, charged_tokens(rec)
        if cost or tokens:
            c = per_key.setdefault(rec.key_id, [0, 0, 0, 0])
            c[0] += cost
            c[2] += tokens
    for row in held:     # request_id, key_id, amount, tokens (and account_id, for the accounts)
        key_id, amount, tokens = row[1], row[2], row[3]
        c = per_key.setdefault(key_id, [0, 0, 0, 0])
        c[1] += amount
        c[3] += tokens
    return [(c[0], c[1], c[2], c[3], k) for k, c in sorted(per_key.items()) if any(c)]


def ledger_where(q: LedgerQuery, alias: str = "") -> tuple[str, list[Any]]:
    a = f"{alias}." if alias else ""
    conds: list[str] = []
    vals: list[Any] = []
    if q.key_id is not None:
        conds.append(f"{a}key_id = ?")
        vals.append(q.key_id)
    if q.model is not None:
        conds.append(f"{a}model = ?")
        vals.append(q.model)
    if q.status == 0:
        conds.append(f"{a}status >= 400")
    elif q.status is not None:
        conds.append(f"{a}status = ?")
        vals.append(q.status)
    if q.since is not None:
        conds.append(f"{a}created_at >= ?")
        vals.append(q.since)
    if q.until is not None:
        conds.append(f"{a}created_at < ?")
        vals.append(q.until)
    return (" WHERE " + " AND ".join(conds)) if conds else "", vals


def list_ledger(q: LedgerQuery) -> tuple[str, list[Any]]:
    where, vals = ledger_where(q)
    return f"{SELECT_LEDGER}{where} ORDER BY created_at DESC LIMIT {max(1, min(q.limit, 10_000))}", vals


def usage(q: LedgerQuery, group: str | None) -> tuple[str, list[Any]]:
    where, vals = ledger_where(q, "l")
    width = _BUCKETS.get(group or "")
    bucket = f"floor(l.created_at / {width}) * {width}" if width else "NULL"
    sql = (f"SELECT l.key_id, k.name, l.model, sum(l.n), coalesce(sum(l.prompt_tokens), 0), "
           f"coalesce(sum(l.completion_tokens), 0), sum(l.errs), "
           f"coalesce(sum(l.cost), 0), {_CACHE_SUMS}, {bucket} AS bucket FROM {USAGE_SOURCE} l "
           "LEFT JOIN keys k ON k.id = l.key_id"
           f"{where} GROUP BY l.key_id, k.name, l.model, bucket ORDER BY bucket, k.name, l.model")
    return sql, vals


def _json(v: Any) -> str | None:
    return orjson.dumps(v).decode() if v is not None else None


def _unjson(v: Any) -> Any:
    return orjson.loads(v) if v is not None else None
