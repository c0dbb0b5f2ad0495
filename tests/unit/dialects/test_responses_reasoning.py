"""Signed thinking through the Responses dialect: an Anthropic reply's thinking blocks become a reasoning
item's `encrypted_content` (plain and streamed, only when the client asked), and come back as the next
assistant turn's `thinking_blocks` unchanged; a damaged envelope is the client's 400, never a 500."""

from __future__ import annotations

import base64
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from sluice.dialects.responses import reasoning
from sluice.dialects.responses.reply import Shell, completion_to_response
from sluice.dialects.responses.request import translate_request
from sluice.dialects.responses.stream import ResponsesStreamWriter
from sluice.dialects.responses.tools import ToolNames
from sluice.errors import InvalidRequest
from sluice.providers.anthropic.stream import StreamTranslator
from sluice.providers.anthropic.translate import from_message, to_messages_request
from sluice.sse import SSEDecoder

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "anthropic"
SDK_EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
INCLUDE = {"include": ["reasoning.encrypted_content"]}
SIGNED = {"type": "thinking", "thinking": "The user wants the weather.\n",
          "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds+/="}
REDACTED = {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4a"}
MESSAGE = {"id": "msg_1", "model": "claude-x", "stop_reason": "tool_use",
           "usage": {"input_tokens": 10, "output_tokens": 20},
           "content": [SIGNED, REDACTED, {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"c": "R"}}]}


def _respond(req: dict[str, Any]) -> dict[str, Any]:
    out = completion_to_response(Shell("req_1", "claude", req), from_message(MESSAGE, created=1, model="m"),
                                 ToolNames())
    Response.model_validate(out)
    return out


def _next_turn(items: list[dict[str, Any]]) -> dict[str, Any]:
    """The Anthropic request the next turn makes: the items sent back, then the tool's output."""
    body = translate_request({"model": "claude", "reasoning": {"effort": "low"}, "input": [
        {"role": "user", "content": "weather?"}, *items,
        {"type": "function_call_output", "call_id": "toolu_1", "output": "sunny"}]}).body
    return to_messages_request(body, upstream_model="claude-x", max_tokens_default=4096, stream=False)


def test_plain_reply_seals_the_blocks_and_the_next_turn_gets_them_back_byte_for_byte() -> None:
    out = _respond({"model": "claude", **INCLUDE})
    item = out["output"][0]
    assert item["type"] == "reasoning" and item["summary"] == [{"type": "summary_text", "text": SIGNED["thinking"]}]
    assert item["encrypted_content"].startswith("sluice.th1.")
    sent = _next_turn(out["output"])["messages"][1]["content"]
    assert [b["type"] for b in sent] == ["thinking", "redacted_thinking", "tool_use"]
    assert orjson.dumps(sent[:2]) == orjson.dumps([SIGNED, REDACTED])


def test_without_include_there_is_no_encrypted_content_and_nothing_goes_back() -> None:
    out = _respond({"model": "claude"})
    assert "encrypted_content" not in out["output"][0]
    assert [b["type"] for b in _next_turn(out["output"])["messages"][1]["content"]] == ["tool_use"]


def _stream(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    writer = ResponsesStreamWriter(Shell("req_1", "claude", INCLUDE), ToolNames())
    raw = writer.start() + b"".join(writer.feed(c) for c in chunks) + writer.finish()
    events = [orjson.loads(ev.data) for ev in SSEDecoder().feed(raw)]
    for e in events:
        SDK_EVENT.validate_python(e)
    return events


def test_streamed_reasoning_item_is_sealed_when_done() -> None:
    sm, chunks = StreamTranslator(created=1, model="m"), []
    for ev in SSEDecoder().feed((FIX / "thinking_tool.sse").read_bytes()):
        chunks += [c.parsed for c in sm.feed(ev.event, orjson.loads(ev.data)) if c.parsed is not None]
    events = _stream(chunks)
    done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert [i["type"] for i in done] == ["reasoning", "function_call"]
    assert done[0] == events[-1]["response"]["output"][0]
    sent = _next_turn(events[-1]["response"]["output"])["messages"][1]["content"]
    assert sent[0] == {"type": "thinking", "thinking": "The user wants the weather.",
                       "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"}


def test_a_redacted_block_alone_is_a_reasoning_item_without_summary() -> None:
    events = _stream([{"choices": [{"index": 0, "delta": {"thinking_blocks": [REDACTED]}}]},
                      {"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": "stop"}]}])
    kinds = [e["type"] for e in events]
    assert not any(k.startswith("response.reasoning_summary") for k in kinds)
    item = events[-1]["response"]["output"][0]
    assert item["summary"] == [] and reasoning.Decoder().decode(item["encrypted_content"], "p") == [REDACTED]


def _envelope(payload: bytes) -> str:
    return reasoning.PREFIX + base64.urlsafe_b64encode(payload).decode()


@pytest.mark.parametrize("content", [
    reasoning.PREFIX + "!!!not base64",
    reasoning.PREFIX + "é",
    _envelope(b"not zlib"),
    _envelope(zlib.compress(b"not json")),
    _envelope(zlib.compress(b'{"type": "thinking"}')),
    _envelope(zlib.compress(b'[{"type": "thinking", "thinking": "t"}]')),
    _envelope(zlib.compress(orjson.dumps([SIGNED]))[:-3]),
    _envelope(zlib.compress(orjson.dumps([SIGNED])) + b"tail"),
])
def test_a_damaged_envelope_is_a_400_naming_the_item(content: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        _next_turn([{"type": "reasoning", "summary": [], "encrypted_content": content},
                    {"type": "function_call", "call_id": "toolu_1", "name": "w", "arguments": "{}"}])
    assert info.value.status == 400 and info.value.param == "input[1].encrypted_content"
    assert info.value.code == "invalid_encrypted_content"


def test_decoding_is_bounded_across_the_request() -> None:
    bomb = _envelope(zlib.compress(b"[" + b" " * (1 << 20) + b"]"))
    decoder = reasoning.Decoder(budget=1 << 20)
    with pytest.raises(InvalidRequest, match="too large"):
        decoder.decode(bomb, "p")
    small = reasoning.encode([SIGNED])
    assert small is not None
    decoder = reasoning.Decoder(budget=2 * len(orjson.dumps([SIGNED])))
    assert decoder.decode(small, "p") == [SIGNED] and decoder.decode(small, "p") == [SIGNED]
    with pytest.raises(InvalidRequest, match="too large"):
        decoder.decode(small, "p")


def test_foreign_reasoning_and_reasoning_without_a_following_turn_are_dropped() -> None:
    sealed = reasoning.encode([SIGNED])
    body = translate_request({"model": "m", "reasoning": {"effort": "low"}, "input": [
        {"type": "reasoning", "summary": [], "encrypted_content": "gAAAAABo-openai-own"},
        {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "x"},
        {"type": "reasoning", "summary": [], "encrypted_content": sealed},
        {"role": "user", "content": "and now?"},
        {"type": "reasoning", "summary": [], "encrypted_content": sealed},
        {"type": "reasoning", "summary": [], "encrypted_content": sealed},
        {"role": "assistant", "content": "Done."}]}).body
    assert "thinking_blocks" not in body["messages"][0]
    assert body["messages"][-1] == {"role": "assistant", "content": "Done.", "thinking_blocks": [SIGNED, SIGNED]}
    assert sum("thinking_blocks" in m for m in body["messages"]) == 1


def test_an_upstream_field_that_is_not_thinking_blocks_is_not_sealed() -> None:
    assert reasoning.encode([{"type": "reasoning.text", "text": "x"}]) is None
    assert reasoning.encode("x") is None
