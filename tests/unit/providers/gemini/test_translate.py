"""OpenAI chat request -> Gemini generateContent body: every mapping rule and every 400 with its param."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from sluice.errors import InvalidRequest
from sluice.providers.gemini.translate import to_gemini_request


def req(messages: list[dict[str, Any]] | None = None, **kw: Any) -> dict[str, Any]:
    return {"model": "g", "messages": messages or [{"role": "user", "content": "hi"}], **kw}


def bad(body: dict[str, Any]) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        to_gemini_request(body)
    assert info.value.status == 400
    return info.value


def test_minimal() -> None:
    assert to_gemini_request(req()) == {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


def test_system_and_developer_hoisted_in_order() -> None:
    out = to_gemini_request(req([
        {"role": "system", "content": "one"},
        {"role": "user", "content": "q"},
        {"role": "developer",
         "content": [{"type": "text", "text": "two"}, {"type": "text", "text": "three"}]},
        {"role": "assistant", "content": "a"},
    ]))
    assert out["systemInstruction"] == {"parts": [{"text": "one"}, {"text": "two"}, {"text": "three"}]}
    assert out["contents"] == [{"role": "user", "parts": [{"text": "q"}]},
                               {"role": "model", "parts": [{"text": "a"}]}]


def test_tool_round_trip() -> None:
    out = to_gemini_request(req([
        {"role": "user", "content": "weather and time?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_a", "type": "function",
             "function": {"name": "weather", "arguments": '{"city":"Oslo"}'}},
            {"id": "call_b", "type": "function", "function": {"name": "time", "arguments": ""}},
        ]},
        {"role": "tool", "tool_call_id": "call_a", "content": "rain"},
        {"role": "tool", "tool_call_id": "call_b", "content": [{"type": "text", "text": "12:00"}]},
        {"role": "user", "content": "thanks"},
        {"role": "tool", "tool_call_id": "call_a", "content": "again"},
    ]))
    assert out["contents"] == [
        {"role": "user", "parts": [{"text": "weather and time?"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "weather", "args": {"city": "Oslo"}}},
                                    {"functionCall": {"name": "time", "args": {}}}]},
        {"role": "user", "parts": [
            {"functionResponse": {"name": "weather", "response": {"output": "rain"}}},
            {"functionResponse": {"name": "time", "response": {"output": "12:00"}}},
        ]},
        {"role": "user", "parts": [{"text": "thanks"}]},
        {"role": "user",
         "parts": [{"functionResponse": {"name": "weather", "response": {"output": "again"}}}]},
    ]


def test_unknown_tool_call_id_is_400() -> None:
    err = bad(req([{"role": "user", "content": "q"},
                   {"role": "tool", "tool_call_id": "nope", "content": "x"}]))
    assert err.param == "messages[1].tool_call_id"


def test_invalid_tool_arguments_json_is_400() -> None:
    err = bad(req([{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
        {"id": "c2", "type": "function", "function": {"name": "f", "arguments": "{bad"}},
    ]}]))
    assert err.param == "messages[1].tool_calls[1].function.arguments"


def test_tool_arguments_must_be_an_object() -> None:
    err = bad(req([{"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}]))
    assert err.param == "messages[0].tool_calls[0].function.arguments"


def test_images_and_audio() -> None:
    out = to_gemini_request(req([{"role": "user", "content": [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        {"type": "input_audio", "input_audio": {"data": "SUQz", "format": "mp3"}},
    ]}]))
    assert out["contents"][0]["parts"] == [
        {"text": "look"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
        {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
        {"inlineData": {"mimeType": "audio/mp3", "data": "SUQz"}},
    ]


def test_http_image_url_is_400_naming_the_part() -> None:
    err = bad(req([{"role": "user", "content": [
        {"type": "text", "text": "x"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]))
    assert err.param == "messages[0].content[1].image_url.url"


def test_non_base64_data_url_is_400() -> None:
    err = bad(req([{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png,rawbytes"}}]}]))
    assert err.param == "messages[0].content[0].image_url.url"


def test_bad_audio_format_and_unknown_part_type() -> None:
    assert bad(req([{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "x", "format": "flac"}}]}])).param == \
        "messages[0].content[0].input_audio.format"
    assert bad(req([{"role": "user", "content": [{"type": "file", "file": {}}]}])).param == \
        "messages[0].content[0].type"


def test_unknown_role_is_400() -> None:
    assert bad(req([{"role": "function", "content": "x"}])).param == "messages[0].role"


def test_generation_config() -> None:
    out = to_gemini_request(req(temperature=0.3, top_p=0.9, max_tokens=100, stop="END", n=2, seed=7,
                                presence_penalty=0.5, frequency_penalty=-0.5, logprobs=True, top_logprobs=3))
    assert out["generationConfig"] == {
        "temperature": 0.3, "topP": 0.9, "candidateCount": 2, "seed": 7, "presencePenalty": 0.5,
        "frequencyPenalty": -0.5, "responseLogprobs": True, "logprobs": 3, "maxOutputTokens": 100,
        "stopSequences": ["END"],
    }


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    out = to_gemini_request(req(max_tokens=10, max_completion_tokens=20, stop=["a", "b", "c", "d"]))
    assert out["generationConfig"] == {"maxOutputTokens": 20, "stopSequences": ["a", "b", "c", "d"]}


def test_more_than_four_stop_sequences_is_400() -> None:
    assert bad(req(stop=["a", "b", "c", "d", "e"])).param == "stop"
    assert bad(req(stop=[1])).param == "stop"


def test_response_format() -> None:
    assert "generationConfig" not in to_gemini_request(req(response_format={"type": "text"}))
    assert to_gemini_request(req(response_format={"type": "json_object"}))["generationConfig"] == {
        "responseMimeType": "application/json"}
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}
    out = to_gemini_request(req(response_format=fmt))
    assert out["generationConfig"] == {"responseMimeType": "application/json", "responseJsonSchema": schema}
    assert bad(req(response_format={"type": "yaml"})).param == "response_format.type"
    assert bad(req(response_format={"type": "json_schema", "json_schema": {"name": "x"}})).param == \
        "response_format.json_schema.schema"


def test_tools_and_tool_choice() -> None:
    params = {"type": "object", "properties": {"city": {"type": "string"}}}
    tools = [{"type": "function",
              "function": {"name": "weather", "description": "Weather", "parameters": params}},
             {"type": "function", "function": {"name": "now"}}]
    out = to_gemini_request(req(tools=tools, tool_choice="auto"))
    assert out["tools"] == [{"functionDeclarations": [
        {"name": "weather", "description": "Weather", "parametersJsonSchema": params}, {"name": "now"}]}]
    assert out["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}
    for choice, config in (("none", {"mode": "NONE"}), ("required", {"mode": "ANY"}),
                           ({"type": "function", "function": {"name": "now"}},
                            {"mode": "ANY", "allowedFunctionNames": ["now"]})):
        assert to_gemini_request(req(tools=tools, tool_choice=choice))["toolConfig"] == {
            "functionCallingConfig": config}
    assert bad(req(tools=tools, tool_choice="sometimes")).param == "tool_choice"
    assert bad(req(tools=[{"type": "web_search"}])).param == "tools[0].type"


def test_reasoning_effort() -> None:
    for effort, budget in (("low", 1024), ("medium", 8192), ("high", 24576)):
        assert to_gemini_request(req(reasoning_effort=effort))["generationConfig"] == {
            "thinkingConfig": {"thinkingBudget": budget, "includeThoughts": True}}
    assert bad(req(reasoning_effort="extreme")).param == "reasoning_effort"


def test_logit_bias_is_400() -> None:
    assert bad(req(logit_bias={"50256": -100})).param == "logit_bias"


def test_request_body_is_not_mutated() -> None:
    body = req([{"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c", "content": "r"}],
        stream=True, stream_options={"include_usage": True})
    before = copy.deepcopy(body)
    out = to_gemini_request(body)
    assert body == before
    assert "stream" not in out and "stream_options" not in out and "model" not in out


def test_content_of_the_wrong_type_is_400() -> None:
    assert bad(req([{"role": "user", "content": 42}])).param == "messages[0].content"
    err = bad(req([{"role": "system", "content": [{"type": "image_url"}]}]))
    assert err.param == "messages[0].content[0]"
