"""`sluice usage` on a real SQLite file: totals grouped by time, key and model over filters, the request log
and one request's record, as tables (aligned) and JSON; time arguments, absolute and relative."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from sluice.cli.main import main
from sluice.cli.usage import parse_group, parse_when
from sluice.storage.base import KeyRecord, LedgerRecord
from sluice.storage.sqlite import SQLiteStore
from tests.harness import write_toml

T0 = 1_700_006_400.0  # 2023-11-15T00:00:00Z
NOW = time.time()


def _rec(rid: str, key_id: str | None, model: str, at: float, *, status: int = 200, prompt: int = 0,
         completion: int = 0, cost: int = 0, error: str | None = None) -> LedgerRecord:
    return LedgerRecord(rid, key_id, model, "sim", "up-" + model, stream=True, status=status, prompt_tokens=prompt,
                        completion_tokens=completion, usage_source="reported", ttft_ms=12.5, duration_ms=340.25,
                        error_code=error, attempts=1, created_at=at, cost=cost)


LEDGER = [
    _rec("r1", "ka", "gpt-4o", T0 + 600, prompt=10, completion=20, cost=1_000_000),
    _rec("r2", "ka", "gpt-4o", T0 + 3660, prompt=5, completion=5, cost=500_000),
    _rec("r3", "ka", "claude", T0 + 3720, status=502, prompt=7, error="upstream_error"),
    _rec("r4", "kb", "gpt-4o", T0 + 86430, prompt=1, completion=2, cost=2_000_000),
    _rec("r5", "kb", "claude", T0 + 93600, prompt=3, completion=4, cost=3_000_000),
    _rec("r6", "kb", "gpt-4o", NOW - 3600, prompt=2, completion=2, cost=4_000_000),
]


@pytest.fixture
def config(tmp_path: Path) -> str:
    db = tmp_path / "sluice.db"

    async def seed() -> None:
        store = SQLiteStore(f"sqlite:///{db}")
        await store.open()
        try:
            for kid, name in (("ka", "alice"), ("kb", "bob")):
                await store.create_key(KeyRecord(kid, name, "hash-" + kid, created_at=T0))
            await store.write_ledger(LEDGER)
        finally:
            await store.close()
    asyncio.run(seed())
    cfg = tmp_path / "sluice.toml"
    write_toml(cfg, {"storage": {"url": f"sqlite:///{db}"}})
    return str(cfg)


def _run(capsys: pytest.CaptureFixture[str], config: str, *args: str) -> tuple[int, str, str]:
    code = main(["usage", *args, "--config", config])
    out = capsys.readouterr()
    return code, out.out, out.err


def _json(capsys: pytest.CaptureFixture[str], config: str, *args: str) -> Any:
    code, out, err = _run(capsys, config, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def _aligned(out: str) -> list[list[str]]:
    """The table's lines split into cells; every line as wide as the others (the last column is numbers)."""
    lines = out.rstrip("\n").split("\n")
    assert len({len(line) for line in lines}) == 1, out
    return [line.split() for line in lines]


def test_totals_per_key_and_model_by_default(capsys: pytest.CaptureFixture[str], config: str) -> None:
    rows = _json(capsys, config)
    assert [(r["key_name"], r["model"], r["requests"], r["errors"], r["cost"]) for r in rows] == [
        ("alice", "claude", 1, 1, "0"), ("alice", "gpt-4o", 2, 0, "0.0015"),
        ("bob", "claude", 1, 0, "0.003"), ("bob", "gpt-4o", 2, 0, "0.006")]
    assert rows[1] | {"key_id": "ka", "prompt_tokens": 15, "completion_tokens": 25} == rows[1]
    assert "bucket" not in rows[0]
    code, out, _ = _run(capsys, config)
    table = _aligned(out)
    assert code == 0 and table[0] == ["KEY", "MODEL", "REQUESTS", "ERRORS", "PROMPT", "TOKENS", "COMPLETION",
                                      "TOKENS", "COST"]
    assert table[2] == ["alice", "(ka)", "gpt-4o", "2", "0", "15", "25", "0.0015"]
    assert table[-1] == ["TOTAL", "6", "1", "28", "33", "0.0105"]


def test_group_by_day_hour_key_and_model(capsys: pytest.CaptureFixture[str], config: str) -> None:
    days = _json(capsys, config, "--group", "day", "--until", "2023-11-17")
    assert [(d["bucket"], d["requests"], d["errors"], d["prompt_tokens"], d["cost"]) for d in days] == [
        (T0, 3, 1, 22, "0.0015"), (T0 + 86400, 2, 0, 4, "0.005")]
    assert set(days[0]) == {"bucket", "requests", "errors", "prompt_tokens", "completion_tokens", "cost",
                            "cached_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens"}
    out = _run(capsys, config, "--group", "day", "--until", "2023-11-17")[1]
    assert _aligned(out) == [["DAY", "(UTC)", "REQUESTS", "ERRORS", "PROMPT", "TOKENS", "COMPLETION", "TOKENS",
                              "COST"], ["2023-11-15", "3", "1", "22", "25", "0.0015"],
                             ["2023-11-16", "2", "0", "4", "6", "0.005"], ["TOTAL", "5", "1", "26", "31", "0.0065"]]

    hours = _json(capsys, config, "--group", "hour,model", "--key", "alice")
    assert [(h["bucket"], h["model"], h["requests"]) for h in hours] == [
        (T0, "gpt-4o", 1), (T0 + 3600, "claude", 1), (T0 + 3600, "gpt-4o", 1)]
    out = _run(capsys, config, "--group", "hour,model", "--key", "alice")[1]
    assert [r[:3] for r in _aligned(out)[1:]] == [["2023-11-15", "00:00", "gpt-4o"], ["2023-11-15", "01:00", "claude"],
                                                 ["2023-11-15", "01:00", "gpt-4o"], ["TOTAL", "3", "1"]]

    models = _json(capsys, config, "--group", "model")
    assert [(m["model"], m["requests"], m["cost"]) for m in models] == [("claude", 2, "0.003"), ("gpt-4o", 4, "0.0075")]
    keys = _json(capsys, config, "--group", "key", "--model", "gpt-4o")
    assert [(k["key_name"], k["requests"], k["completion_tokens"]) for k in keys] == [("alice", 2, 25), ("bob", 2, 4)]


def test_time_filters_absolute_relative_and_the_key_by_name_or_id(capsys: pytest.CaptureFixture[str],
                                                                  config: str) -> None:
    def requests(*args: str) -> int:
        return sum(r["requests"] for r in _json(capsys, config, *args))
    assert requests("--since", "2023-11-15", "--until", "2023-11-16") == 3          # --until is exclusive
    assert requests("--since", "2023-11-15T01:00") == 5
    assert requests("--since", "2023-11-15T01:00+01:00", "--until", str(T0 + 3600)) == 1  # offsets, Unix seconds
    assert requests("--since", "2h") == 1                                           # only r6, an hour old
    assert requests("--since", "30m") == 0
    assert requests("--key", "bob") == requests("--key", "kb") == 3
    code, out, err = _run(capsys, config, "--key", "carol")
    assert code == 1 and out == "" and "no key with id or name 'carol'" in err
    code, out, _ = _run(capsys, config, "--since", "30m")
    assert code == 0 and out == "No requests in the ledger match these filters.\n"


def test_request_log_and_one_request(capsys: pytest.CaptureFixture[str], config: str) -> None:
    assert [r["request_id"] for r in _json(capsys, config, "requests")] == ["r6", "r5", "r4", "r3", "r2", "r1"]
    assert [r["request_id"] for r in _json(capsys, config, "requests", "--limit", "2")] == ["r6", "r5"]
    errors = _json(capsys, config, "requests", "--errors")
    assert [(r["request_id"], r["status"], r["error_code"]) for r in errors] == [("r3", 502, "upstream_error")]
    assert [r["request_id"] for r in _json(capsys, config, "--key", "alice", "requests", "--model", "gpt-4o")] == [
        "r2", "r1"]                                      # a filter given before the subcommand still applies
    out = _run(capsys, config, "requests", "--errors")[1]
    assert _aligned(out)[1] == ["2023-11-15", "01:02:00", "r3", "alice", "(ka)", "claude", "502", "upstream_error",
                                "7", "0", "0", "340"]

    one = _json(capsys, config, "show", "r3")
    assert one == LEDGER[2].public()
    out = _run(capsys, config, "show", "r3")[1]
    fields = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in out.strip().split("\n"))
    assert fields["request"] == "r3" and fields["time"] == "2023-11-15 01:02:00 UTC"
    assert fields["key"] == "alice (ka)" and fields["status"] == "502" and fields["error"] == "upstream_error"
    assert fields["served by"] == "sim / up-claude (attempts: 1)" and fields["duration"] == "340.2 ms"
    code, out, err = _run(capsys, config, "show", "nope")
    assert code == 1 and "no request 'nope' in the ledger" in err


def test_time_and_group_arguments() -> None:
    assert parse_when("24h", now=T0) == T0 - 86400
    assert parse_when("90m", now=T0) == T0 - 5400
    assert parse_when("1.5d", now=T0) == T0 - 1.5 * 86400
    assert parse_when("2w", now=T0) == T0 - 14 * 86400
    assert parse_when("45s", now=T0) == T0 - 45
    assert parse_when("now", now=T0) == T0
    assert parse_when("2023-11-15") == T0
    assert parse_when("2023-11-15T01:30") == T0 + 5400
    assert parse_when("2023-11-15 01:30:00Z") == T0 + 5400
    assert parse_when("2023-11-15T03:30+02:00") == T0 + 5400
    assert parse_when(str(int(T0))) == T0
    for bad in ("yesterday", "24x", "", "2023-13-01"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_when(bad)
    assert parse_group("day,key") == ("day", "key")
    assert parse_group(" model ") == ("model",)
    for bad in ("hour,day", "week", "", ","):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_group(bad)


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str], config: str) -> None:
    for args in (["--since", "yesterday"], ["--group", "week"], ["requests", "--limit", "x"], ["show"]):
        with pytest.raises(SystemExit) as exc:
            main(["usage", *args, "--config", config])
        assert exc.value.code == 2
        assert "sluice usage" in capsys.readouterr().err
