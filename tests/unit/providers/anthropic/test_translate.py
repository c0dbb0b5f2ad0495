"""Request, reply and error translation between OpenAI chat and Anthropic Messages."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from sluice.errors import (
    InvalidRequest,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamUnavailable,
)
from sluice.providers.anthropic.translate import (
    error_from_event,
    error_from_response,
    from_message,
    to_messages_request,
)


def req(**kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "alias", "messages": [{"role": "user", "content": "hi"}]}
    body.update(kw)
    return to_messages_request(body, upstream_model="claude-x", max_tokens_default=4096, stream=False)


def test_minimal_uses_upstream_model_and_default_max_tokens() -> None:
    assert req() == {"model": "claude-x", "max_tokens": 4096,
                     "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}


def test_stream_flag() -> None:
    body = {"model": "a", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    assert to_messages_request(body, upstream_model="m", max_tokens_default=1, stream=True)["stream"] is True


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    assert req(max_tokens=10)["max_tokens"] == 10
    assert req(max_tokens=10, max_completion_tokens=20)["max_tokens"] == 20


def test_system_and_developer_hoisted_in_order() -> None:
    out = req(messages=[{"role": "system", "content": "A"}, {"role": "user", "content": "hi"},
                        {"role": "developer", "content": [{"type": "text", "text": "B"}]}])
    assert out["system"] == "A\n\nB"
    assert out["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]


def test_tool_round_trip_merges_tool_results_and_following_user_text() -> None:
    out = req(messages=[
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "w", "arguments": '{"city":"Paris"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "t", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "noon"}]},
        {"role": "user", "content": "thanks"},
    ])
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "call_1", "name": "w", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "t", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": "noon"},
            {"type": "text", "text": "thanks"}]},
    ]


def test_invalid_tool_arguments_is_400_naming_the_param() -> None:
    with pytest.raises(InvalidRequest) as info:
        req(messages=[{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "b", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}])
    assert info.value.status == 400 and info.value.param == "messages[1].tool_calls[1].function.arguments"


def test_images() -> None:
    out = req(messages=[{"role": "user", "content": [
        {"type": "text", "text": "what?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]}])
    assert out["messages"][0]["content"] == [
        {"type": "text", "text": "what?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}]


def test_bad_image_url_is_400() -> None:
    with pytest.raises(InvalidRequest) as info:
        req(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}])
    assert info.value.param == "messages[0].content[0].image_url.url"


def test_input_audio_is_400() -> None:
    with pytest.raises(InvalidRequest) as info:
        req(messages=[{"role": "user", "content": [
            {"type": "text", "text": "x"},
            {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}])
    assert info.value.status == 400 and info.value.param == "messages[0].content[1]"


@pytest.mark.parametrize("value", [0, 0.5, 1])
def test_temperature_in_range(value: float) -> None:
    assert req(temperature=value)["temperature"] == value


@pytest.mark.parametrize("value", [1.5, -0.1, 2])
def test_temperature_out_of_range_is_400(value: float) -> None:
    with pytest.raises(InvalidRequest) as info:
        req(temperature=value)
    assert info.value.param == "temperature"


def test_top_p_and_stop() -> None:
    assert req(top_p=0.9)["top_p"] == 0.9
    assert req(stop="END")["stop_sequences"] == ["END"]
    assert req(stop=["a", "b", "c", "d"])["stop_sequences"] == ["a", "b", "c", "d"]


def test_too_many_stop_sequences_is_400() -> None:
    with pytest.raises(InvalidRequest) as info:
        req(stop=["a", "b", "c", "d", "e"])
    assert info.value.param == "stop"


def test_tools_and_tool_choice() -> None:
    tools = [{"type": "function", "function": {"name": "w", "description": "weather",
                                               "parameters": {"type": "object", "properties": {"c": {}}}}},
             {"type": "function", "function": {"name": "t"}}]
    out = req(tools=tools)
    assert out["tools"] == [
        {"name": "w", "description": "weather", "input_schema": {"type": "object", "properties": {"c": {}}}},
        {"name": "t", "input_schema": {"type": "object", "properties": {}}}]
    assert "tool_choice" not in out
    assert req(tools=tools, tool_choice="auto")["tool_choice"] == {"type": "auto"}
    assert req(tools=tools, tool_choice="required")["tool_choice"] == {"type": "any"}
    assert req(tools=tools, tool_choice="none")["tool_choice"] == {"type": "none"}
    named = {"type": "function", "function": {"name": "w"}}
    assert req(tools=tools, tool_choice=named)["tool_choice"] == {"type": "tool", "name": "w"}
    assert req(tools=tools, parallel_tool_calls=False)["tool_choice"] == {
        "type": "auto", "disable_parallel_tool_use": True}
    assert req(tools=tools, tool_choice="required", parallel_tool_calls=False)["tool_choice"] == {
        "type": "any", "disable_parallel_tool_use": True}
    assert req(tools=tools, tool_choice="none", parallel_tool_calls=False)["tool_choice"] == {"type": "none"}


def test_bad_tool_choice_is_400() -> None:
    with pytest.raises(InvalidRequest) as info:
        req(tools=[{"type": "function", "function": {"name": "w"}}], tool_choice="sometimes")
    assert info.value.param == "tool_choice"


def test_user_becomes_metadata() -> None:
    assert req(user="u-42")["metadata"] == {"user_id": "u-42"}


@pytest.mark.parametrize(("param", "value"), [
    ("n", 2), ("logprobs", True), ("top_logprobs", 3), ("logit_bias", {"50256": -100}),
    ("presence_penalty", 0.5), ("frequency_penalty", -1), ("seed", 7),
    ("response_format", {"type": "json_object"}),
])
def test_unsupported_parameters_are_400_with_param(param: str, value: Any) -> None:
    with pytest.raises(InvalidRequest) as info:
        req(**{param: value})
    assert info.value.status == 400 and info.value.param == param


def test_default_values_of_unsupported_parameters_are_fine() -> None:
    out = req(n=1, logprobs=False, presence_penalty=0, frequency_penalty=0.0, logit_bias={}, seed=None)
    assert set(out) == {"model", "max_tokens", "messages"}


@pytest.mark.parametrize(("effort", "budget"), [("low", 1024), ("medium", 4096), ("high", 16384)])
def test_reasoning_effort_sets_thinking_budget_below_max_tokens(effort: str, budget: int) -> None:
    out = req(reasoning_effort=effort, max_tokens=2000)
    assert out["thinking"] == {"type": "enabled", "budget_tokens": budget}
    assert out["max_tokens"] > budget
    assert req(reasoning_effort=effort, max_tokens=50000)["max_tokens"] == 50000


def test_bad_reasoning_effort_is_400() -> None:
    with pytest.raises(InvalidRequest) as info:
        req(reasoning_effort="extreme")
    assert info.value.param == "reasoning_effort"


def test_unknown_role_is_400() -> None:
    with pytest.raises(InvalidRequest) as info:
        req(messages=[{"role": "function", "content": "x"}])
    assert info.value.param == "messages[0].role"


SIGNED = [{"type": "thinking", "thinking": "I should call w.\n", "signature": "EqQBCgIY+/="},
          {"type": "redacted_thinking", "data": "EmwKAhgBEgy3"}]
TOOL_TURN = [{"role": "user", "content": "weather?"},
             {"role": "assistant", "content": "Checking.", "thinking_blocks": SIGNED,
              "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
             {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"}]


def test_signed_thinking_goes_back_first_in_order_when_thinking_is_on() -> None:
    turn = req(messages=TOOL_TURN, reasoning_effort="low")["messages"][1]
    assert turn == {"role": "assistant", "content": [
        *SIGNED, {"type": "text", "text": "Checking."}, {"type": "tool_use", "id": "toolu_1", "name": "w",
                                                         "input": {}}]}
    assert orjson.dumps(turn["content"][0]) == orjson.dumps(SIGNED[0])  # the same bytes, keys in order
    # with thinking off Anthropic refuses thinking in a final assistant turn: it is left out
    assert [b["type"] for b in req(messages=TOOL_TURN)["messages"][1]["content"]] == ["text", "tool_use"]


def test_unknown_keys_on_a_thinking_block_are_dropped() -> None:
    turn = [{"role": "assistant", "content": "x", "thinking_blocks": [{**SIGNED[0], "cache_control": {}}]}]
    assert req(messages=turn, reasoning_effort="low")["messages"][0]["content"][0] == SIGNED[0]


@pytest.mark.parametrize(("blocks", "param"), [
    ("sig", "messages[1].thinking_blocks"),
    ([{"type": "thinking", "thinking": "x"}], "messages[1].thinking_blocks[0]"),
    ([SIGNED[0], {"type": "redacted_thinking", "data": 5}], "messages[1].thinking_blocks[1]"),
    ([{"type": "reasoning.text", "text": "x"}], "messages[1].thinking_blocks[0]"),
    ([SIGNED[1]] * 257, "messages[1].thinking_blocks"),
])
def test_malformed_thinking_blocks_are_400(blocks: Any, param: str) -> None:
    messages = [TOOL_TURN[0], {**TOOL_TURN[1], "thinking_blocks": blocks}, TOOL_TURN[2]]
    for effort in ("low", None):
        with pytest.raises(InvalidRequest) as info:
            req(messages=messages, reasoning_effort=effort)
        assert info.value.status == 400 and info.value.param == param


MESSAGE: dict[str, Any] = {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
    "content": [{"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "redacted_thinking", "data": "EmwKAhgB"},
                {"type": "text", "text": "Hello "}, {"type": "text", "text": "there"},
                {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"city": "Rome"}},
                {"type": "tool_use", "id": "toolu_2", "name": "t", "input": {}}],
    "stop_reason": "tool_use", "stop_sequence": None,
    "usage": {"input_tokens": 10, "cache_creation_input_tokens": 5, "cache_read_input_tokens": 100,
              "output_tokens": 20},
}


def test_reply_to_chat_completion() -> None:
    assert from_message(MESSAGE, created=1, model="fallback") == {
        "id": "chatcmpl-msg_1", "object": "chat.completion", "created": 1, "model": "claude-x",
        "choices": [{"index": 0, "logprobs": None, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Hello there", "refusal": None, "reasoning_content": "hmm",
            "thinking_blocks": [{"type": "thinking", "thinking": "hmm", "signature": "sig"},
                                {"type": "redacted_thinking", "data": "EmwKAhgB"}],
            "tool_calls": [
                {"id": "toolu_1", "type": "function",
                 "function": {"name": "w", "arguments": '{"city":"Rome"}'}},
                {"id": "toolu_2", "type": "function", "function": {"name": "t", "arguments": "{}"}}]}}],
        "usage": {"prompt_tokens": 115, "completion_tokens": 20, "total_tokens": 135,
                  "prompt_tokens_details": {"cached_tokens": 100},
                  "completion_tokens_details": {"reasoning_tokens": 0}},
    }


@pytest.mark.parametrize(("stop", "finish"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("pause_turn", "stop"), ("max_tokens", "length"),
    ("model_context_window_exceeded", "length"), ("tool_use", "tool_calls"), ("refusal", "content_filter"),
    ("something_new", "stop"),
])
def test_stop_reason_mapping(stop: str, finish: str) -> None:
    msg = {"id": "m", "model": "x", "content": [{"type": "text", "text": "a"}], "stop_reason": stop,
           "usage": {"input_tokens": 1, "output_tokens": 1}}
    assert from_message(msg, created=1, model="x")["choices"][0]["finish_reason"] == finish


def err(kind: str, message: str = "boom") -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}, "request_id": "r"})


def test_error_529_is_503() -> None:
    e = error_from_response(529, err("overloaded_error", "Overloaded"), {"retry-after": "3"})
    assert isinstance(e, UpstreamUnavailable) and e.status == 503 and e.message == "Overloaded"
    assert e.retry_after == 3


def test_error_429_keeps_retry_after() -> None:
    e = error_from_response(429, err("rate_limit_error"), {"retry-after": "7"})
    assert isinstance(e, UpstreamRateLimited) and e.status == 429 and e.retry_after == 7


def test_error_500_api_error_is_502() -> None:
    e = error_from_response(500, err("api_error"), {})
    assert type(e) is UpstreamError and e.status == 502


def test_error_400_relayed_with_message() -> None:
    e = error_from_response(400, err("invalid_request_error", "max_tokens: too big"), {})
    assert isinstance(e, UpstreamRejected) and e.status == 400 and not e.retryable
    assert e.to_dict()["error"] == {"message": "max_tokens: too big", "type": "invalid_request_error",
                                    "param": None, "code": None}


def test_error_with_non_json_body() -> None:
    e = error_from_response(502, b"<html>bad gateway</html>", {})
    assert e.status == 502 and "bad gateway" in e.message


@pytest.mark.parametrize(("kind", "cls", "status"), [
    ("overloaded_error", UpstreamUnavailable, 503), ("rate_limit_error", UpstreamRateLimited, 429),
    ("api_error", UpstreamError, 502), ("invalid_request_error", UpstreamRejected, 400),
])
def test_error_event_mapping(kind: str, cls: type[UpstreamError], status: int) -> None:
    e = error_from_event({"type": "error", "error": {"type": kind, "message": "m"}})
    assert type(e) is cls and e.status == status
