"""`/v1/messages` as Claude Code and the official `anthropic` client use it, through a real Sluice: the
Anthropic pass-through (bytes, signatures, betas, usage), translated upstreams (OpenAI, Gemini, the
simulated model), `ping` heartbeats, `count_tokens` and model discovery in Anthropic's shape."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import httpx2
import orjson
import pytest
import pytest_asyncio

from sluice.dialects.anthropic_messages.reply import PING_FRAME
from tests.e2e.cluster import ADMIN_TOKEN
from tests.e2e.sluice_proc import SluiceProcess
from tests.harness import ledger_rows, model, provider
from tests.sim.anthropic_sim import AnthropicSim, Reply, answer, error_body, frames, stream_events
from tests.sim.gemini_sim import GeminiSim, Script, text_events
from tests.sim.openai_sim import OpenAISim, fixture_bytes, fixture_payloads

pytestmark = pytest.mark.asyncio(loop_scope="module")  # the tests share the module's server and simulators

FIX = Path(__file__).resolve().parents[1] / "fixtures"
VERSION = {"anthropic-version": "2023-06-01"}


@dataclass
class Gateway:
    """One test's view of the module's server and simulators: a key of its own, so the ledger rows it
    reads are its own; the simulators are reset before it runs."""

    s: SluiceProcess
    anth: AnthropicSim
    gem: GeminiSim
    oai: OpenAISim
    key_id: str
    key: str
    closers: list[Callable[[], Awaitable[None]]]
    sent: list[bytes]  # request bodies the anthropic client sent, in order
    versions: list[str]  # and their anthropic-version headers

    def client(self) -> anthropic.AsyncAnthropic:
        async def record(request: httpx2.Request) -> None:
            self.sent.append(request.content)
            self.versions.append(request.headers["anthropic-version"])

        http = httpx2.AsyncClient(event_hooks={"request": [record]})
        client = anthropic.AsyncAnthropic(base_url=self.s.base_url.removesuffix("/v1"), api_key=self.key,
                                          max_retries=0, http_client=http)
        self.closers.append(client.close)
        return client

    def ledger(self) -> list[dict[str, Any]]:
        return [r for r in ledger_rows(self.s.db) if r["key_id"] == self.key_id]


def _config(anth: str, gem: str, oai: str) -> dict[str, Any]:
    models = {"claude": ("anth", "claude-sonnet-4-5"), "claude-sonnet-4-5": ("anth", "claude-sonnet-4-5"),
              "gpt": ("oai", "fx-text"), "gpt-tools": ("oai", "fx-tool_calls"), "gemini": ("gem", "gemini-2.5-flash"),
              "sim": ("local", "sim-1")}
    ha = model("ha", {"provider": "anth", "model": "claude-ha", "priority": 0},
               {"provider": "oai", "model": "fx-text", "priority": 1})
    return {"providers": [provider("anth", "anthropic", anth, api_key="sk-ant-upstream",
                                   strip_betas=["strip-me-2026-01-01"]),
                          provider("gem", "gemini", gem, api_key="gem-test"),
                          provider("oai", "openai", oai, api_key="sk-oai-upstream"),
                          provider("local", "simulated", reply="Bonjour from the simulated model.")],
            "models": [*(model(name, target) for name, target in models.items()), ha]}


Sims = tuple[SluiceProcess, AnthropicSim, GeminiSim, OpenAISim]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def shared(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sims]:
    """One Sluice and its three upstream simulators for the module: each test has its own key (`g`); the one
    test that makes a target fail before its first byte (failover) fails a target of its own (`ha`)."""
    async with AnthropicSim() as anth, GeminiSim() as gem, OpenAISim() as oai, SluiceProcess(
            tmp_path_factory.mktemp("messages"), _config(anth.base_url, gem.base_url, oai.base_url),
            server={"heartbeat_seconds": 0.2}, extra_env={"SLUICE_ADMIN_TOKEN": ADMIN_TOKEN}) as s:
        yield s, anth, gem, oai


@pytest_asyncio.fixture(loop_scope="module")
async def g(shared: Sims, request: pytest.FixtureRequest) -> AsyncIterator[Gateway]:
    s, anth, gem, oai = shared
    for sim in (anth, gem, oai):
        sim.reset()
    key_id, key = await s.admin_key(request.node.name)
    gw = Gateway(s, anth, gem, oai, key_id, key, [], [], [])
    yield gw
    for close in gw.closers:
        await close()


async def _raw_stream(g: Gateway, body: dict[str, Any], headers: dict[str, str]) -> bytes:
    async with aiohttp.ClientSession() as http, http.post(
            g.s.base_url + "/messages?beta=true", data=orjson.dumps(body),
            headers={"x-api-key": g.key, "content-type": "application/json", **headers}) as r:
        assert r.status == 200, await r.text()
        return await r.read()


# --- Anthropic in, Anthropic out -------------------------------------------------------------------


async def test_passthrough_keeps_bytes_signatures_and_betas(g: Gateway) -> None:
    fixture = frames((FIX / "anthropic" / "thinking_tool.sse").read_bytes())
    g.anth.replies.append(Reply(sse=fixture))
    client = g.client()
    tools: Any = [{"name": "get_weather", "description": "weather", "input_schema": {
        "type": "object", "properties": {"city": {"type": "string"}}}}]
    first = [{"role": "user", "content": "weather in Rome?"}]
    async with client.messages.stream(model="claude", max_tokens=2000, messages=first,  # type: ignore[arg-type]
                                      tools=tools, thinking={"type": "enabled", "budget_tokens": 1024},
                                      extra_headers={"anthropic-beta": "keep-me-2025-01-01,strip-me-2026-01-01"},
                                      extra_query={"beta": "true"}) as stream:
        final = await stream.get_final_message()
    thinking = final.content[0]
    assert thinking.type == "thinking" and thinking.signature.startswith("EqQBCgIYAhIM")
    # turn two sends the signed block back; the upstream must see it exactly as the client sent it
    second = [*first, {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in final.content]},
              {"role": "user", "content": [{"type": "tool_result", "tool_use_id": final.content[1].id,  # type: ignore[union-attr]
                                            "content": "sunny"}]}]
    g.anth.replies.append(answer({"model": "claude-sonnet-4-5"}, [{"type": "text", "text": "Sunny."}]))
    msg = await client.messages.create(model="claude", max_tokens=2000, messages=second,  # type: ignore[arg-type]
                                       tools=tools, thinking={"type": "enabled", "budget_tokens": 1024})
    assert msg.content[0].type == "text" and msg.content[0].text == "Sunny."
    for sent, got in zip(g.sent, g.anth.received, strict=True):
        assert got.raw == sent.replace(b'"model":"claude"', b'"model":"claude-sonnet-4-5"', 1)
    assert g.anth.received[1].body["messages"][1]["content"][0] == thinking.model_dump(exclude_none=True)
    first_headers = g.anth.received[0].headers
    assert first_headers["anthropic-beta"] == "keep-me-2025-01-01"  # the provider's strip list applied
    assert first_headers["anthropic-version"] == g.versions[0]  # the client's, not the provider's default
    assert first_headers["x-api-key"] == "sk-ant-upstream"
    # the stream's bytes come back as the upstream sent them (keep-alive pings aside)
    g.anth.replies.append(Reply(sse=fixture))
    raw = await _raw_stream(g, {"model": "claude-sonnet-4-5", "max_tokens": 50, "stream": True,
                                "messages": first}, VERSION)
    assert raw.replace(PING_FRAME, b"") == b"".join(fixture)
    assert g.anth.received[2].raw == orjson.dumps({"model": "claude-sonnet-4-5", "max_tokens": 50,
                                                   "stream": True, "messages": first})


async def test_passthrough_usage_with_cache_writes_is_metered(g: Gateway) -> None:
    usage = {"input_tokens": 12, "cache_creation_input_tokens": 300, "cache_read_input_tokens": 4000,
             "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 200}}
    client = g.client()
    for stream in (False, True):
        body = {"model": "claude-sonnet-4-5", "stream": stream}
        g.anth.replies.append(answer(body, [{"type": "text", "text": "cached"}], usage=usage))
    plain = await client.messages.with_raw_response.create(
        model="claude", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert await plain.read() == orjson.dumps(_sim_body(usage))  # the upstream's reply, byte for byte
    async with client.messages.stream(model="claude", max_tokens=10,
                                      messages=[{"role": "user", "content": "x"}]) as s:
        final = await s.get_final_message()
    assert final.usage.cache_read_input_tokens == 4000 and final.usage.output_tokens == 7
    rows = await _rows(g, 2)
    for row in rows:
        assert row["status"] == 200 and row["usage_source"] == "reported" and row["provider"] == "anth"
        assert row["prompt_tokens"] == 12 + 300 + 4000 and row["cached_tokens"] == 4000
        assert row["completion_tokens"] == 7
        assert row["cache_write_5m_tokens"] == 100 and row["cache_write_1h_tokens"] == 200


def _sim_body(usage: dict[str, Any]) -> dict[str, Any]:
    reply = answer({"model": "claude-sonnet-4-5"}, [{"type": "text", "text": "cached"}], usage=usage)
    assert reply.body is not None
    return reply.body


async def _rows(g: Gateway, n: int) -> list[dict[str, Any]]:
    """The ledger once it holds n rows (records are durable before the last byte; the read is a poll)."""
    for _ in range(200):
        rows = g.ledger()
        if len(rows) >= n:
            return rows
        await asyncio.sleep(0.05)
    raise AssertionError(f"the ledger has {len(g.ledger())} rows, expected {n}")


async def test_silent_upstream_gets_ping_frames(g: Gateway) -> None:
    hold = asyncio.Event()
    g.anth.replies.append(Reply(sse=stream_events([{"type": "text", "text": "late"}]), hold=hold))
    body = {"model": "claude", "max_tokens": 10, "stream": True, "messages": [{"role": "user", "content": "x"}]}
    async with aiohttp.ClientSession() as http, http.post(
            g.s.base_url + "/messages", data=orjson.dumps(body),
            headers={"authorization": "Bearer " + g.key, **VERSION}) as r:
        assert r.status == 200
        got = b""
        async with asyncio.timeout(60):  # a bound for a broken build, not a timing assertion
            while got.count(PING_FRAME) < 3:  # the upstream is held silent: only keep-alives can come
                piece = await r.content.readany()
                assert piece, got
                got += piece
        assert got == PING_FRAME * got.count(PING_FRAME)
        hold.set()
        got += await r.content.read()
    assert b"event: message_stop" in got and b'"text":"late"' in got


async def test_a_passthrough_stream_cut_short_ends_in_an_error_event(g: Gateway) -> None:
    fixture = frames((FIX / "anthropic" / "thinking_tool.sse").read_bytes())
    g.anth.replies.append(Reply(sse=fixture, drop_after=3))
    raw = await _raw_stream(g, {"model": "claude", "max_tokens": 50, "stream": True,
                                "messages": [{"role": "user", "content": "x"}]}, VERSION)
    body = raw.replace(PING_FRAME, b"")
    assert body.startswith(b"".join(fixture[:3]))  # what did arrive went through unchanged
    assert body.count(b"event: error\n") == 1 and b"message_stop" not in body
    (row,) = await _rows(g, 1)
    assert row["error_code"] and row["prompt_tokens"] == 50  # message_start's usage was read


async def test_failover_from_the_passthrough_to_a_translated_target(g: Gateway) -> None:
    g.anth.replies.append(Reply(status=529, body=error_body("overloaded_error", "busy")))
    client = g.client()
    async with client.messages.stream(model="ha", max_tokens=50,
                                      messages=[{"role": "user", "content": "hi"}]) as stream:
        text = "".join([t async for t in stream.text_stream])
    sent = b"".join(orjson.loads(p)["choices"][0]["delta"].get("content", "").encode()
                    for p in fixture_payloads("text") if p != b"[DONE]" and orjson.loads(p)["choices"])
    assert text == sent.decode() and text
    assert len(g.anth.received) == 1 and g.oai.requests[-1].body["model"] == "fx-text"
    (row,) = await _rows(g, 1)
    assert row["provider"] == "oai" and row["attempts"] == 2 and row["status"] == 200


async def test_a_forced_server_tool_passes_through_and_is_a_400_when_translated(g: Gateway) -> None:
    client = g.client()
    tools: Any = [{"type": "web_search_20250305", "name": "web_search", "max_uses": 1}]
    choice: Any = {"type": "tool", "name": "web_search"}
    msgs: Any = [{"role": "user", "content": "news?"}]
    msg = await client.messages.create(model="claude", max_tokens=50, messages=msgs, tools=tools,
                                       tool_choice=choice)
    assert msg.content[0].type == "text"
    assert g.anth.received[-1].body["tool_choice"] == choice and g.anth.received[-1].body["tools"] == tools
    with pytest.raises(anthropic.BadRequestError, match=r"tool_choice\.name") as info:
        await client.messages.create(model="gpt", max_tokens=50, messages=msgs, tools=tools, tool_choice=choice)
    assert info.value.response.headers["request-id"] == info.value.response.headers["x-request-id"]
    assert g.oai.requests == []


# --- translated upstreams --------------------------------------------------------------------------


def _openai_calls(payloads: list[bytes]) -> list[tuple[str, str, Any]]:
    calls: dict[int, list[str]] = {}
    for p in payloads:
        if p == b"[DONE]":
            continue
        doc = orjson.loads(p)
        for choice in doc.get("choices") or []:
            for tc in (choice.get("delta") or {}).get("tool_calls") or []:
                entry = calls.setdefault(tc["index"], ["", "", ""])
                entry[0] += tc.get("id") or ""
                entry[1] += (tc.get("function") or {}).get("name") or ""
                entry[2] += (tc.get("function") or {}).get("arguments") or ""
    return [(i, n, orjson.loads(a)) for i, n, a in (calls[k] for k in sorted(calls))]


async def test_openai_upstream_with_the_anthropic_client(g: Gateway) -> None:
    client = g.client()
    msg = await client.messages.create(model="gpt", max_tokens=100, messages=[{"role": "user", "content": "hi"}])
    sent = orjson.loads(fixture_bytes("text.json"))
    assert msg.content[0].type == "text" and msg.content[0].text == sent["choices"][0]["message"]["content"]
    assert msg.usage.output_tokens == sent["usage"]["completion_tokens"]
    tools: Any = [{"name": "get_weather", "input_schema": {"type": "object"}}]
    async with client.messages.stream(model="gpt-tools", max_tokens=100, tools=tools,
                                      messages=[{"role": "user", "content": "weather?"}]) as stream:
        final = await stream.get_final_message()
    uses = [(b.id, b.name, b.input) for b in final.content if b.type == "tool_use"]
    assert uses == _openai_calls(fixture_payloads("tool_calls")) and uses
    assert final.stop_reason == "tool_use"


async def test_claude_code_shapes_translate_for_an_openai_upstream(g: Gateway) -> None:
    body = {
        "model": "gpt", "max_tokens": 32000, "stream": True,
        "system": [{"type": "text", "text": "You are Claude Code."},
                   {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi",
                                                   "cache_control": {"type": "ephemeral"}}]},
                     {"role": "system", "content": [{"type": "text", "text": "Mid-conversation note."}]}],
        "thinking": {"type": "adaptive", "display": "omitted"}, "output_config": {"effort": "xhigh"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "metadata": {"user_id": '{"session_id":"s1"}'},
        "tools": [{"name": "Read", "input_schema": {"type": "object"}},
                  {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]}
    raw = await _raw_stream(g, body, {**VERSION, "anthropic-beta": "context-management-2025-06-27",
                                      "x-claude-code-session-id": "s1"})
    assert b"event: message_stop" in raw
    up = g.oai.requests[-1].body
    assert up["messages"][0] == {"role": "system",
                                 "content": "You are Claude Code.Be brief.\n\nMid-conversation note."}
    assert up["messages"][1] == {"role": "user", "content": "hi"}
    assert up["reasoning_effort"] == "high" and up["user"] == '{"session_id":"s1"}'
    assert [t["function"]["name"] for t in up["tools"]] == ["Read"]  # the server tool is Anthropic's own
    assert "context_management" not in up and "thinking" not in up


async def test_gemini_and_simulated_upstreams_with_the_anthropic_client(g: Gateway) -> None:
    client = g.client()
    g.gem.push(Script(events=text_events(["Hel", "lo ", "wörld 🌍"])))
    async with client.messages.stream(model="gemini", max_tokens=50,
                                      messages=[{"role": "user", "content": "hi"}]) as stream:
        pieces = [t async for t in stream.text_stream]
    assert "".join(pieces) == "Hello wörld 🌍"
    raw = (FIX / "gemini" / "parallel_calls.sse").read_bytes()
    g.gem.push(Script(raw=raw))
    tools: Any = [{"name": n, "input_schema": {"type": "object"}} for n in ("get_weather", "get_time", "ping")]
    async with client.messages.stream(model="gemini", max_tokens=50, tools=tools,
                                      messages=[{"role": "user", "content": "all three"}]) as stream:
        final = await stream.get_final_message()
    sent = orjson.loads(raw.split(b"data: ", 1)[1])["candidates"][0]["content"]["parts"]
    assert [(b.name, b.input) for b in final.content if b.type == "tool_use"] == [
        (p["functionCall"]["name"], p["functionCall"].get("args", {})) for p in sent]
    assert final.stop_reason == "tool_use" and final.usage.output_tokens == 22
    msg = await client.messages.create(model="sim", max_tokens=50, messages=[{"role": "user", "content": "x"}])
    assert msg.content[0].type == "text" and msg.content[0].text == "Bonjour from the simulated model."


# --- count_tokens and models ------------------------------------------------------------------------


async def test_count_tokens_upstream_or_estimated(g: Gateway) -> None:
    client = g.client()
    msgs: Any = [{"role": "user", "content": "hello there"}]
    res = await client.messages.with_raw_response.count_tokens(model="claude-sonnet-4-5", messages=msgs)
    assert res.headers["x-sluice-token-count"] == "upstream"
    assert (await res.parse()).input_tokens == 1001  # the simulator's own count
    assert g.anth.received[-1].path == "/v1/messages/count_tokens"
    assert g.anth.received[-1].raw == g.sent[-1]
    plain = await client.messages.with_raw_response.count_tokens(model="gpt", messages=msgs)
    assert plain.headers["x-sluice-token-count"] == "estimated"
    tools: Any = [{"name": "Read", "description": "Reads a file from the local filesystem " * 20,
                   "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}}}]
    with_system = await client.messages.count_tokens(model="gpt", messages=msgs, system="Be brief. " * 50)
    with_tools = await client.messages.count_tokens(model="gpt", messages=msgs, tools=tools)
    base = (await plain.parse()).input_tokens
    assert 0 < base < with_system.input_tokens and base < with_tools.input_tokens
    assert g.ledger() == []  # counts are neither billed nor recorded
    g.anth.replies.append(Reply(status=529, body=error_body("overloaded_error", "busy")))
    fallback = await client.messages.with_raw_response.count_tokens(model="claude", messages=msgs)
    assert fallback.headers["x-sluice-token-count"] == "estimated"  # the upstream was unavailable
    assert (await fallback.parse()).input_tokens == base
    async with anthropic.AsyncAnthropic(base_url=g.s.base_url.removesuffix("/v1"), api_key="sk-wrong",
                                        max_retries=0) as bad:
        with pytest.raises(anthropic.AuthenticationError):
            await bad.messages.count_tokens(model="gpt", messages=msgs)


async def test_models_in_both_dialects(g: Gateway) -> None:
    client = g.client()
    ids = [m.id async for m in client.models.list(limit=2)]  # pages through after_id
    assert ids == ["claude", "claude-sonnet-4-5", "gpt", "gpt-tools", "gemini", "sim", "ha"]
    page = await client.models.list(limit=3)
    assert [m.id for m in page.data] == ids[:3] and page.has_more and page.last_id == "gpt"
    back = await client.models.list(before_id="gpt", limit=5)
    assert [m.id for m in back.data] == ids[:2] and not back.has_more
    one = await client.models.retrieve("gemini")
    assert one.type == "model" and one.id == "gemini" and one.display_name == "gemini"
    async with aiohttp.ClientSession() as http:
        async with http.get(g.s.base_url + "/models", headers={"authorization": "Bearer " + g.key}) as r:
            doc = await r.json()
        assert doc["object"] == "list" and [m["id"] for m in doc["data"]] == ids
        async with http.get(g.s.base_url + "/models?limit=0", headers={"x-api-key": g.key, **VERSION}) as r:
            assert r.status == 400 and r.headers["x-request-id"]
            assert (await r.json())["type"] == "error"
    with pytest.raises(anthropic.NotFoundError):
        await client.models.retrieve("nope")
