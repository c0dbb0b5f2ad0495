"""The chat door's writer: chunks keep their bytes, and the usage chunk it makes when the upstream reported
none takes its head (id, created, model) from the last chunk, parsed or not."""

from __future__ import annotations

import orjson

from sluice.dialects.chat_completions import ChatStreamWriter
from sluice.sse import encode_data

FIRST = {"id": "c-1", "object": "chat.completion.chunk", "created": 5, "model": "a", "choices": []}
LAST = b'{"id":"c-2","object":"chat.completion.chunk","created":7,"model":"b","choices":[{"delta":{"content":"x"}}]}'


def test_the_estimated_usage_chunk_takes_its_head_from_the_last_chunk_even_one_passed_unparsed() -> None:
    w = ChatStreamWriter(include_usage=True)
    assert w.feed(orjson.dumps(FIRST), FIRST, has_usage=False, usage_only=False) == encode_data(orjson.dumps(FIRST))
    assert w.feed(LAST, None, has_usage=False, usage_only=False) == encode_data(LAST)  # bytes as they came
    assert w.wants_estimate(reported=False)
    doc = orjson.loads(w.estimated_usage("req_1", 9.0, "m", 3, 4)[len(b"data: "):])
    assert (doc["id"], doc["created"], doc["model"], doc["choices"]) == ("c-2", 7, "b", [])
    assert doc["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


def test_without_any_chunk_the_head_is_the_gateways_own() -> None:
    doc = orjson.loads(ChatStreamWriter(True).estimated_usage("req_1", 9.0, "m", None, 2)[len(b"data: "):])
    assert (doc["id"], doc["created"], doc["model"]) == ("chatcmpl-req_1", 9, "m")
