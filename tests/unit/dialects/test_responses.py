"""The Responses dialect, one golden file per translation direction (a real Codex request -> the chat body;
chat chunks from an OpenAI and an Anthropic-shaped upstream -> the Responses events), plus the lifecycle
rules every stream must keep and the request errors that must name their parameter."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from sluice.dialects.responses.reply import Shell, completion_to_response
from sluice.dialects.responses.request import translate_request
from sluice.dialects.responses.stream import ResponsesStreamWriter
from sluice.dialects.responses.tools import ToolNames
from sluice.errors import InvalidRequest, UpstreamError
from sluice.sse import SSEDecoder

FIX = Path(__file__).resolve().parents[2] / "fixtures"
GOLD = FIX / "responses"
SDK_EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)  # the official client's own types
REGEN = os.environ.get("SLUICE_REGEN_GOLDEN") == "1"  # rewrite the golden files after a reviewed change


def _golden(name: str, got: bytes) -> None:
    path = GOLD / name
    if REGEN:
        path.write_bytes(got)
    assert got == path.read_bytes(), f"{name} differs from the golden file"


def _shell(req: dict[str, Any], model: str = "gpt") -> Shell:
    shell = Shell("req_golden01", model, req)
    shell.created_at = 1700000000  # the one wall-clock field, pinned
    return shell


def _chat_chunks(path: Path) -> list[dict[str, Any]]:
    raw = path.read_bytes()
    if path.suffix == ".jsonl":
        return [orjson.loads(line) for line in raw.splitlines() if line.strip()]
    return [orjson.loads(ev.data) for ev in SSEDecoder().feed(raw) if ev.data != b"[DONE]"]


def _write(chunks: list[dict[str, Any]], tools: ToolNames | None = None) -> bytes:
    writer = ResponsesStreamWriter(_shell({"model": "gpt"}), tools or ToolNames())
    return writer.start() + b"".join(writer.feed(c) for c in chunks) + writer.finish()


def _events(raw: bytes) -> list[dict[str, Any]]:
    out = []
    for ev in SSEDecoder().feed(raw):
        data = orjson.loads(ev.data)
        assert data["type"] == ev.event  # `event:` and the data's `type` agree on every frame
        SDK_EVENT.validate_python(data)
        out.append(data)
    return out


def _check_lifecycle(events: list[dict[str, Any]]) -> None:
    """What Codex and the SDK accumulators rely on, independent of the golden bytes."""
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created" and events[1]["type"] == "response.in_progress"
    assert events[-1]["type"] in ("response.completed", "response.incomplete")
    open_items: dict[str, int] = {}
    done: list[dict[str, Any]] = []
    for e in events[2:-1]:
        if e["type"] == "response.output_item.added":
            assert e["item"]["id"] not in open_items
            open_items[e["item"]["id"]] = e["output_index"]
        elif e["type"] == "response.output_item.done":
            assert open_items.pop(e["item"]["id"]) == e["output_index"]
            done.append(e["item"])
        else:  # every delta and part event belongs to an item that is open
            assert open_items.get(e["item_id"]) == e["output_index"], e
    assert not open_items
    final = events[-1]["response"]
    assert sorted(final["output"], key=lambda i: i["id"]) == sorted(done, key=lambda i: i["id"])
    assert set(final["usage"]["input_tokens_details"]) == {"cached_tokens", "cache_write_tokens"}
    assert set(final["usage"]["output_tokens_details"]) == {"reasoning_tokens"}


def test_codex_request_to_chat_golden() -> None:
    req = json.loads((GOLD / "codex_request.json").read_text())
    tr = translate_request(req)
    _golden("codex_request.chat.json", orjson.dumps(tr.body, option=orjson.OPT_INDENT_2) + b"\n")
    assert tr.tools.custom == {"apply_patch"}
    assert tr.tools.identity("multi_agent_v1__close_agent") == {"name": "close_agent", "namespace": "multi_agent_v1"}
    body = tr.body
    for dropped in ("store", "include", "prompt_cache_key", "client_metadata", "reasoning", "input"):
        assert dropped not in body
    assert body["reasoning_effort"] == "high"  # xhigh on the chat scale
    assert [t["function"]["name"] for t in body["tools"]] == [
        "exec_command", "view_image", "multi_agent_v1__close_agent", "apply_patch"]  # web_search dropped
    assert [m["role"] for m in body["messages"]][:4] == ["system", "system", "user", "user"]


def test_tool_settings_only_travel_with_tools() -> None:
    body = translate_request({"model": "m", "input": "x", "parallel_tool_calls": False, "tool_choice": "auto",
                              "tools": [{"type": "web_search"}]}).body
    assert "parallel_tool_calls" not in body and "tool_choice" not in body and "tools" not in body
    body = translate_request({"model": "m", "input": "x", "parallel_tool_calls": False,
                              "tools": [{"type": "function", "name": "f"}],
                              "tool_choice": {"type": "function", "name": "f"}}).body
    assert body["parallel_tool_calls"] is False
    assert body["tool_choice"] == {"type": "function", "function": {"name": "f"}}


def test_namespaced_tools_travel_flat_and_come_back_named() -> None:
    tools = [{"type": "namespace", "name": "crm", "description": "CRM", "tools": [
        {"type": "function", "name": "lookup", "parameters": {"type": "object"}}]}]
    tr = translate_request({"model": "m", "tools": tools, "tool_choice": {"type": "function", "name": "lookup",
                                                                          "namespace": "crm"}, "input": [
        {"type": "function_call", "call_id": "c1", "name": "lookup", "namespace": "crm", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "ok"}]})
    assert tr.body["tools"][0]["function"]["name"] == "crm__lookup"
    assert tr.body["tool_choice"] == {"type": "function", "function": {"name": "crm__lookup"}}
    assert tr.body["messages"][0]["tool_calls"][0]["function"]["name"] == "crm__lookup"
    call = {"index": 0, "id": "c2", "type": "function", "function": {"name": "crm__lookup", "arguments": "{}"}}
    chunks = [{"choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": "tool_calls"}]},
              {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}]
    events = _events(_write(chunks, tr.tools))
    _check_lifecycle(events)
    item = events[-1]["response"]["output"][0]
    assert (item["name"], item["namespace"]) == ("lookup", "crm")
    done = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert done[0]["name"] == "lookup"


def test_openai_tool_call_chunks_to_events_golden() -> None:
    raw = _write(_chat_chunks(FIX / "openai" / "tool_calls.sse"))
    _golden("tool_calls.events.sse", raw)
    events = _events(raw)
    _check_lifecycle(events)
    calls = events[-1]["response"]["output"]
    assert [c["type"] for c in calls] == ["function_call", "function_call"]
    assert json.loads(calls[0]["arguments"]) == {"city": "San Francisco"}


def test_reasoning_text_and_custom_tool_chunks_to_events_golden() -> None:
    raw = _write(_chat_chunks(GOLD / "reasoning_custom.chunks.jsonl"), ToolNames(frozenset({"apply_patch"})))
    _golden("reasoning_custom.events.sse", raw)
    events = _events(raw)
    _check_lifecycle(events)
    final = events[-1]["response"]
    assert [i["type"] for i in final["output"]] == ["reasoning", "message", "custom_tool_call"]
    assert final["output"][0]["summary"] == [{"type": "summary_text", "text": "The patch is small."}]
    assert final["output"][1]["content"][0]["text"] == "Applying it ✓."
    assert final["output"][2]["input"] == "*** Begin Patch\n*** End Patch\n"
    assert final["usage"] == {"input_tokens": 120, "input_tokens_details": {"cached_tokens": 100,
                                                                            "cache_write_tokens": 0},
                              "output_tokens": 40, "output_tokens_details": {"reasoning_tokens": 12},
                              "total_tokens": 160}
    assert "response.function_call_arguments.delta" not in [e["type"] for e in events]


def test_length_finish_is_incomplete_and_failure_is_response_failed() -> None:
    chunks = [{"choices": [{"index": 0, "delta": {"content": "cut"}, "finish_reason": "length"}]}]
    events = _events(_write(chunks))
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    writer = ResponsesStreamWriter(_shell({}), ToolNames())
    raw = writer.start() + writer.feed({"choices": [{"index": 0, "delta": {"content": "par"}}]})
    failed = _events(raw + writer.fail(UpstreamError("upstream reset")))
    assert failed[-1]["type"] == "response.failed" and failed[-1]["sequence_number"] == len(failed) - 1
    assert failed[-1]["response"]["error"] == {"code": "server_error", "message": "upstream reset"}


def test_plain_completion_to_response() -> None:
    body = orjson.loads((FIX / "openai" / "text.json").read_bytes())
    out = completion_to_response(_shell({"instructions": "x"}), body, ToolNames())
    Response.model_validate(out)
    assert out["status"] == "completed" and out["instructions"] == "x" and out["object"] == "response"
    assert out["output"][0]["content"][0]["text"] == body["choices"][0]["message"]["content"]
    assert out["usage"]["input_tokens"] == 14 and out["usage"]["output_tokens_details"] == {"reasoning_tokens": 0}


@pytest.mark.parametrize(("req", "param"), [
    ({"model": "m", "input": "x", "previous_response_id": "resp_1"}, "previous_response_id"),
    ({"model": "m", "input": "x", "conversation": "conv_1"}, "conversation"),
    ({"model": "m", "input": []}, "input"),
    ({"model": "m", "input": [{"type": "computer_call"}]}, "input[0].type"),
    ({"model": "m", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ({"model": "m", "input": "x", "reasoning": {"effort": "turbo"}}, "reasoning.effort"),
    ({"model": "m", "input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
    ({"input": "x"}, "model"),
    ({"model": "m", "input": "x", "temperature": 2.5}, "temperature"),
    ({"model": "m", "input": "x", "top_p": "1"}, "top_p"),
])
def test_bad_requests_name_their_parameter(req: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        translate_request(req)
    assert exc.value.param == param and exc.value.status == 400
