"""The chat-completions fields Sluice reads or passes on have the ranges OpenAI documents: a wrong type or a
value out of range is an InvalidRequest naming the field (the front door turns it into a 400)."""

from __future__ import annotations

from typing import Any

import pytest

from sluice.errors import InvalidRequest
from sluice.schema.chat import ChatRequest

BASE: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}

BAD = [
    ({"max_tokens": 10**15}, "max_tokens", "invalid_value"),
    ({"max_tokens": 0}, "max_tokens", "invalid_value"),
    ({"max_completion_tokens": 2**31}, "max_completion_tokens", "invalid_value"),
    ({"max_tokens": "100"}, "max_tokens", "invalid_type"),
    ({"max_tokens": 1.5}, "max_tokens", "invalid_type"),
    ({"n": 10**12}, "n", "invalid_value"),
    ({"n": 129}, "n", "invalid_value"),
    ({"n": True}, "n", "invalid_type"),
    ({"temperature": 2.5}, "temperature", "invalid_value"),
    ({"temperature": -0.1}, "temperature", "invalid_value"),
    ({"temperature": "hot"}, "temperature", "invalid_type"),
    ({"top_p": 1.01}, "top_p", "invalid_value"),
    ({"presence_penalty": -2.01}, "presence_penalty", "invalid_value"),
    ({"frequency_penalty": 3}, "frequency_penalty", "invalid_value"),
    ({"top_logprobs": 21}, "top_logprobs", "invalid_value"),
    ({"logprobs": "yes"}, "logprobs", "invalid_type"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "invalid_value"),
    ({"stop": "x" * 4097}, "stop", "invalid_value"),
    ({"stop": 5}, "stop", "invalid_type"),
    ({"seed": 2**63}, "seed", "invalid_value"),
    ({"seed": -(2**63) - 1}, "seed", "invalid_value"),
    ({"stream": "true"}, "stream", "invalid_type"),
    ({"stream_options": "x"}, "stream_options", "invalid_type"),
    ({"stream_options": {"include_usage": 1}}, "stream_options.include_usage", "invalid_type"),
    ({"parallel_tool_calls": 1}, "parallel_tool_calls", "invalid_type"),
]


@pytest.mark.parametrize(("fields", "param", "code"), BAD, ids=[b[1] + "-" + repr(b[0])[:30] for b in BAD])
def test_out_of_range_names_the_param(fields: dict[str, Any], param: str, code: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        ChatRequest({**BASE, **fields})
    assert info.value.param == param
    assert info.value.code == code
    assert param in str(info.value)


def test_logit_bias_values_are_ranged() -> None:
    with pytest.raises(InvalidRequest) as info:
        ChatRequest({**BASE, "logit_bias": {"50256": 101}})
    assert (info.value.param or "").startswith("logit_bias")


def test_edges_are_accepted() -> None:
    req = ChatRequest({**BASE, "max_tokens": 2**31 - 1, "n": 128, "temperature": 2, "top_p": 0,
                       "presence_penalty": -2, "frequency_penalty": 2.0, "top_logprobs": 20, "logprobs": True,
                       "stop": ["a", "b", "c", "d"], "seed": -(2**63), "logit_bias": {"1": -100},
                       "stream": True, "stream_options": {"include_usage": True, "future_option": 1},
                       "unknown_field": {"kept": True}})
    assert (req.max_tokens, req.n, req.stream, req.include_usage) == (2**31 - 1, 128, True, True)
    assert req.body["unknown_field"] == {"kept": True}


def test_max_completion_tokens_wins() -> None:
    req = ChatRequest({**BASE, "max_tokens": 5, "max_completion_tokens": 7, "stream_options": None})
    assert (req.max_tokens, req.n, req.stream, req.include_usage) == (7, 1, False, False)
