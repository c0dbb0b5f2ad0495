"""`sluice usage`: the ledger from the command line, as the admin API serves it (`/admin/usage`,
`/admin/requests`, `/admin/requests/{id}`): totals grouped by hour or day (UTC), key and/or model over
filters, the request log, and one request's record. Reads through the same store methods as the API.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sluice.cli.tables import render
from sluice.metering.pricing import fmt_money
from sluice.storage.base import LedgerQuery, LedgerRecord, Store, UsageRow

TIME_GROUPS = ("hour", "day")
DIMENSIONS = ("hour", "day", "key", "model")
_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_BUCKET_FORMAT = {"hour": "%Y-%m-%d %H:00", "day": "%Y-%m-%d"}

AddCommon = Callable[..., None]


def parse_when(text: str, now: float | None = None) -> float:
    """A point in time as Unix seconds: `24h`, `30m`, `7d`, `2w` (that long ago), `now`, an ISO 8601
    date or date-time (UTC unless it carries an offset), or Unix seconds."""
    text = text.strip()
    now = time.time() if now is None else now
    if text == "now":
        return now
    if m := _RELATIVE.fullmatch(text):
        return now - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (use e.g. 24h, 7d, 2025-01-31 or 2025-01-31T12:00)") from None
    return (dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)).timestamp()


def parse_group(text: str) -> tuple[str, ...]:
    dims = tuple(d.strip() for d in text.split(",") if d.strip())
    bad = [d for d in dims if d not in DIMENSIONS]
    if not dims or bad:
        raise argparse.ArgumentTypeError(f"group by a comma-separated list of {', '.join(DIMENSIONS)}")
    if sum(d in TIME_GROUPS for d in dims) > 1:
        raise argparse.ArgumentTypeError("group by hour or by day, not both")
    return dims


def add_parser(sub: Any, common: AddCommon) -> None:
    """`sluice usage [filters] [--group ...]`, `sluice usage requests [filters]`, `sluice usage show ID`."""
    u = sub.add_parser("usage", help="usage from the ledger: totals, the request log, one request",
                       description="Totals from the ledger, per key and model unless --group says otherwise. "
                                   "Times are UTC unless they carry an offset; --until is exclusive.")
    common(u)
    _filters(u, None)
    u.add_argument("--group", type=parse_group, default=("key", "model"), metavar="DIMS",
                   help="comma-separated: hour or day, key, model (default: key,model)")
    u.add_argument("--json", action="store_true")
    subs = u.add_subparsers(dest="usage_cmd", metavar="{requests,show}")
    # options repeated on the subcommands default to SUPPRESS, so that one given before the subcommand
    # (`sluice usage --key k requests`) is not reset by the subcommand's default
    r = subs.add_parser("requests", help="the request log, newest first")
    common(r, default=argparse.SUPPRESS)
    _filters(r, argparse.SUPPRESS)
    r.add_argument("--errors", action="store_true", help="only requests that failed (status >= 400)")
    r.add_argument("--status", type=int, help="only this HTTP status")
    r.add_argument("--limit", type=int, default=50, help="at most this many (default: 50)")
    r.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    s = subs.add_parser("show", help="one request's ledger record")
    common(s, default=argparse.SUPPRESS)
    s.add_argument("request_id")
    s.add_argument("--json", action="store_true", default=argparse.SUPPRESS)


def _filters(p: argparse.ArgumentParser, default: Any) -> None:
    p.add_argument("--key", default=default, help="a key's id or name")
    p.add_argument("--model", default=default, help="the model name clients sent")
    p.add_argument("--since", type=parse_when, default=default, metavar="TIME",
                   help="from this time on: 24h, 7d, 2025-01-31, 2025-01-31T12:00, ...")
    p.add_argument("--until", type=parse_when, default=default, metavar="TIME", help="before this time")


async def run(store: Store, args: argparse.Namespace) -> int:
    cmd = getattr(args, "usage_cmd", None)
    try:
        if cmd == "show":
            return await _show(store, args.request_id, args.json)
        q = LedgerQuery(key_id=await _key_id(store, args.key), model=args.model, since=args.since,
                        until=args.until)
        if cmd == "requests":
            q.status = 0 if args.errors else args.status
            q.limit = args.limit
            return await _requests(store, q, args.json)
        return await _summary(store, q, args.group, args.json)
    except LookupError as exc:
        print(f"sluice: {exc.args[0]}", file=sys.stderr)
        return 1


async def _key_id(store: Store, text: str | None) -> str | None:
    if text is None:
        return None
    if await store.get_key(text) is not None:
        return text
    named = [k.id for k in await store.list_keys() if k.name == text]
    if len(named) == 1:
        return named[0]
    if named:
        raise LookupError(f"several keys are named {text!r} ({', '.join(named)}); pass an id")
    raise LookupError(f"no key with id or name {text!r}")


def _roll_up(rows: list[UsageRow], dims: tuple[str, ...]) -> list[UsageRow]:
    """The store groups by key, model and bucket; keep only the dimensions asked for."""
    by_key, by_model = "key" in dims, "model" in dims
    out: dict[tuple[Any, ...], UsageRow] = {}
    for r in rows:
        k = (r.bucket, r.key_id if by_key else None, r.model if by_model else None)
        acc = out.get(k)
        if acc is None:
            out[k] = UsageRow(k[1], r.key_name if by_key else None, k[2] or "", r.requests, r.prompt_tokens,
                              r.completion_tokens, r.errors, r.cost, r.bucket, r.cached_tokens,
                              r.cache_write_5m_tokens, r.cache_write_1h_tokens)
            continue
        acc.requests += r.requests
        acc.prompt_tokens += r.prompt_tokens
        acc.completion_tokens += r.completion_tokens
        acc.errors += r.errors
        acc.cost += r.cost
        acc.cached_tokens += r.cached_tokens
        acc.cache_write_5m_tokens += r.cache_write_5m_tokens
        acc.cache_write_1h_tokens += r.cache_write_1h_tokens
    return sorted(out.values(), key=lambda r: (r.bucket or 0.0, r.key_name or "", r.key_id or "", r.model))


async def _summary(store: Store, q: LedgerQuery, dims: tuple[str, ...], as_json: bool) -> int:
    unit = next((d for d in dims if d in TIME_GROUPS), None)
    rows = _roll_up(await store.usage(q, unit), dims)
    if as_json:
        print(json.dumps([_usage_doc(r, dims, unit) for r in rows]))
        return 0
    if not rows:
        print("No requests in the ledger" + (" match these filters." if _filtered(q) else " yet."))
        return 0
    head = [f"{unit.upper()} (UTC)"] if unit else []
    head += ["KEY"] if "key" in dims else []
    head += ["MODEL"] if "model" in dims else []
    lead = len(head)
    head += ["REQUESTS", "ERRORS", "PROMPT TOKENS", "COMPLETION TOKENS", "COST"]
    table = [_usage_cells(r, dims, unit) for r in rows]
    if len(rows) > 1:
        table.append(["TOTAL", *[""] * (lead - 1), sum(r.requests for r in rows), sum(r.errors for r in rows),
                      sum(r.prompt_tokens for r in rows), sum(r.completion_tokens for r in rows),
                      fmt_money(sum(r.cost for r in rows))])
    print(render(head, table, right=frozenset(range(lead, len(head)))))
    return 0


def _usage_doc(r: UsageRow, dims: tuple[str, ...], unit: str | None) -> dict[str, Any]:
    doc: dict[str, Any] = {"bucket": r.bucket} if unit else {}
    if "key" in dims:
        doc.update(key_id=r.key_id, key_name=r.key_name)
    if "model" in dims:
        doc["model"] = r.model
    doc.update(requests=r.requests, errors=r.errors, prompt_tokens=r.prompt_tokens,
               completion_tokens=r.completion_tokens, cached_tokens=r.cached_tokens,
               cache_write_5m_tokens=r.cache_write_5m_tokens, cache_write_1h_tokens=r.cache_write_1h_tokens,
               cost=fmt_money(r.cost))
    return doc


def _usage_cells(r: UsageRow, dims: tuple[str, ...], unit: str | None) -> list[Any]:
    cells: list[Any] = []
    if unit:
        cells.append(_utc(r.bucket or 0.0, _BUCKET_FORMAT[unit]))
    if "key" in dims:
        cells.append(_key_label(r.key_id, r.key_name))
    if "model" in dims:
        cells.append(r.model)
    return [*cells, r.requests, r.errors, r.prompt_tokens, r.completion_tokens, fmt_money(r.cost)]


async def _requests(store: Store, q: LedgerQuery, as_json: bool) -> int:
    recs = await store.list_ledger(q)
    if as_json:
        print(json.dumps([r.public() for r in recs]))
        return 0
    if not recs:
        print("No requests in the ledger" + (" match these filters." if _filtered(q) else " yet."))
        return 0
    names = {k.id: k.name for k in await store.list_keys()}
    head = ["TIME (UTC)", "REQUEST", "KEY", "MODEL", "STATUS", "ERROR", "PROMPT", "COMPLETION", "COST", "MS"]
    rows = [[_utc(r.created_at, "%Y-%m-%d %H:%M:%S"), r.request_id, _key_label(r.key_id, names.get(r.key_id or "")),
             r.model, r.status, r.error_code, r.prompt_tokens, r.completion_tokens, fmt_money(r.cost),
             round(r.duration_ms)] for r in recs]
    print(render(head, rows, right=frozenset({4, 6, 7, 8, 9})))
    return 0


async def _show(store: Store, request_id: str, as_json: bool) -> int:
    rec = await store.get_ledger(request_id)
    if rec is None:
        raise LookupError(f"no request {request_id!r} in the ledger")
    if as_json:
        print(json.dumps(rec.public()))
        return 0
    key = await store.get_key(rec.key_id) if rec.key_id else None
    print(_show_text(rec, key.name if key else None))
    return 0


def _show_text(rec: LedgerRecord, key_name: str | None) -> str:
    def ms(v: float | None) -> str:
        return f"{v:.1f} ms" if v is not None else "-"

    pairs: list[tuple[str, Any]] = [
        ("request", rec.request_id),
        ("time", _utc(rec.created_at, "%Y-%m-%d %H:%M:%S UTC")),
        ("key", _key_label(rec.key_id, key_name)),
        ("model", rec.model),
        ("served by", f"{rec.provider or '-'} / {rec.upstream_model or '-'} (attempts: {rec.attempts})"),
        ("stream", "yes" if rec.stream else "no"),
        ("status", rec.status),
        ("error", rec.error_code),
        ("client disconnected", "yes" if rec.disconnected else "no"),
        ("prompt tokens", rec.prompt_tokens),
        ("completion tokens", rec.completion_tokens),
        ("cache reads", rec.cached_tokens),
        ("cache writes 5m / 1h", f"{_dash(rec.cache_write_5m_tokens)} / {_dash(rec.cache_write_1h_tokens)}"),
        ("session", rec.session_id),
        ("usage", rec.usage_source),
        ("cost", fmt_money(rec.cost)),
        ("first token", ms(rec.ttft_ms)),
        ("duration", ms(rec.duration_ms)),
    ]
    if rec.extra:
        pairs.append(("extra", json.dumps(rec.extra, sort_keys=True)))
    width = max(len(label) for label, _ in pairs)
    return "\n".join(f"{label.ljust(width)}  {'-' if v is None else v}" for label, v in pairs)


def _dash(v: int | None) -> str:
    return "-" if v is None else str(v)


def _key_label(key_id: str | None, name: str | None) -> str:
    if key_id is None:
        return "-"
    return f"{name} ({key_id})" if name else key_id


def _utc(ts: float, fmt: str) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime(fmt)


def _filtered(q: LedgerQuery) -> bool:
    return any(v is not None for v in (q.key_id, q.model, q.since, q.until, q.status))
