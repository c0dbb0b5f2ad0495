"""What current Claude Code sends on /v1/messages: checked (400 naming the field, never a crash) and
translated for non-Anthropic upstreams (system entries hoisted in order, effort, server tools dropped)."""

from __future__ import annotations

from typing import Any

import pytest

from sluice.dialects.anthropic_messages.checks import check_messages_request
from sluice.dialects.anthropic_messages.models import models_page
from sluice.dialects.anthropic_messages.request import reasoning_effort, request_to_openai, translate_request
from sluice.errors import InvalidRequest


def _body(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], **extra}


@pytest.mark.parametrize(("extra", "param"), [
    ({"tools": [1]}, "tools.0"),
    ({"metadata": "x"}, "metadata"),
    ({"stop_sequences": 5}, "stop_sequences"),
    ({"thinking": {"type": "enabled", "budget_tokens": "x"}}, "thinking.budget_tokens"),
    ({"thinking": {"type": "sometimes"}}, "thinking"),
    ({"max_tokens": 10**15}, "max_tokens"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    ({"temperature": 2}, "temperature"),
    ({"top_k": -1}, "top_k"),
    ({"stream": "yes"}, "stream"),
    ({"system": [{"type": "image"}]}, "system.0"),
    ({"output_config": {"effort": "extreme"}}, "output_config.effort"),
    ({"context_management": []}, "context_management"),
    ({"tool_choice": {"type": "tool"}}, "tool_choice.name"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]}, "messages.0.content.0.text"),
    ({"messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "n", "input": 3}]}]},
     "messages.0.content.0.input"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [7]}]}]},
     "messages.0.content.0.content.0"),
])
def test_malformed_fields_name_their_param(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        request_to_openai(_body(**extra))
    assert info.value.param == param and info.value.status == 400


def test_count_only_needs_no_max_tokens() -> None:
    body = _body()
    del body["max_tokens"]
    check_messages_request(body, count_only=True)
    with pytest.raises(InvalidRequest):
        check_messages_request(body)


def test_a_claude_code_body_translates() -> None:
    body = _body(
        system=[{"type": "text", "text": "billing header"},
                {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]},
                  {"role": "system", "content": "first note"},
                  {"role": "assistant", "content": [
                      {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                      {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"file_path": "/x"}}]},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                                "content": [{"type": "text", "text": "data"}]}]},
                  {"role": "system", "content": [{"type": "text", "text": "second note"}]}],
        thinking={"type": "adaptive", "display": "omitted"}, output_config={"effort": "max"},
        context_management={"edits": []}, metadata={"user_id": "u"},
        tools=[{"name": "Read", "input_schema": {"type": "object"}},
               {"type": "custom", "name": "Bash", "input_schema": {"type": "object"}},
               {"type": "web_search_20250305", "name": "web_search"}],
        tool_choice={"type": "auto"})
    out = request_to_openai(body)
    assert out["messages"] == [
        {"role": "system", "content": "billing headerYou are Claude Code.\n\nfirst note\n\nsecond note"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "Read", "arguments": '{"file_path":"/x"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "data"}]
    assert [t["function"]["name"] for t in out["tools"]] == ["Read", "Bash"]
    assert out["reasoning_effort"] == "high" and out["user"] == "u" and out["tool_choice"] == "auto"
    assert "context_management" not in out and "thinking" not in out and "output_config" not in out


def test_forcing_a_server_tool_is_a_clear_400_when_translated() -> None:
    body = _body(tools=[{"type": "web_search_20250305", "name": "web_search"}],
                 tool_choice={"type": "tool", "name": "web_search"})
    with pytest.raises(InvalidRequest) as info:
        request_to_openai(body)
    assert info.value.param == "tool_choice.name" and "server tools" in info.value.message
    only_server = request_to_openai(_body(tools=[{"type": "web_search_20250305", "name": "web_search"}],
                                          tool_choice={"type": "any"}))
    assert "tools" not in only_server and "tool_choice" not in only_server


@pytest.mark.parametrize(("thinking", "config", "effort"), [
    ({"type": "enabled", "budget_tokens": 1024}, None, "low"),
    ({"type": "enabled", "budget_tokens": 4096}, None, "medium"),
    ({"type": "enabled", "budget_tokens": 32000}, None, "high"),
    ({"type": "adaptive"}, None, None),
    ({"type": "adaptive"}, {"effort": "low"}, "low"),
    ({"type": "disabled"}, {"effort": "high"}, None),
    (None, {"effort": "medium"}, "medium"),
])
def test_reasoning_effort(thinking: Any, config: Any, effort: str | None) -> None:
    assert reasoning_effort({"thinking": thinking, "output_config": config}) == effort


def test_models_page_cursors() -> None:
    ids = ["a", "b", "c", "d", "e"]
    first = models_page(ids, {"limit": "2"}, 0)
    assert [m["id"] for m in first["data"]] == ["a", "b"] and first["has_more"] and first["last_id"] == "b"
    assert first["data"][0] == {"type": "model", "id": "a", "display_name": "a", "created_at": "1970-01-01T00:00:00Z"}
    nxt = models_page(ids, {"limit": "2", "after_id": "b"}, 0)
    assert [m["id"] for m in nxt["data"]] == ["c", "d"] and nxt["first_id"] == "c" and nxt["has_more"]
    last = models_page(ids, {"limit": "2", "after_id": "d"}, 0)
    assert [m["id"] for m in last["data"]] == ["e"] and not last["has_more"]
    back = models_page(ids, {"limit": "2", "before_id": "d"}, 0)
    assert [m["id"] for m in back["data"]] == ["b", "c"] and back["has_more"]
    assert models_page(ids, {"after_id": "zz"}, 0)["data"] == []
    for bad in ("0", "1001", "x", "-1"):
        with pytest.raises(InvalidRequest):
            models_page(ids, {"limit": bad}, 0)


def test_an_unservable_translation_is_returned_not_raised() -> None:
    body = _body(tools=[{"type": "web_search_20250305", "name": "web_search"}],
                 tool_choice={"type": "tool", "name": "web_search"})
    out, unservable = translate_request(body)
    assert unservable is not None and unservable.param == "tool_choice.name"
    assert "tool_choice" not in out and "tools" not in out
    assert translate_request(_body())[1] is None
