"""Prompt-cache billing end to end, on SQLite and on PostgreSQL: the Anthropic and OpenAI simulators report
cache reads and 5-minute / 1-hour writes, and the ledger keeps each apart and prices each at its own rate
(defaults 0.1x / 1.25x / 2x input, or the model's own). The session id is recorded with the request."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import pytest
from openai import AsyncOpenAI

from tests.e2e.cluster import pg_database
from tests.e2e.sluice_proc import SluiceProcess
from tests.harness import model, provider
from tests.sim.anthropic_sim import AnthropicSim, answer
from tests.sim.openai_sim import Fault, OpenAISim, chat_events, fixture_bytes

ANTH_USAGE = {"input_tokens": 12, "cache_creation_input_tokens": 300, "cache_read_input_tokens": 4000,
              "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 200}}
MSGS = [{"role": "user", "content": "x"}]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def storage_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    if request.param == "sqlite":
        yield None
        return
    with pg_database("sluice_cache") as url:
        yield url


def _config(anth: str, oai: str) -> dict[str, Any]:
    claude = ("anth", "claude-sonnet-4-5")
    return {"providers": [provider("anth", "anthropic", anth, api_key="sk-ant-upstream"),
                          provider("oai", "openai", oai)],
            "models": [model("claude", claude, pricing={"input": "3", "output": "15"}),
                       model("claude-own-rates", claude, pricing={"input": "3", "output": "15", "cached_input": "0.2",
                                                                  "cache_write_5m": "4", "cache_write_1h": "7"}),
                       model("gpt", ("oai", "fx-text"), pricing={"input": "3", "output": "15", "cached_input": "0.5"})]}


@contextlib.asynccontextmanager
async def _gateway(tmp_path: Path, storage_url: str | None) -> Any:
    async with AnthropicSim() as anth, OpenAISim() as oai, SluiceProcess(
            tmp_path, _config(anth.base_url, oai.base_url), storage_url=storage_url) as s:
        yield s, anth, oai, s.create_key()


def _record(s: SluiceProcess, request_id: str | None) -> dict[str, Any]:
    assert request_id is not None
    doc: dict[str, Any] = json.loads(s.cli("usage", "show", request_id, "--json"))
    return doc


def _nanos(*terms: tuple[int, str]) -> str:
    """The expected cost string: sum of tokens x price per million."""
    total = sum((Decimal(n) * Decimal(p) for n, p in terms), Decimal(0)) / Decimal(1_000_000)
    return f"{total.normalize():f}"


async def test_anthropic_cache_reads_and_writes_priced_apart(tmp_path: Path, storage_url: str | None) -> None:
    async with _gateway(tmp_path, storage_url) as (s, anth, _oai, key):
        client = anthropic.AsyncAnthropic(base_url=s.base_url.removesuffix("/v1"), api_key=key, max_retries=0)
        s.closers.append(client.close)
        rids = {}
        for model in ("claude", "claude-own-rates"):
            for stream in (False, True):
                anth.replies.append(answer({"model": "claude-sonnet-4-5", "stream": stream},
                                           [{"type": "text", "text": "cached"}], usage=ANTH_USAGE))
                headers = {"X-Claude-Code-Session-Id": f"sess-{model}-{stream}"}
                if stream:
                    async with client.messages.with_streaming_response.create(
                            model=model, max_tokens=10, messages=MSGS, stream=True, extra_headers=headers) as r:
                        await r.read()
                else:
                    r = await client.messages.with_raw_response.create(model=model, max_tokens=10, messages=MSGS,
                                                                        extra_headers=headers)
                rids[(model, stream)] = r.headers.get("request-id")
        default = _nanos((12, "3"), (4000, "0.3"), (100, "3.75"), (200, "6"), (7, "15"))
        own = _nanos((12, "3"), (4000, "0.2"), (100, "4"), (200, "7"), (7, "15"))
        assert default == "0.002916"  # 36 + 1200 + 375 + 1200 + 105 millionths
        for (model, stream), rid in rids.items():
            rec = _record(s, rid)
            assert rec["prompt_tokens"] == 12 + 300 + 4000 and rec["completion_tokens"] == 7
            cache = (rec["cached_tokens"], rec["cache_write_5m_tokens"], rec["cache_write_1h_tokens"])
            assert cache == (4000, 100, 200)
            assert rec["cost"] == (default if model == "claude" else own)
            assert rec["session_id"] == f"sess-{model}-{stream}"


async def test_openai_cached_tokens_priced_and_not_reported_kept_apart(tmp_path: Path,
                                                                        storage_url: str | None) -> None:
    async with _gateway(tmp_path, storage_url) as (s, _anth, oai, key):
        client = AsyncOpenAI(base_url=s.base_url, api_key=key, max_retries=0)
        s.closers.append(client.close)
        oai.push(Fault(script=lambda _b: chat_events(text="hi", usage=(10, 7), cached=4)))
        r = await client.chat.completions.with_raw_response.create(
            model="gpt", messages=MSGS, stream=True, prompt_cache_key="pck-1")  # type: ignore[arg-type]
        async for _ in r.parse():
            pass
        rec = _record(s, r.headers.get("x-request-id"))
        assert (rec["prompt_tokens"], rec["cached_tokens"], rec["completion_tokens"]) == (10, 4, 7)
        assert rec["cache_write_5m_tokens"] is None and rec["session_id"] == "pck-1"
        assert rec["cost"] == _nanos((6, "3"), (4, "0.5"), (7, "15"))

        # no prompt_tokens_details: cache reads "not reported" (not 0), the whole prompt at the input price
        reply = json.loads(fixture_bytes("text.json"))
        reply["usage"] = {"prompt_tokens": 14, "completion_tokens": 6, "total_tokens": 20}
        oai.push(Fault(reply=json.dumps(reply).encode()))
        plain = await client.chat.completions.with_raw_response.create(model="gpt", messages=MSGS)  # type: ignore[arg-type]
        rec = _record(s, plain.headers.get("x-request-id"))
        assert rec["cached_tokens"] is None and rec["session_id"] is None
        assert (rec["prompt_tokens"], rec["completion_tokens"]) == (14, 6)
        assert rec["cost"] == _nanos((14, "3"), (6, "15"))
