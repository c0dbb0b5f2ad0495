"""The text of an OpenAI chunk, read from the parsed chunk or later from its payload; and the chunks the
billing tests generate: any text (quotes, backslashes, escapes, the keys the relay reads), usage, finish and
errors, spelled as upstreams spell JSON."""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from sluice.schema.chunk import payload_text, text_of

# text that could fool a substring check: the keys themselves, quotes, backslashes, escapes, non-ASCII
TRICKS = ['"usage":{"prompt_tokens":1,"completion_tokens":2}', '"finish_reason":"stop"', '"error":{"message":"x"}',
          '"usage":null', '"finish_reason":null', '\\u0075sage', '\\"', '"', "\\", "é日😀", "\n\r\t", "\u2028", "}{"]
TEXT = st.one_of(st.text(max_size=12), st.sampled_from(TRICKS),
                 st.lists(st.sampled_from(TRICKS), max_size=3).map("".join))
USAGE = st.fixed_dictionaries({"prompt_tokens": st.integers(0, 99), "completion_tokens": st.integers(0, 99),
                               "total_tokens": st.integers(0, 200)})
FUNCTION = st.fixed_dictionaries({}, optional={"name": TEXT, "arguments": TEXT})
TOOL_CALL = st.fixed_dictionaries({"index": st.integers(0, 2)}, optional={"id": TEXT, "function": FUNCTION})
DELTA = st.fixed_dictionaries({}, optional={"role": st.just("assistant"), "content": st.one_of(st.none(), TEXT),
                                            "reasoning_content": TEXT, "refusal": st.one_of(st.none(), TEXT),
                                            "tool_calls": st.lists(TOOL_CALL, max_size=2)})
FINISH = st.one_of(st.none(), st.sampled_from(["stop", "length", "tool_calls", ""]))
CHOICE = st.fixed_dictionaries({"index": st.integers(0, 3)}, optional={
    "delta": DELTA, "text": TEXT, "logprobs": st.none(), "finish_reason": FINISH})
CHUNK = st.fixed_dictionaries(
    {"id": TEXT, "object": st.just("chat.completion.chunk"), "choices": st.lists(CHOICE, max_size=3)},
    optional={"usage": st.one_of(st.none(), USAGE, st.just({})),
              "error": st.one_of(st.none(), st.just({"message": "boom"}), st.just("boom")),
              "x": st.fixed_dictionaries({}, optional={"usage": USAGE, "finish_reason": FINISH, "error": TEXT})})


def spell(doc: dict[str, Any], how: int) -> bytes:
    """The ways upstreams write JSON: compact UTF-8 (orjson, Go), Python's spaced ASCII with \\u escapes,
    compact UTF-8 from Python."""
    if how == 0:
        return orjson.dumps(doc)
    if how == 1:
        return json.dumps(doc).encode()
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def test_the_text_is_every_choice_every_part_in_order() -> None:
    doc = {"choices": [
        {"index": 0, "delta": {"content": "a", "reasoning_content": "b", "reasoning": "c", "refusal": "d",
                               "tool_calls": [{"function": {"name": "e", "arguments": "f"}}, "junk"]}},
        {"index": 1, "text": "g", "delta": {"content": None}}, "junk"]}
    assert text_of(doc) == "abcdefg"
    assert payload_text(b'{"choices":[{"delta":{"content":"a"}}') == ""  # broken inside: nothing to count


@given(CHUNK, st.integers(0, 2))
def test_the_text_read_later_from_the_payload_is_the_parsed_chunks_text(doc: dict[str, Any], how: int) -> None:
    assert payload_text(spell(doc, how)) == text_of(doc)
