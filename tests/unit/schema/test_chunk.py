"""Which OpenAI chunks pass unparsed: never one whose parse would show usage, a finish or an error, whatever
its text holds (quotes, backslashes, escapes, the very keys being looked for) and however it is spelled;
and the ordinary content delta always does."""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.schema.chunk import finished, payload_text, plain, text_of

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


@settings(max_examples=600, deadline=None)
@given(CHUNK, st.integers(0, 2))
def test_a_chunk_passing_unparsed_has_nothing_a_parse_would_have_to_see(doc: dict[str, Any], how: int) -> None:
    payload = spell(doc, how)
    obj = orjson.loads(payload)
    if plain(payload):
        assert not obj.get("error") and not obj.get("usage") and not finished(obj)
        assert payload_text(payload) == text_of(obj)
    if not (doc.get("error") or doc.get("usage") or finished(doc)) and "x" not in doc and how != 1 \
            and b"\\u" not in payload and b'"error"' not in payload and b'"usage"' not in payload:
        # what most of a stream is: nothing in it needs reading, and nothing in it looks as if it might
        assert plain(payload) == (b'"finish_reason"' not in payload.replace(b'"finish_reason":null', b""))


def test_an_ordinary_content_delta_passes_unparsed_in_every_spelling() -> None:
    doc = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [
        {"index": 0, "delta": {"content": 'say "hi"\\n'}, "logprobs": None, "finish_reason": None}], "usage": None}
    assert plain(orjson.dumps(doc)) and plain(json.dumps(doc).encode())
    assert plain(json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode())


def test_what_must_be_read_is_never_passed() -> None:
    base = b'{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":%s}]%s}'
    assert not plain(base % (b'"stop"', b""))
    assert not plain(base % (b'null', b',"usage":{"prompt_tokens":1,"completion_tokens":1}'))
    assert not plain(base % (b'null', b',"error":{"message":"x"}'))
    assert not plain(b'{"us\\u0061ge":{"prompt_tokens":1,"completion_tokens":1},"choices":[]}')  # an escaped key
    assert not plain(b'{"usage":null,"usage":{"prompt_tokens":1,"completion_tokens":1}}')  # a repeated key
    assert not plain(b'[DONE]') and not plain(b"") and not plain(b" {}") and not plain(b"[1]")


def test_keys_in_the_text_do_not_fool_it_and_the_text_read_later_is_the_parsed_text() -> None:
    content = 'x"usage":{"prompt_tokens":9},"finish_reason":"stop","error":1'
    payload = orjson.dumps({"choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]})
    assert plain(payload) and payload_text(payload) == content


def test_the_text_is_every_choice_every_part_in_order() -> None:
    doc = {"choices": [
        {"index": 0, "delta": {"content": "a", "reasoning_content": "b", "reasoning": "c", "refusal": "d",
                               "tool_calls": [{"function": {"name": "e", "arguments": "f"}}, "junk"]}},
        {"index": 1, "text": "g", "delta": {"content": None}}, "junk"]}
    assert text_of(doc) == "abcdefg"
    assert payload_text(b'{"choices":[{"delta":{"content":"a"}}') == ""  # broken inside: nothing to count
