"""Golden streams: recorded-shape Gemini `alt=sse` fixtures -> the exact OpenAI chunk sequence."""

from __future__ import annotations

import orjson
import pytest

from sluice.errors import UpstreamError, UpstreamUnavailable
from sluice.providers.gemini.stream import GeminiStreamState
from sluice.schema.usage import Usage

from .golden import CREATED, Expect, counter_ids, fixture, parsed, replay


def test_text_over_several_events_literal_sequence() -> None:
    chunks = replay(fixture("text.sse"))
    env = '"id":"chatcmpl-resp-text-1","object":"chat.completion.chunk","created":1700000000,' \
          '"model":"gemini-2.5-flash"'
    assert [c.payload.decode() for c in chunks] == [
        '{' + env + ',"choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,'
        '"finish_reason":null}]}',
        '{' + env + ',"choices":[{"index":0,"delta":{"content":"Hel"},"logprobs":null,'
        '"finish_reason":null}]}',
        '{' + env + ',"choices":[{"index":0,"delta":{"content":"lo, wörld "},"logprobs":null,'
        '"finish_reason":null}]}',
        '{' + env + ',"choices":[{"index":0,"delta":{"content":"日本語 🌍\\n"},"logprobs":null,'
        '"finish_reason":null}]}',
        '{' + env + ',"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}',
        '{' + env + ',"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":7,"total_tokens":16,'
        '"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}',
    ]
    assert [c.text for c in chunks] == ["", "Hel", "lo, wörld ", "日本語 🌍\n", "", ""]
    assert [c.finish for c in chunks] == [False, False, False, False, True, False]
    assert [c.usage_only for c in chunks] == [False] * 5 + [True]
    assert chunks[-1].usage == Usage(9, 7)
    assert all(c.usage is None for c in chunks[:-1])


@pytest.mark.parametrize("piece", [1, 2, 3, 7, 64])
def test_fragmented_reads_give_the_same_chunks_and_valid_utf8(piece: int) -> None:
    whole = replay(fixture("text.sse"))
    cut = replay(fixture("text.sse"), piece=piece)
    assert [c.payload for c in cut] == [c.payload for c in whole]
    for c in cut:
        c.payload.decode("utf-8")  # strict


def test_parallel_function_calls_become_one_fragment_each() -> None:
    e = Expect("chatcmpl-resp-calls", "gemini-2.5-flash")
    assert parsed(replay(fixture("parallel_calls.sse"))) == [
        e.role(),
        e.delta({"tool_calls": [{"index": 0, "id": "call_0", "type": "function",
                                 "function": {"name": "get_weather",
                                              "arguments": '{"city":"Paris","unit":"c"}'}}]}),
        e.delta({"tool_calls": [{"index": 1, "id": "call_1", "type": "function",
                                 "function": {"name": "get_time", "arguments": "{}"}}]}),
        e.delta({"tool_calls": [{"index": 2, "id": "call_2", "type": "function",
                                 "function": {"name": "ping", "arguments": "{}"}}]}),
        e.finish("tool_calls"),  # Gemini said STOP
        e.usage(40, 22),
    ]


def test_thinking_then_tool_call() -> None:
    chunks = replay(fixture("thinking_tool.sse"))
    e = Expect("chatcmpl-resp-think", "gemini-2.5-pro")
    assert parsed(chunks) == [
        e.role(),
        e.delta({"reasoning_content": "**Checking the weather**\nThe user wants Paris."}),
        e.text("Let me look that up."),
        e.delta({"tool_calls": [{"index": 0, "id": "call_0", "type": "function",
                                 "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]}),
        e.finish("tool_calls"),
        e.usage(30, 57, reasoning=45),
    ]
    assert chunks[3].text == 'get_weather{"city":"Paris"}'


def test_usage_is_cumulative_with_cached_and_thought_tokens() -> None:
    chunks = replay(fixture("usage_cached.sse"))
    e = Expect("chatcmpl-resp-cache", "gemini-2.5-flash")
    assert parsed(chunks) == [
        e.role(), e.text("Cached"), e.text(" answer."),  # the empty text part is dropped
        e.finish("length"),
        e.usage(2100, 34, cached=2048, reasoning=30),  # the last report, never the sum
    ]
    assert chunks[-1].usage == Usage(2100, 34, cached_tokens=2048, reasoning_tokens=30)


def test_blocked_prompt_is_a_content_filter_finish_not_an_empty_success() -> None:
    e = Expect("chatcmpl-resp-blocked", "gemini-2.5-flash")
    assert parsed(replay(fixture("blocked.sse"))) == [e.role(), e.finish("content_filter"), e.usage(12, 0)]


def test_mid_stream_error_object_raises_the_mapped_error() -> None:
    state = GeminiStreamState(upstream_model="m", created=CREATED, new_id=counter_ids())
    events = [ev for ev in fixture("midstream_error.sse").split(b"\n\n") if ev.strip()]
    got = state.feed(orjson.loads(events[0].removeprefix(b"data: ")))
    assert [c.parsed["choices"][0]["delta"] for c in got if c.parsed] == [
        {"role": "assistant", "content": ""}, {"content": "Partial"}]
    with pytest.raises(UpstreamUnavailable) as info:
        state.feed(orjson.loads(events[1].removeprefix(b"data: ")))
    assert info.value.status == 503
    assert info.value.message == "The model is overloaded. Please try again later."
    assert info.value.to_dict()["error"]["code"] == "upstream_unavailable"


def test_mid_stream_error_through_replay() -> None:
    with pytest.raises(UpstreamUnavailable):
        replay(fixture("midstream_error.sse"))


def test_eof_without_finish_reason_is_truncation_not_stop() -> None:
    with pytest.raises(UpstreamError, match="truncated"):
        replay(fixture("eof_no_finish.sse"))


def test_eof_without_any_event_is_an_error() -> None:
    with pytest.raises(UpstreamError):
        replay(b"")


def test_partial_usage_is_kept_when_the_stream_is_cut() -> None:
    state = GeminiStreamState(upstream_model="m", created=CREATED)
    state.feed({"candidates": [{"content": {"parts": [{"text": "x"}]}, "index": 0}],
                "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 1}})
    assert state.usage == Usage(5, 1)
    with pytest.raises(UpstreamError):
        state.end()


def test_crlf_line_endings() -> None:
    raw = fixture("crlf.sse")
    assert b"\r\n\r\n" in raw
    e = Expect("chatcmpl-resp-crlf", "gemini-2.0-flash")
    expected = [e.role(), e.text("Line one"), e.text(" and été"), e.finish("stop"), e.usage(3, 4)]
    assert parsed(replay(raw)) == expected
    assert parsed(replay(raw, piece=1)) == expected


def test_two_candidates_are_separate_choices() -> None:
    e = Expect("chatcmpl-resp-n2", "gemini-2.5-flash")
    assert parsed(replay(fixture("two_candidates.sse"))) == [
        e.role(0), e.text("A", 0), e.role(1), e.text("B", 1),
        e.text("a", 0), e.finish("stop", 0), e.text("b", 1), e.finish("length", 1),
        e.usage(4, 4),
    ]


def test_model_falls_back_to_upstream_model_and_role_appears_once() -> None:
    state = GeminiStreamState(upstream_model="gemini-x", created=CREATED)
    out = state.feed({"candidates": [{"content": {"parts": [{"text": "a"}]}}], "responseId": "r"})
    out += state.feed({"candidates": [{"content": {"parts": [{"text": "b"}]}, "finishReason": "SAFETY"}]})
    out += state.end()
    e = Expect("chatcmpl-r", "gemini-x")
    # no usage was reported, so no usage chunk (None is never zero)
    assert parsed(out) == [e.role(), e.text("a"), e.text("b"), e.finish("content_filter")]


def test_nothing_follows_a_finish_chunk() -> None:
    state = GeminiStreamState(upstream_model="m", created=CREATED)
    out = state.feed({"candidates": [{"content": {"parts": [{"text": "a"}]}, "finishReason": "STOP"}],
                      "responseId": "r"})
    out += state.feed({"candidates": [{"content": {"parts": [{"text": "late"}]}, "index": 0}],
                       "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1}})
    out += state.end()
    e = Expect("chatcmpl-r", "m")
    assert parsed(out) == [e.role(), e.text("a"), e.finish("stop"), e.usage(1, 1)]


def test_non_object_event_raises() -> None:
    state = GeminiStreamState(upstream_model="m")
    with pytest.raises(UpstreamError):
        state.feed([1, 2])
