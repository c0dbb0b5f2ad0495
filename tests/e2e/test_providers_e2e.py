"""Anthropic and Gemini upstreams through a real Sluice, driven by the official SDKs; inbound /v1/messages;
failover before the first byte and error events after it."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from tests.e2e.sluice_proc import SluiceProcess, free_port
from tests.harness import model, provider
from tests.sim.anthropic_sim import AnthropicSim, Reply, error_body, frames
from tests.sim.gemini_sim import GeminiSim, Script, text_events, text_reply

FIX = Path(__file__).resolve().parents[1] / "fixtures"


def _client(s: SluiceProcess) -> openai.AsyncOpenAI:
    client = openai.AsyncOpenAI(base_url=s.base_url, api_key=s.create_key(), max_retries=0)
    s.closers.append(client.close)
    return client


def _providers(anth: str, gem: str) -> dict[str, Any]:
    claude, gemini, sim = ("anth", "claude-sonnet-4-5"), ("gem", "gemini-2.5-flash"), ("sim", "sim-1")
    return {"providers": [provider("anth", "anthropic", anth, api_key="sk-ant-test"),
                          provider("gem", "gemini", gem, api_key="gem-test"),
                          provider("dead", "openai", f"http://127.0.0.1:{free_port()}/v1",
                                   timeouts={"connect": 2, "first_byte": 5, "idle": 5}),
                          provider("sim", "simulated", reply="Bonjour from the simulated model.")],
            "models": [model("claude", claude), model("gemini", gemini), model("sim", sim),
                       model("ha", {"provider": "anth", "model": claude[1], "priority": 0},
                             {"provider": "gem", "model": gemini[1], "priority": 1}),
                       model("ha-dead", {"provider": "dead", "model": "x", "priority": 0},
                             {"provider": "sim", "model": sim[1], "priority": 1})]}


async def test_anthropic_stream_with_parallel_tool_calls(tmp_path: Path) -> None:
    async with AnthropicSim() as anth, GeminiSim() as gem, SluiceProcess(tmp_path, _providers(
            anth.base_url, gem.base_url)) as s:
        anth.replies.append(Reply(sse=frames((FIX / "anthropic" / "parallel_tools.sse").read_bytes())))
        client = _client(s)
        stream = await client.chat.completions.create(
            model="claude", messages=[{"role": "user", "content": "weather?"}], stream=True,
            stream_options={"include_usage": True})
        text, calls, finish, usage = "", {}, None, None
        async for chunk in stream:
            if chunk.usage:
                usage = chunk.usage
            for c in chunk.choices:
                text += c.delta.content or ""
                for tc in c.delta.tool_calls or []:
                    entry = calls.setdefault(tc.index, {"id": "", "name": "", "args": ""})
                    entry["id"] += tc.id or ""
                    entry["name"] += (tc.function.name or "") if tc.function else ""
                    entry["args"] += (tc.function.arguments or "") if tc.function else ""
                finish = c.finish_reason or finish
        assert text == "Checking both."
        assert sorted(calls) == [0, 1, 2]
        assert calls[0]["id"] == "toolu_01A" and calls[0]["name"] == "get_weather"
        assert calls[0]["args"] == '{"city": "Paris"}'
        assert calls[1]["id"] == "toolu_01B" and calls[2]["id"] == "toolu_01C"
        assert all(c["name"] for c in calls.values())
        assert finish == "tool_calls"
        assert usage is not None and usage.prompt_tokens >= 400
        assert anth.received[0].body["model"] == "claude-sonnet-4-5"


async def test_gemini_stream_text_and_usage(tmp_path: Path) -> None:
    async with AnthropicSim() as anth, GeminiSim() as gem, SluiceProcess(tmp_path, _providers(
            anth.base_url, gem.base_url)) as s:
        gem.push(Script(events=text_events(["Hel", "lo ", "wörld 🌍"])))
        client = _client(s)
        stream = await client.chat.completions.create(
            model="gemini", messages=[{"role": "user", "content": "hi"}], stream=True,
            stream_options={"include_usage": True})
        text, usage = "", None
        async for chunk in stream:
            usage = chunk.usage or usage
            for c in chunk.choices:
                text += c.delta.content or ""
        assert text == "Hello wörld 🌍"
        assert usage is not None and usage.prompt_tokens == 5 and usage.completion_tokens == 3


async def test_inbound_messages_with_the_anthropic_sdk(tmp_path: Path) -> None:
    async with AnthropicSim() as anth, GeminiSim() as gem, SluiceProcess(tmp_path, _providers(
            anth.base_url, gem.base_url)) as s:
        key = s.create_key()
        client = anthropic.AsyncAnthropic(base_url=s.base_url.removesuffix("/v1"), api_key=key, max_retries=0)
        s.closers.append(client.close)
        msg = await client.messages.create(model="sim", max_tokens=100,
                                           messages=[{"role": "user", "content": "hi"}])
        assert msg.content[0].type == "text" and msg.content[0].text == "Bonjour from the simulated model."
        assert msg.stop_reason == "end_turn" and msg.usage.output_tokens == 5
        async with client.messages.stream(model="sim", max_tokens=100,
                                          messages=[{"role": "user", "content": "hi"}]) as stream:
            pieces = [t async for t in stream.text_stream]
            final = await stream.get_final_message()
        assert "".join(pieces) == "Bonjour from the simulated model."
        assert final.usage.output_tokens == 5
        with pytest.raises(anthropic.NotFoundError):
            await client.messages.create(model="nope", max_tokens=10, messages=[{"role": "user", "content": "x"}])


async def test_failover_before_the_first_byte(tmp_path: Path) -> None:
    async with AnthropicSim() as anth, GeminiSim() as gem, SluiceProcess(tmp_path, _providers(
            anth.base_url, gem.base_url)) as s:
        client = _client(s)
        # the primary answers 529 (and then 500) twice per request; the secondary serves
        for _ in range(6):
            anth.replies.append(Reply(status=529, body=error_body("overloaded_error", "busy")))
        for i in range(3):
            gem.push(Script(reply=text_reply("ok")))
            r = await client.chat.completions.create(model="ha", messages=[{"role": "user", "content": str(i)}])
            assert r.choices[0].message.content == "ok"
        # a target that refuses connections fails over to the next tier
        r = await client.chat.completions.create(model="ha-dead", messages=[{"role": "user", "content": "x"}])
        assert r.choices[0].message.content == "Bonjour from the simulated model."
    db = sqlite3.connect(s.db)
    rows = db.execute("SELECT model, provider, attempts, status FROM ledger ORDER BY created_at").fetchall()
    assert [r[:2] for r in rows] == [("ha", "gem")] * 3 + [("ha-dead", "sim")]
    assert all(r[2] >= 2 and r[3] == 200 for r in rows)


async def test_failure_after_the_first_byte_is_an_error_event_not_a_retry(tmp_path: Path) -> None:
    async with AnthropicSim() as anth, GeminiSim() as gem, SluiceProcess(tmp_path, _providers(
            anth.base_url, gem.base_url)) as s:
        anth.replies.append(Reply(sse=frames((FIX / "anthropic" / "text.sse").read_bytes()), drop_after=3))
        client = _client(s)
        stream = await client.chat.completions.create(
            model="ha", messages=[{"role": "user", "content": "x"}], stream=True)
        with pytest.raises(openai.APIError):
            async for _ in stream:
                pass
        assert len(anth.received) == 1 and gem.requests == []  # no retry after the first byte
