"""What a request is charged when it fails, per failure kind, on a real server with a faulty upstream:
nothing before an upstream answered, what was delivered after output began. A refusal for money
uses no rate-limit allowance, and a request without max_tokens is fitted to a small balance."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from typing import Any

import pytest

from tests.e2e.conftest import SluiceServer
from tests.e2e.rawhttp import RawConn, chat_body, post_chat
from tests.sim.openai_sim import Fault, ThreadedSim

PRICING = {"input": "1", "output": "10"}   # per million tokens: 1,000 and 10,000 nano-units a token


def nanos(prompt: int, completion: int) -> int:
    return prompt * 1_000 + completion * 10_000


def make_key(sluice: SluiceServer, *args: str) -> dict[str, Any]:
    res = sluice.cli("keys", "create", "--name", f"k{time.monotonic_ns()}", "--json", *args)
    assert res.returncode == 0, res.stderr
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


def key_money(sluice: SluiceServer, key_id: str) -> tuple[int, int]:
    """(spent, reserved) in nano-units, from the database itself."""
    db = sqlite3.connect(f"file:{sluice.db}?mode=ro", uri=True, timeout=10)
    try:
        row = db.execute("SELECT spent, reserved FROM keys WHERE id = ?", (key_id,)).fetchone()
    finally:
        db.close()
    return int(row[0]), int(row[1])


def record(sluice: SluiceServer, request_id: str | None) -> dict[str, Any]:
    assert request_id
    rows = sluice.ledger_for(request_id)
    assert len(rows) == 1, rows
    return rows[0]


async def call(sluice: SluiceServer, key: str, body: bytes) -> tuple[int, str | None, bytes]:
    conn, head = await post_chat(sluice.port, key, body)
    try:
        return head.status, head.get("x-request-id"), await conn.body(head)
    finally:
        conn.close()


async def until(pred: Any, within: float = 5.0) -> bool:
    end = time.monotonic() + within
    while not pred():
        if time.monotonic() > end:
            return False
        await asyncio.sleep(0.02)
    return True


@pytest.fixture
def budget_key(sluice: SluiceServer) -> dict[str, Any]:
    return make_key(sluice, "--budget", "5")


def assert_uncharged(sluice: SluiceServer, key: dict[str, Any], request_id: str | None) -> dict[str, Any]:
    rec = record(sluice, request_id)
    assert rec["cost"] == 0 and rec["prompt_tokens"] is None and rec["completion_tokens"] is None, rec
    assert rec["usage_source"] == "none"
    assert key_money(sluice, key["id"]) == (0, 0)   # nothing spent, the reservation released
    return rec


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "plain"])
async def test_connect_refused_is_not_charged(sluice: SluiceServer, budget_key: dict[str, Any],
                                              stream: bool) -> None:
    status, rid, _ = await call(sluice, budget_key["key"], chat_body("unreachable", stream=stream))
    assert status == 503
    assert assert_uncharged(sluice, budget_key, rid)["error_code"] == "upstream_unavailable"


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "plain"])
@pytest.mark.parametrize("fault", [Fault.http_error(500), Fault.html_502(), Fault.rate_limited(retry_after=7)],
                         ids=["500", "502", "429"])
async def test_upstream_error_before_the_first_byte_is_not_charged(
        sluice: SluiceServer, sim: ThreadedSim, budget_key: dict[str, Any], fault: Fault, stream: bool) -> None:
    sim.always(fault)
    status, rid, _ = await call(sluice, budget_key["key"], chat_body(stream=stream))
    assert status in (429, 502) and sim.requests
    assert_uncharged(sluice, budget_key, rid)


async def test_our_rate_limiter_429_is_not_charged(sluice: SluiceServer) -> None:
    key = make_key(sluice, "--budget", "5", "--rpm", "1")
    status, first, _ = await call(sluice, key["key"], chat_body(stream=False))
    assert status == 200
    charged = record(sluice, first)["cost"]
    assert charged == nanos(record(sluice, first)["prompt_tokens"], record(sluice, first)["completion_tokens"]) > 0
    status, rid, body = await call(sluice, key["key"], chat_body(stream=False))
    assert status == 429 and json.loads(body)["error"]["code"] == "rate_limit_exceeded"
    rec = record(sluice, rid)
    assert rec["cost"] == 0 and rec["prompt_tokens"] is None
    assert key_money(sluice, key["id"]) == (charged, 0)


async def test_client_gone_before_the_first_byte_is_not_charged(sluice: SluiceServer, sim: ThreadedSim,
                                                                budget_key: dict[str, Any]) -> None:
    sim.push(Fault.slow_first_byte(10.0))
    conn = await RawConn.open(sluice.port)
    await conn.send("POST", "/v1/chat/completions", body=chat_body(),
                    headers={"Authorization": f"Bearer {budget_key['key']}", "Content-Type": "application/json"})
    assert await until(lambda: bool(sim.requests))
    conn.abort()     # the socket closes on the loop's next turn: wait without blocking the loop
    assert await until(lambda: sim.requests[0].client_closed)
    rows: list[dict[str, Any]] = []
    assert await until(lambda: bool(rows.extend(r for r in sluice.ledger() if r["key_id"] == budget_key["id"])
                                    or rows))
    assert len(rows) == 1 and rows[0]["status"] == 499 and rows[0]["disconnected"] == 1
    assert_uncharged(sluice, budget_key, rows[0]["request_id"])


async def test_failure_after_output_charges_what_was_delivered(sluice: SluiceServer, sim: ThreadedSim,
                                                               budget_key: dict[str, Any]) -> None:
    sim.push(Fault.mid_stream_drop(after=3))   # role chunk, "Hello", " 世界", then the connection drops
    status, rid, body = await call(sluice, budget_key["key"], chat_body())
    assert status == 200 and b'"error"' in body and b"[DONE]" not in body
    rec = record(sluice, rid)
    assert rec["usage_source"] == "estimated" and rec["completion_tokens"] == 2 + 2   # "Hello" + " 世界"
    assert rec["cost"] == nanos(rec["prompt_tokens"], rec["completion_tokens"]) > 0
    assert key_money(sluice, budget_key["id"]) == (rec["cost"], 0)


async def test_a_refusal_for_money_uses_no_rate_limit_allowance(sluice: SluiceServer) -> None:
    key = make_key(sluice, "--budget", "0.00001", "--rpm", "2")   # 10,000 nano-units: not one max reply
    for _ in range(4):
        status, _, body = await call(sluice, key["key"], chat_body(stream=False, max_tokens=4096))
        assert status == 429 and json.loads(body)["error"]["code"] == "insufficient_quota"
    assert sluice.cli("keys", "topup", key["id"], "5").returncode == 0
    for _ in range(2):   # the whole per-minute allowance is still there
        status, _, body = await call(sluice, key["key"], chat_body(stream=False, max_tokens=4096))
        assert status == 200, body


async def test_without_max_tokens_the_reservation_fits_the_balance(sluice: SluiceServer, sim: ThreadedSim) -> None:
    # "Say hello" is estimated at 9 prompt tokens, reserved as 9 * 5 // 4 + 16 = 27: 27,000 nano-units;
    # 0.001 leaves 973,000 for output at 10,000 a token: 97 tokens, where the default would be 4,096
    key = make_key(sluice, "--budget", "0.001")
    conn, head = await post_chat(sluice.port, key["key"], chat_body(stream=False))
    await conn.body(head)
    conn.close()
    assert head.status == 200
    assert head.get("x-sluice-max-tokens") == "97"
    assert sim.last.body["max_tokens"] == 97
    assert record(sluice, head.get("x-request-id"))["extra"] is not None
    # a balance that does not pay for 16 output tokens is refused as before
    poor = make_key(sluice, "--budget", "0.0001")
    status, _, body = await call(sluice, poor["key"], chat_body(stream=False))
    assert status == 429 and json.loads(body)["error"]["code"] == "insufficient_quota"
