"""`sluice serve | keys | usage | accounts | groups | codes | catalog`: every command reads the same
configuration (--config or SLUICE_CONFIG)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from sluice import __version__
from sluice.auth.keys import hash_key, new_key
from sluice.cli import accounts, catalog, usage
from sluice.cli.tables import render
from sluice.config import ConfigError, Settings, load
from sluice.metering.pricing import fmt_money, to_nanos
from sluice.storage import open_store
from sluice.storage.base import KeyRecord, Store

T = TypeVar("T")


def _common(p: argparse.ArgumentParser, default: Any = None) -> None:
    p.add_argument("--config", default=default,
                   help="TOML config file (default: $SLUICE_CONFIG, else the embedded default)")
    p.add_argument("--data-dir", default=default,
                   help="data directory for the embedded default (default: ./sluice-data)")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="sluice", description="An OpenAI-compatible LLM API gateway.")
    ap.add_argument("--version", action="version", version=f"sluice {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run the gateway")
    _common(s)
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--workers", type=int)
    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="keys_cmd", required=True)
    kc = keys.add_parser("create", help="issue a key (its secret is printed once)")
    _common(kc)
    kc.add_argument("--name", required=True)
    kc.add_argument("--models", help="comma-separated allow-list (default: every model)")
    kc.add_argument("--owner")
    kc.add_argument("--budget", help="prepaid budget in money, e.g. 20.00 (default: none)")
    kc.add_argument("--token-quota", type=int)
    kc.add_argument("--period", choices=["day", "week", "month"], help="reset budget and quota each period")
    kc.add_argument("--rpm", type=int, help="requests per minute")
    kc.add_argument("--tpm", type=int, help="tokens per minute")
    kc.add_argument("--max-concurrency", type=int)
    kc.add_argument("--account", help="the account it spends from (see `sluice accounts`)")
    kc.add_argument("--json", action="store_true")
    kt = keys.add_parser("topup", help="add money to a key's budget")
    _common(kt)
    kt.add_argument("id")
    kt.add_argument("amount", help="e.g. 10.00")
    kl = keys.add_parser("list", help="list keys (never their secrets)")
    _common(kl)
    kl.add_argument("--json", action="store_true")
    kr = keys.add_parser("revoke", help="revoke a key by id")
    _common(kr)
    kr.add_argument("id")
    usage.add_parser(sub, _common)
    accounts.add_parsers(sub, _common)
    catalog.add_parser(sub, _common)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        overrides: dict[str, Any] = {}
        if args.cmd == "serve":
            overrides = {"server.host": args.host, "server.port": args.port, "server.workers": args.workers}
        settings = load(args.config, data_dir=args.data_dir, overrides=overrides)
    except ConfigError as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return 2
    if args.cmd == "serve":
        from sluice.cli.serve import serve

        return serve(settings, config_path=args.config, data_dir=args.data_dir)
    if args.cmd == "keys":
        return _keys(args, settings)
    if args.cmd == "usage":
        return _with_store(settings, lambda st: usage.run(st, args))
    if args.cmd in ("accounts", "groups", "codes"):
        return _with_store(settings, lambda st: accounts.run(st, args))
    if args.cmd == "catalog":
        return _with_store(settings, lambda st: catalog.run(settings, st, args))
    return 2


def _with_store(settings: Settings, fn: Callable[[Store], Awaitable[T]]) -> T:
    async def run() -> T:
        store = open_store(settings)
        await store.open()
        try:
            return await fn(store)
        finally:
            await store.close()
    return asyncio.run(run())


def _new_key(name: str, models: list[str] | None, **fields: Any) -> tuple[KeyRecord, str]:
    kid, secret = new_key()
    rec = KeyRecord(kid, name, hash_key(secret), models, created_at=time.time())
    for k, v in fields.items():
        if v is not None:
            setattr(rec, k, v)
    return rec, secret


async def create_key(store: Store, name: str, models: list[str] | None, **fields: Any) -> tuple[KeyRecord, str]:
    rec, secret = _new_key(name, models, **fields)
    await store.create_key(rec)
    return rec, secret


async def create_first_key(store: Store, name: str = "default") -> str | None:
    """A key for a store that has none yet, its secret; None when there already is a key (atomic)."""
    rec, secret = _new_key(name, None)
    return secret if await store.create_first_key(rec) else None


def _money(text: str) -> int:
    try:
        d = Decimal(text)
    except InvalidOperation:
        raise SystemExit(f"sluice: not an amount: {text!r}") from None
    if not d.is_finite() or d < 0:
        raise SystemExit(f"sluice: not a non-negative amount: {text!r}")
    return to_nanos(d)


def _keys(args: argparse.Namespace, settings: Settings) -> int:
    if args.keys_cmd == "create":
        models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
        fields = {"owner": args.owner, "budget": _money(args.budget) if args.budget else None,
                  "token_quota": args.token_quota, "period": args.period, "rpm": args.rpm, "tpm": args.tpm,
                  "max_concurrency": args.max_concurrency, "account_id": args.account}
        rec, secret = _with_store(settings, lambda st: create_key(st, args.name, models, **fields))
        if args.json:
            print(json.dumps({**rec.public(), "key": secret}))
        else:
            print(f"Created key {rec.id} ({rec.name}). Its secret is shown once; store it now:\n\n  {secret}\n")
        return 0
    if args.keys_cmd == "list":
        recs = _with_store(settings, lambda st: st.list_keys())
        if args.json:
            print(json.dumps([r.public() for r in recs]))
            return 0
        rows = [(r.id, r.name, ",".join(r.models) if r.models is not None else "*",
                 "revoked" if r.revoked else ("disabled" if not r.enabled else "active"),
                 fmt_money(r.budget - r.spent) if r.budget is not None else "-", fmt_money(r.spent),
                 time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created_at))) for r in recs]
        print(render(("ID", "NAME", "MODELS", "STATE", "BALANCE", "SPENT", "CREATED"), rows, right=frozenset({4, 5})))
        return 0
    if args.keys_cmd == "topup":
        nanos = _money(args.amount)
        got = _with_store(settings, lambda st: st.top_up(args.id, nanos))
        if got is None:
            print(f"no key with id {args.id}", file=sys.stderr)
            return 1
        print(f"{got.id}: budget {fmt_money(got.budget)}, spent {fmt_money(got.spent)}, "
              f"balance {fmt_money((got.budget or 0) - got.spent)}")
        return 0
    if args.keys_cmd == "revoke":
        ok = _with_store(settings, lambda st: st.revoke_key(args.id))
        print(f"revoked {args.id}" if ok else f"no active key with id {args.id}",
              file=sys.stdout if ok else sys.stderr)
        return 0 if ok else 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
