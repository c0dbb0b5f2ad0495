"""`sluice accounts | groups | codes` against a running server's database: tables for people, --json for
scripts, and the money they show matches what the server charged."""

from __future__ import annotations

import csv
import io
import json
import urllib.request
from decimal import Decimal
from typing import Any

from tests.e2e.conftest import SluiceServer

PRICING = {"input": "1", "output": "10"}


def cli_json(sluice: SluiceServer, *args: str) -> Any:
    res = sluice.cli(*args, "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_accounts_groups_and_codes_from_the_cli(sluice: SluiceServer) -> None:
    acct = cli_json(sluice, "accounts", "create", "--name", "acme", "--group", "vip", "--balance", "3")
    assert acct["balance"] == "3" and acct["group"] == "vip"
    cli_json(sluice, "groups", "set", "vip", "0.5", "--model", "gpt-4o-mini=2")
    table = sluice.cli("groups", "list").stdout
    assert table.splitlines()[0].split() == ["GROUP", "MULTIPLIER", "PER", "MODEL"] and "gpt-4o-mini=x2" in table
    key = cli_json(sluice, "keys", "create", "--name", "acme-key", "--account", acct["id"])
    assert key["account_id"] == acct["id"]
    req = urllib.request.Request(sluice.base_url + "/chat/completions", data=json.dumps(
        {"model": "gpt-4o", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}).encode(),
        headers={"Authorization": f"Bearer {key['key']}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        charged = Decimal(r.headers["x-sluice-cost"])
    assert charged > 0
    listed = cli_json(sluice, "accounts", "list")
    assert [Decimal(a["balance"]) for a in listed if a["id"] == acct["id"]] == [3 - charged]
    table = sluice.cli("accounts", "list").stdout
    assert "BALANCE" in table.splitlines()[0] and str(3 - charged) in table
    history = cli_json(sluice, "accounts", "history", acct["id"])
    assert sorted((e["kind"], e["amount"]) for e in history) == [("charges", str(-charged)), ("topup", "3")]
    res = sluice.cli("codes", "create", "--count", "2", "--amount", "1.5", "--csv")
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert len(rows) == 2 and all(r["code"].startswith("SLC-") and r["amount"] == "1.5" for r in rows)
    codes = cli_json(sluice, "codes", "list")
    assert len(codes) == 2 and not any(r["code"] in json.dumps(codes) for r in rows)
    assert sluice.cli("accounts", "topup", "acct_nope", "1").returncode == 1
    assert sluice.cli("codes", "create", "--count", "0", "--amount", "1").returncode != 0
