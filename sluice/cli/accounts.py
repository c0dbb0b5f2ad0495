"""`sluice accounts | groups | codes`: customers' balances, price groups and redemption codes, as readable
tables or `--json`. They work on the database directly, as `sluice keys` does."""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from decimal import Decimal, InvalidOperation
from typing import Any

from sluice.accounts import codes
from sluice.accounts.records import DEFAULT_GROUP, AccountRecord, GroupRecord
from sluice.accounts.store import AccountStore
from sluice.cli.tables import render
from sluice.metering.pricing import fmt_money, to_nanos
from sluice.storage.base import Store


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(t)) if t else "-"


def _amount(text: str, *, signed: bool = False) -> int:
    try:
        d = Decimal(text)
    except InvalidOperation:
        raise SystemExit(f"sluice: not an amount: {text!r}") from None
    if not d.is_finite() or (d < 0 and not signed) or abs(d) > 10**12:
        raise SystemExit(f"sluice: not a{'n' if signed else ' non-negative'} amount: {text!r}")
    return to_nanos(d) if d >= 0 else -to_nanos(-d)


def _multiplier(text: str) -> Decimal:
    try:
        d = Decimal(text)
    except InvalidOperation:
        d = Decimal(-1)
    if not d.is_finite() or not 0 <= d <= 1000:
        raise SystemExit(f"sluice: a multiplier is a number from 0 to 1000, not {text!r}")
    return d


def add_parsers(sub: Any, common: Any) -> None:
    a = sub.add_parser("accounts", help="customers' accounts: balances their keys spend from")
    acc = a.add_subparsers(dest="accounts_cmd", required=True)
    c = acc.add_parser("create", help="open an account")
    c.add_argument("--name", required=True)
    c.add_argument("--group", default=DEFAULT_GROUP)
    c.add_argument("--balance", help="opening top-up, e.g. 20.00")
    for name, helptext in (("list", "accounts with balance and spend"), ("history", "an account's balance history"),
                           ("enable", "let an account's keys spend again"), ("disable", "stop an account's keys"),
                           ("topup", "add money"), ("adjust", "correct the balance (negative lowers it)"),
                           ("attach", "make a key spend from an account")):
        p = acc.add_parser(name, help=helptext)
        if name != "list":
            p.add_argument("id", help="the account id" if name != "attach" else "the key id")
        if name in ("topup", "adjust"):
            p.add_argument("amount")
            p.add_argument("--note")
        if name == "attach":
            p.add_argument("account", help="the account id")
    g = sub.add_parser("groups", help="price groups and their multipliers")
    gs = g.add_subparsers(dest="groups_cmd", required=True)
    gs.add_parser("list", help="groups and multipliers")
    s = gs.add_parser("set", help="create or change a group")
    s.add_argument("name")
    s.add_argument("multiplier", help="e.g. 0.8 for 20%% off list prices")
    s.add_argument("--model", action="append", default=[], metavar="MODEL=MULT", help="a per-model multiplier")
    k = sub.add_parser("codes", help="redemption codes")
    ks = k.add_subparsers(dest="codes_cmd", required=True)
    kc = ks.add_parser("create", help="make a batch; the codes are printed this once")
    kc.add_argument("--count", type=int, required=True)
    kc.add_argument("--amount", required=True)
    kc.add_argument("--expires-in-days", type=float)
    kc.add_argument("--group", help="redeeming moves the account into this group")
    kc.add_argument("--csv", action="store_true", help="print CSV (code, amount, expires_at, group, batch_id)")
    kl = ks.add_parser("list", help="codes and whether they were used (never the codes themselves)")
    kl.add_argument("--batch")
    for p in (*acc.choices.values(), *gs.choices.values(), *ks.choices.values()):
        common(p)
        p.add_argument("--json", action="store_true")


async def run(store: Store, args: argparse.Namespace) -> int:
    accounts = AccountStore(store)
    if args.cmd == "groups":
        return await _groups(accounts, args)
    if args.cmd == "codes":
        return await _codes(accounts, args)
    return await _accounts(store, accounts, args)


def _out(args: argparse.Namespace, doc: Any, text: str) -> int:
    print(json.dumps(doc) if args.json else text)
    return 0


async def _accounts(store: Store, accounts: AccountStore, args: argparse.Namespace) -> int:
    cmd = args.accounts_cmd
    if cmd == "create":
        rec = AccountRecord("acct_" + secrets.token_hex(6), args.name, args.group, created_at=time.time())
        await accounts.create_account(rec)
        if args.balance:
            rec = await accounts.credit(rec.id, _amount(args.balance), "topup", "opening balance") or rec
        return _out(args, rec.public(), f"Created account {rec.id} ({rec.name}), balance {fmt_money(rec.balance)}")
    if cmd == "list":
        recs = await accounts.list_accounts()
        rows = [(a.id, a.name, a.group, "active" if a.enabled else "disabled", fmt_money(a.balance),
                 fmt_money(a.spent), fmt_money(a.reserved), _when(a.created_at)) for a in recs]
        return _out(args, [a.public() for a in recs], render(
            ("ID", "NAME", "GROUP", "STATE", "BALANCE", "SPENT", "RESERVED", "CREATED (UTC)"), rows,
            right=frozenset({4, 5, 6})))
    if cmd == "history":
        events = await accounts.history(args.id)
        lines = [(_when(e.created_at), e.kind, fmt_money(e.amount), e.ref or "", e.note or "") for e in events]
        return _out(args, [e.public() for e in events],
                    render(("WHEN (UTC)", "KIND", "AMOUNT", "REF", "NOTE"), lines, right=frozenset({2})))
    if cmd == "attach":
        if await accounts.get_account(args.account) is None:
            print(f"no account with id {args.account}", file=sys.stderr)
            return 1
        key = await store.update_key(args.id, {"account_id": args.account})
        if key is None:
            print(f"no key with id {args.id}", file=sys.stderr)
            return 1
        return _out(args, key.public(), f"key {key.id} now spends from account {args.account}")
    if cmd in ("enable", "disable"):
        got = await accounts.update_account(args.id, {"enabled": cmd == "enable"})
    else:   # topup, adjust
        nanos = _amount(args.amount, signed=cmd == "adjust")
        if nanos == 0 or (nanos < 0 and cmd == "topup"):
            raise SystemExit("sluice: the amount must not be zero" if cmd == "adjust" else "sluice: must be positive")
        got = await accounts.credit(args.id, nanos, cmd, args.note)
    if got is None:
        print(f"no account with id {args.id}", file=sys.stderr)
        return 1
    state = "active" if got.enabled else "disabled"
    return _out(args, got.public(), f"{got.id} ({got.name}): balance {fmt_money(got.balance)}, {state}")


async def _groups(accounts: AccountStore, args: argparse.Namespace) -> int:
    if args.groups_cmd == "set":
        models = {}
        for item in args.model:
            model, sep, mult = item.rpartition("=")
            if not sep or not model:
                raise SystemExit(f"sluice: --model takes MODEL=MULT, not {item!r}")
            models[model] = _multiplier(mult)
        g = await accounts.set_group(GroupRecord(args.name, _multiplier(args.multiplier), models))
        return _out(args, g.public(), f"group {g.name}: x{g.multiplier}")
    groups = await accounts.list_groups()
    rows = [(g.name, str(g.multiplier), ", ".join(f"{m}=x{v}" for m, v in sorted(g.models.items())) or "-")
            for g in groups]
    return _out(args, [g.public() for g in groups], render(("GROUP", "MULTIPLIER", "PER MODEL"), rows,
                                                           right=frozenset({1})))


async def _codes(accounts: AccountStore, args: argparse.Namespace) -> int:
    if args.codes_cmd == "create":
        amount = _amount(args.amount)
        expires = time.time() + args.expires_in_days * 86400 if args.expires_in_days else None
        try:
            batch, made = await codes.create_batch(accounts, args.count, amount, expires_at=expires, group=args.group)
        except Exception as exc:   # the API's own range errors
            raise SystemExit(f"sluice: {getattr(exc, 'message', exc)}") from None
        if args.csv:
            sys.stdout.write(codes.export_csv(batch, made, amount, expires, args.group))
            return 0
        doc = {"batch_id": batch, "amount": fmt_money(amount), "expires_at": expires, "group": args.group,
               "codes": made}
        return _out(args, doc, "\n".join(made))
    recs = await accounts.list_codes(args.batch)
    rows = [(c.public()["id"], c.batch_id, fmt_money(c.amount), c.group or "-", _when(c.expires_at),
             "used by " + (c.redeemed_by or "?") if c.redeemed_at else "unused") for c in recs]
    return _out(args, [c.public() for c in recs], render(("ID", "BATCH", "AMOUNT", "GROUP", "EXPIRES", "STATE"),
                                                         rows, right=frozenset({2})))
