"""Inbound /v1/messages: Anthropic -> OpenAI requests; OpenAI replies, chunks -> Anthropic (SDK-checked)."""

from __future__ import annotations

from typing import Any

import anthropic
import orjson
import pytest

from sluice.dialects.anthropic_messages.reply import (
    MessagesStreamWriter,
    completion_to_message,
    error_body,
    error_event,
)
from sluice.dialects.anthropic_messages.request import request_to_openai
from sluice.errors import InvalidRequest, UpstreamRateLimited, UpstreamUnavailable
from sluice.sse import SSEDecoder
from tests.sim.anthropic_sim import AnthropicSim, Reply, frames


def test_request_to_openai() -> None:
    body = {
        "model": "claude-x", "max_tokens": 100, "system": [{"type": "text", "text": "be brief"}],
        "stop_sequences": ["END"], "temperature": 0.3, "top_p": 0.9, "stream": True,
        "metadata": {"user_id": "u1"}, "thinking": {"type": "enabled", "budget_tokens": 2048},
        "tools": [{"name": "w", "description": "weather", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "look"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA="}},
                {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hm", "signature": "s"}, {"type": "text", "text": "ok"},
                {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"city": "Rome"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1",
                 "content": [{"type": "text", "text": "sun"}]},
                {"type": "text", "text": "and?"}]},
        ],
    }
    assert request_to_openai(body) == {
        "model": "claude-x", "max_tokens": 100, "temperature": 0.3, "top_p": 0.9, "stop": ["END"],
        "stream": True, "stream_options": {"include_usage": True}, "user": "u1", "reasoning_effort": "medium",
        "tools": [{"type": "function", "function": {"name": "w", "description": "weather",
                                                    "parameters": {"type": "object"}}}],
        "tool_choice": "required", "parallel_tool_calls": False,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA="}},
                {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
            {"role": "assistant", "content": "ok", "tool_calls": [
                {"id": "toolu_1", "type": "function",
                 "function": {"name": "w", "arguments": '{"city":"Rome"}'}}]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "sun"},
            {"role": "user", "content": "and?"},
        ],
    }


@pytest.mark.parametrize(("choice", "expected"), [
    ({"type": "auto"}, "auto"), ({"type": "none"}, "none"),
    ({"type": "tool", "name": "w"}, {"type": "function", "function": {"name": "w"}}),
])
def test_tool_choice(choice: dict[str, Any], expected: Any) -> None:
    body = {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}],
            "tools": [{"name": "w", "input_schema": {"type": "object"}}], "tool_choice": choice}
    assert request_to_openai(body)["tool_choice"] == expected


@pytest.mark.parametrize("missing", ["model", "max_tokens", "messages"])
def test_required_fields(missing: str) -> None:
    body: dict[str, Any] = {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]}
    del body[missing]
    with pytest.raises(InvalidRequest) as info:
        request_to_openai(body)
    assert info.value.param == missing


def test_completion_to_message() -> None:
    body = {"id": "chatcmpl-abc", "object": "chat.completion", "created": 1, "model": "gpt-x", "choices": [{
        "index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Sure.", "reasoning_content": "think",
            "tool_calls": [{"id": "call_1", "type": "function",
                            "function": {"name": "w", "arguments": '{"a":1}'}}]}}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 7, "total_tokens": 37,
                  "prompt_tokens_details": {"cached_tokens": 10}}}
    assert completion_to_message(body) == {
        "id": "msg_abc", "type": "message", "role": "assistant", "model": "gpt-x",
        "content": [{"type": "thinking", "thinking": "think", "signature": ""},
                    {"type": "text", "text": "Sure."},
                    {"type": "tool_use", "id": "call_1", "name": "w", "input": {"a": 1}}],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 20, "output_tokens": 7, "cache_read_input_tokens": 10,
                  "cache_creation_input_tokens": 0}}


def test_error_shapes() -> None:
    assert orjson.loads(error_body(UpstreamUnavailable("busy"))) == {
        "type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
    assert orjson.loads(error_body(InvalidRequest("bad"))) == {
        "type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}
    assert error_event(UpstreamRateLimited("slow")) == (
        b'event: error\ndata: {"type":"error","error":{"type":"rate_limit_error","message":"slow"}}\n\n')


def env(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-xyz", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}


CHUNKS = [
    env({"role": "assistant", "content": ""}),
    env({"reasoning_content": "Let me "}),
    env({"reasoning_content": "think."}),
    env({"content": "Calling "}),
    env({"content": "tools."}),
    env({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                         "function": {"name": "w", "arguments": ""}}]}),
    env({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
    env({"tool_calls": [{"index": 0, "function": {"arguments": '"Rome"}'}}]}),
    env({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                         "function": {"name": "t", "arguments": "{}"}}]}),
    env({}, "tool_calls"),
    {"id": "chatcmpl-xyz", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x", "choices": [],
     "usage": {"prompt_tokens": 40, "completion_tokens": 12, "total_tokens": 52,
               "prompt_tokens_details": {"cached_tokens": 4}}},
]


def write(chunks: list[dict[str, Any]]) -> bytes:
    w = MessagesStreamWriter(model="fallback")
    return b"".join(w.feed(c) for c in chunks) + w.finish()


def test_stream_events_exact() -> None:
    events = [(e.event, orjson.loads(e.data)) for e in SSEDecoder().feed(write(CHUNKS))]
    start = {"id": "msg_xyz", "type": "message", "role": "assistant", "model": "gpt-x", "content": [],
             "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}

    def delta(i: int, d: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return "content_block_delta", {"type": "content_block_delta", "index": i, "delta": d}

    def start_block(i: int, b: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return "content_block_start", {"type": "content_block_start", "index": i, "content_block": b}

    def stop(i: int) -> tuple[str, dict[str, Any]]:
        return "content_block_stop", {"type": "content_block_stop", "index": i}

    assert events == [
        ("message_start", {"type": "message_start", "message": start}),
        start_block(0, {"type": "thinking", "thinking": "", "signature": ""}),
        delta(0, {"type": "thinking_delta", "thinking": "Let me "}),
        delta(0, {"type": "thinking_delta", "thinking": "think."}),
        stop(0),
        start_block(1, {"type": "text", "text": ""}),
        delta(1, {"type": "text_delta", "text": "Calling "}),
        delta(1, {"type": "text_delta", "text": "tools."}),
        stop(1),
        start_block(2, {"type": "tool_use", "id": "call_a", "name": "w", "input": {}}),
        delta(2, {"type": "input_json_delta", "partial_json": '{"city":'}),
        delta(2, {"type": "input_json_delta", "partial_json": '"Rome"}'}),
        stop(2),
        start_block(3, {"type": "tool_use", "id": "call_b", "name": "t", "input": {}}),
        delta(3, {"type": "input_json_delta", "partial_json": "{}"}),
        stop(3),
        ("message_delta", {"type": "message_delta",
                           "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                           "usage": {"input_tokens": 36, "output_tokens": 12, "cache_read_input_tokens": 4,
                                     "cache_creation_input_tokens": 0}}),
        ("message_stop", {"type": "message_stop"}),
    ]


def test_finish_is_idempotent_and_starts_an_empty_stream() -> None:
    w = MessagesStreamWriter(model="m")
    names = [e.event for e in SSEDecoder().feed(w.finish())]
    assert names == ["message_start", "message_delta", "message_stop"]
    assert w.finish() == b""


async def sdk_final(raw: bytes) -> anthropic.types.Message:
    async with AnthropicSim() as sim, anthropic.AsyncAnthropic(base_url=sim.base_url.removesuffix("/v1"),
                                                               api_key="k", max_retries=0) as client:
        sim.replies.append(Reply(sse=frames(raw)))
        async with client.messages.stream(model="m", max_tokens=10,
                                          messages=[{"role": "user", "content": "x"}]) as stream:
            return await stream.get_final_message()


async def test_anthropic_sdk_accumulates_our_stream() -> None:
    msg = await sdk_final(write(CHUNKS))
    assert msg.id == "msg_xyz" and msg.model == "gpt-x" and msg.stop_reason == "tool_use"
    assert [b.type for b in msg.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert msg.content[1].text == "Calling tools."  # type: ignore[union-attr]
    assert msg.content[2].input == {"city": "Rome"}  # type: ignore[union-attr]
    assert msg.content[3].input == {}  # type: ignore[union-attr]
    assert (msg.usage.input_tokens, msg.usage.output_tokens, msg.usage.cache_read_input_tokens) == (36, 12, 4)


async def test_anthropic_sdk_raises_on_our_error_event() -> None:
    w = MessagesStreamWriter(model="m")
    raw = w.feed(env({"role": "assistant", "content": ""})) + w.feed(env({"content": "Par"}))
    raw += error_event(UpstreamUnavailable("upstream overloaded"))
    with pytest.raises(anthropic.APIStatusError, match="upstream overloaded"):
        await sdk_final(raw)
