"""Golden streams: recorded-shape Anthropic SSE fixtures -> the exact OpenAI chunk sequence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from sluice.errors import UpstreamError, UpstreamRateLimited, UpstreamUnavailable
from sluice.providers.anthropic.stream import StreamTranslator
from sluice.providers.base import Chunk
from sluice.sse import SSEDecoder

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures" / "anthropic"
CREATED = 1_700_000_000


def run(name: str, *, piece: int | None = None) -> tuple[StreamTranslator, list[Chunk]]:
    raw = (FIXTURES / name).read_bytes()
    pieces = [raw] if piece is None else [raw[i:i + piece] for i in range(0, len(raw), piece)]
    decoder, sm, out = SSEDecoder(), StreamTranslator(created=CREATED, model="fallback"), []
    for p in pieces:
        for ev in decoder.feed(p):
            out.extend(sm.feed(ev.event, orjson.loads(ev.data)))
    sm.eof()
    return sm, out


def chunk(cid: str, model: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": cid, "object": "chat.completion.chunk", "created": CREATED, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}


def usage_chunk(cid: str, model: str, prompt: int, completion: int, cached: int = 0) -> dict[str, Any]:
    return {"id": cid, "object": "chat.completion.chunk", "created": CREATED, "model": model, "choices": [],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion, "prompt_tokens_details": {"cached_tokens": cached},
                      "completion_tokens_details": {"reasoning_tokens": 0}}}


def payloads(chunks: list[Chunk]) -> list[Any]:
    for c in chunks:
        assert c.parsed is not None and orjson.loads(c.payload) == c.parsed
    return [orjson.loads(c.payload) for c in chunks]


def tool_start(cid: str, model: str, k: int, tid: str, name: str) -> dict[str, Any]:
    return chunk(cid, model, {"tool_calls": [{"index": k, "id": tid, "type": "function",
                                              "function": {"name": name, "arguments": ""}}]})


def tool_args(cid: str, model: str, k: int, frag: str) -> dict[str, Any]:
    return chunk(cid, model, {"tool_calls": [{"index": k, "function": {"arguments": frag}}]})


@pytest.mark.parametrize("piece", [None, 1, 7])
def test_text(piece: int | None) -> None:
    _, chunks = run("text.sse", piece=piece)
    cid, m = "chatcmpl-msg_01Text", "claude-sonnet-4-5"
    assert payloads(chunks) == [
        chunk(cid, m, {"role": "assistant", "content": ""}),
        chunk(cid, m, {"content": "Hello"}),
        chunk(cid, m, {"content": ", wörld ✓"}),
        chunk(cid, m, {}, "stop"),
        usage_chunk(cid, m, 12, 5),
    ]
    assert [c.text for c in chunks] == ["", "Hello", ", wörld ✓", "", ""]
    assert [c.finish for c in chunks] == [False, False, False, True, False]
    assert [c.usage_only for c in chunks] == [False] * 4 + [True]
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 17


def test_ping_is_dropped_and_max_tokens_is_length() -> None:
    _, chunks = run("ping.sse")
    cid, m = "chatcmpl-msg_01Ping", "claude-haiku-4-5"
    assert payloads(chunks) == [
        chunk(cid, m, {"role": "assistant", "content": ""}),
        chunk(cid, m, {"content": "Hi"}),
        chunk(cid, m, {}, "length"),
        usage_chunk(cid, m, 3, 1),
    ]


def test_parallel_tool_calls_renumbered_and_empty_input_is_braces() -> None:
    _, chunks = run("parallel_tools.sse")
    cid, m = "chatcmpl-msg_01Tools", "claude-sonnet-4-5"
    assert payloads(chunks) == [
        chunk(cid, m, {"role": "assistant", "content": ""}),
        chunk(cid, m, {"content": "Checking both."}),
        tool_start(cid, m, 0, "toolu_01A", "get_weather"),
        tool_args(cid, m, 0, '{"city": "Par'),
        tool_args(cid, m, 0, 'is"}'),
        tool_start(cid, m, 1, "toolu_01B", "get_weather"),
        tool_args(cid, m, 1, '{"city": "Oslo"}'),
        tool_start(cid, m, 2, "toolu_01C", "get_time"),
        tool_args(cid, m, 2, "{}"),
        chunk(cid, m, {}, "tool_calls"),
        usage_chunk(cid, m, 400, 88),
    ]


def test_thinking_goes_to_reasoning_content_never_content_and_its_signed_block_comes_whole() -> None:
    _, chunks = run("thinking_tool.sse")
    cid, m = "chatcmpl-msg_01Think", "claude-opus-4-1"
    signed = {"type": "thinking", "thinking": "The user wants the weather.",
              "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"}
    assert payloads(chunks) == [
        chunk(cid, m, {"role": "assistant", "content": ""}),
        chunk(cid, m, {"reasoning_content": "The user wants"}),
        chunk(cid, m, {"reasoning_content": " the weather."}),
        chunk(cid, m, {"thinking_blocks": [signed]}),
        tool_start(cid, m, 0, "toolu_01T", "get_weather"),
        tool_args(cid, m, 0, '{"city":'),
        tool_args(cid, m, 0, '"Rome"}'),
        chunk(cid, m, {}, "tool_calls"),
        usage_chunk(cid, m, 50, 40),
    ]


def test_redacted_thinking_comes_whole_and_adds_no_text() -> None:
    sm = StreamTranslator(created=CREATED, model="m")
    sm.feed("message_start", {"type": "message_start", "message": {"id": "msg_r", "model": "m", "usage": {}}})
    opened = sm.feed("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {
        "type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4a"}})
    closed = sm.feed("content_block_stop", {"type": "content_block_stop", "index": 0})
    assert opened == [] and len(closed) == 1 and closed[0].text == ""
    assert payloads(closed)[0]["choices"][0]["delta"] == {
        "thinking_blocks": [{"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4a"}]}


def test_cache_tokens_added_to_prompt_and_usage_is_cumulative() -> None:
    _, chunks = run("cache_usage.sse")
    cid, m = "chatcmpl-msg_01Cache", "claude-sonnet-4-5"
    assert payloads(chunks) == [
        chunk(cid, m, {"role": "assistant", "content": ""}),
        chunk(cid, m, {"content": "Cached."}),
        chunk(cid, m, {}, "stop"),
        usage_chunk(cid, m, 3210, 9, cached=3000),
    ]


def test_mid_stream_overloaded_error_raises_503() -> None:
    with pytest.raises(UpstreamUnavailable) as info:
        run("error_overloaded.sse")
    assert info.value.status == 503 and info.value.message == "Overloaded"


def test_mid_stream_rate_limit_error_raises_429() -> None:
    sm = StreamTranslator(created=CREATED, model="m")
    with pytest.raises(UpstreamRateLimited):
        sm.feed("error", {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}})


def test_eof_without_message_stop_raises() -> None:
    with pytest.raises(UpstreamError, match="ended before finishing"):
        run("eof.sse")


def test_event_before_message_start_raises() -> None:
    sm = StreamTranslator(created=CREATED, model="m")
    with pytest.raises(UpstreamError):
        sm.feed("content_block_start", {"type": "content_block_start", "index": 0,
                                        "content_block": {"type": "text", "text": ""}})


def test_unknown_events_and_events_after_stop_are_ignored() -> None:
    sm, _ = run("text.sse")
    assert sm.feed("future_event", {"type": "future_event"}) == []
    assert sm.feed("ping", {"type": "ping"}) == []
