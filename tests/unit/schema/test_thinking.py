"""The canonical `thinking_blocks` field: checked and copied with Anthropic's keys only, and left out of what
an OpenAI-compatible upstream receives (through the provider, over `MockTransport`)."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from sluice.config import ProviderConfig
from sluice.errors import InvalidRequest
from sluice.providers.base import Call
from sluice.providers.openai_compat import OpenAICompatProvider
from sluice.schema.chat import ChatRequest
from sluice.schema.thinking import checked_blocks, without_thinking
from sluice.upstream import Timeouts
from sluice.upstream.mock import MockReply, MockTransport

SIGNED = {"type": "thinking", "thinking": "Think.", "signature": "EqQB+/="}
MESSAGES: list[dict[str, Any]] = [
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": None, "reasoning_content": "Think.", "thinking_blocks": [SIGNED],
     "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "ok"}]


def test_checked_blocks_keep_order_and_only_known_keys() -> None:
    blocks = [{**SIGNED, "extra": 1}, {"type": "redacted_thinking", "data": "x", "signature": "y"}]
    assert checked_blocks(blocks, "p") == [SIGNED, {"type": "redacted_thinking", "data": "x"}]
    with pytest.raises(InvalidRequest) as info:
        checked_blocks([SIGNED, {"type": "thinking", "thinking": "t", "signature": None}], "p")
    assert info.value.param == "p[1]"


def test_without_thinking_copies_only_when_needed() -> None:
    plain = [{"role": "user", "content": "hi"}]
    assert without_thinking(plain) is None and without_thinking("x") is None
    before = copy.deepcopy(MESSAGES)
    out = without_thinking(MESSAGES)
    assert out is not None and "thinking_blocks" not in out[1] and out[1]["reasoning_content"] == "Think."
    assert out[0] is MESSAGES[0] and MESSAGES == before  # the client's messages are left as they were


async def test_an_openai_compatible_upstream_never_receives_thinking_blocks() -> None:
    t = MockTransport(lambda req: MockReply.json(b'{"id": "c", "choices": []}'))
    p = OpenAICompatProvider(ProviderConfig(name="up", kind="openai", base_url="http://up.test/v1"), t)
    await p.complete(Call(ChatRequest({"model": "m", "messages": MESSAGES}), "up-model", "req_1", Timeouts()))
    sent = orjson.loads(t.requests[0].body)["messages"]
    assert sent == [*MESSAGES[:1], {k: v for k, v in MESSAGES[1].items() if k != "thinking_blocks"}, MESSAGES[2]]
