"""Signed thinking across a tool loop, through a real Sluice to the Anthropic simulator (which refuses, as the
real API does, a tool turn sent back without its thinking or with a changed signature): `/v1/responses` with
the official client, plain and streamed, carrying it in `encrypted_content`, and `/v1/chat/completions`
carrying it in `thinking_blocks`; turn two's signature reaches the upstream byte for byte."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.e2e.sluice_proc import SluiceProcess
from tests.harness import one_upstream
from tests.sim.anthropic_sim import AnthropicSim, Reply, answer

SIGNATURE = "EqQBCgIYAhIMrz9v+/Sluice/Thinking=="  # base64 padding and slashes, as real ones have
SIGNED = {"type": "thinking", "thinking": "The user wants the weather in Rome.\n", "signature": SIGNATURE}
REDACTED = {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4a"}
CALL = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Rome"}}
TOOLS: Any = [{"type": "function", "name": "get_weather", "description": "weather in a city",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]
CHAT_TOOLS: Any = [{"type": "function", "function": {k: v for k, v in TOOLS[0].items() if k != "type"}}]
USER = {"role": "user", "content": "weather in Rome?"}


def _tool_loop(body: dict[str, Any]) -> Reply:
    """Turn one thinks (signed and redacted) and calls the tool; the turn with its result answers."""
    last = body["messages"][-1]["content"]
    if isinstance(last, list) and any(b.get("type") == "tool_result" for b in last):
        return answer(body, [{"type": "text", "text": "Sunny."}])
    return answer(body, [SIGNED, REDACTED, CALL], stop_reason="tool_use")


@dataclass
class Gateway:
    sim: AnthropicSim
    client: openai.AsyncOpenAI

    def turn_two(self) -> tuple[dict[str, Any], bytes]:
        """The assistant turn the upstream got back in the second request, and that request's bytes."""
        assert len(self.sim.received) == 2, self.sim.received
        got = self.sim.received[1]
        return got.body["messages"][1], got.raw


@asynccontextmanager
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    async with AnthropicSim() as sim, SluiceProcess(tmp_path, one_upstream(
            sim.base_url, {"claude": "claude-sonnet-4-5"}, kind="anthropic", api_key="sk-ant-upstream")) as s:
        sim.script = _tool_loop
        client = openai.AsyncOpenAI(base_url=s.base_url, api_key=s.create_key(), max_retries=0)
        s.closers.append(client.close)
        yield Gateway(sim, client)


def _signed_turn_ok(turn: dict[str, Any], raw: bytes) -> None:
    assert turn["content"][:2] == [SIGNED, REDACTED] and turn["content"][2]["type"] == "tool_use"
    assert b'"signature":"' + SIGNATURE.encode() + b'"' in raw


async def _respond(client: openai.AsyncOpenAI, stream: bool, **kw: Any) -> Any:
    if not stream:
        return await client.responses.create(**kw)
    events = [ev async for ev in await client.responses.create(stream=True, **kw)]
    done = [ev.item for ev in events if ev.type == "response.output_item.done"]
    final = events[-1].response
    assert events[-1].type == "response.completed" and done == final.output  # what Codex builds its turn from
    return final


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_responses_tool_loop_sends_the_signed_thinking_back(tmp_path: Path, stream: bool) -> None:
    kw: Any = {"model": "claude", "tools": TOOLS, "store": False, "include": ["reasoning.encrypted_content"],
               "reasoning": {"effort": "medium", "summary": "auto"}}
    async with gateway(tmp_path) as g:
        first = await _respond(g.client, stream, input=[USER], **kw)
        reasoning, call = first.output[0], first.output[-1]
        assert reasoning.type == "reasoning" and reasoning.summary[0].text == SIGNED["thinking"]
        assert reasoning.encrypted_content and SIGNATURE not in reasoning.encrypted_content  # opaque
        assert call.type == "function_call" and call.call_id == "toolu_1"
        # as Codex does: every output item back as it came, then the tool's output
        items = [o.model_dump(exclude_none=True) for o in first.output]
        second = await _respond(g.client, stream, **kw, input=[
            USER, *items, {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}])
        assert second.output_text == "Sunny."
        _signed_turn_ok(*g.turn_two())


async def test_missing_or_forged_thinking_is_refused_upstream_and_a_damaged_envelope_is_a_400(tmp_path: Path) -> None:
    kw: Any = {"model": "claude", "tools": TOOLS, "reasoning": {"effort": "medium"}}
    async with gateway(tmp_path) as g:
        first = await g.client.responses.create(input=[USER], **kw)  # no include: no encrypted_content
        assert first.output[0].type == "reasoning" and first.output[0].encrypted_content is None
        back = [USER, *[o.model_dump(exclude_none=True) for o in first.output],
                {"type": "function_call_output", "call_id": "toolu_1", "output": "sunny"}]
        with pytest.raises(openai.BadRequestError) as refused:
            await g.client.responses.create(input=back, **kw)
        assert "Expected `thinking` or `redacted_thinking`, but found `tool_use`" in refused.value.message
        back[1]["encrypted_content"] = "sluice.th1.damaged"
        with pytest.raises(openai.BadRequestError) as damaged:
            await g.client.responses.create(input=back, **kw)
        assert damaged.value.body["param"] == "input[1].encrypted_content"  # type: ignore[index]
        assert damaged.value.body["code"] == "invalid_encrypted_content"  # type: ignore[index]
        assert len(g.sim.received) == 2  # the damaged one never went up
        # a signature changed on the way is refused upstream, as the real API does
        forged = {"role": "assistant", "content": None, "thinking_blocks": [{**SIGNED, "signature": "EqQB"}],
                  "tool_calls": [{"id": "toolu_1", "type": "function",
                                  "function": {"name": "get_weather", "arguments": "{}"}}]}
        with pytest.raises(openai.BadRequestError) as invalid:
            await g.client.chat.completions.create(model="claude", tools=CHAT_TOOLS, reasoning_effort="low",
                                                   messages=[USER, forged, {"role": "tool", "tool_call_id": "toolu_1",
                                                                            "content": "sunny"}])
        assert "messages.1.content.0: Invalid `signature` in `thinking` block" in invalid.value.message


async def _chat_turn(client: openai.AsyncOpenAI, stream: bool, messages: list[Any]) -> dict[str, Any]:
    """The assistant message of one chat turn, put together from the chunks when streamed."""
    kw: Any = {"model": "claude", "messages": messages, "tools": CHAT_TOOLS, "reasoning_effort": "medium"}
    if not stream:
        return (await client.chat.completions.create(**kw)).choices[0].message.model_dump(exclude_none=True)
    msg: dict[str, Any] = {"role": "assistant", "content": None}
    calls: dict[int, dict[str, Any]] = {}
    async for chunk in await client.chat.completions.create(stream=True, **kw):
        delta = chunk.choices[0].delta.model_dump(exclude_none=True) if chunk.choices else {}
        if delta.get("content"):
            msg["content"] = (msg["content"] or "") + delta["content"]
        msg.setdefault("thinking_blocks", []).extend(delta.get("thinking_blocks") or [])
        for c in delta.get("tool_calls") or []:
            call = calls.setdefault(c["index"], {"id": c.get("id"), "type": "function",
                                                 "function": {"name": c["function"].get("name"), "arguments": ""}})
            call["function"]["arguments"] += c["function"].get("arguments") or ""
    if calls:
        msg["tool_calls"] = [calls[k] for k in sorted(calls)]
    return msg


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_chat_completions_tool_loop_sends_the_signed_thinking_back(tmp_path: Path, stream: bool) -> None:
    async with gateway(tmp_path) as g:
        first = await _chat_turn(g.client, stream, [USER])
        assert first["thinking_blocks"] == [SIGNED, REDACTED]
        assert first["tool_calls"][0]["id"] == "toolu_1"
        tool = {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"}
        second = await _chat_turn(g.client, stream, [USER, first, tool])
        assert second["content"] == "Sunny."
        _signed_turn_ok(*g.turn_two())
