"""The embeddings and legacy completions front doors as pure translations: the body checked with ranges and
kept as sent, what the relay needs from it (endpoint, stand-in prompt, output to reserve), and the usage an
embeddings reply gets when the upstream reported none."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from sluice.dialects.completions import CompletionsRequest
from sluice.dialects.embeddings import EmbeddingsRequest, with_estimated_usage
from sluice.dialects.openai_fields import MAX_INPUTS, MAX_TOKEN_ID
from sluice.errors import InvalidRequest
from sluice.metering.tokens import estimate_prompt


def test_an_embeddings_body_passes_as_sent_and_reserves_no_output() -> None:
    raw = b'{"model":"e","input":["a b","c"],"encoding_format":"base64","dimensions":256,"extra":1}'
    req = EmbeddingsRequest.parse(raw)
    assert (req.endpoint, req.model, req.stream, req.max_tokens, req.n) == ("embeddings", "e", False, 0, 1)
    assert req.body == orjson.loads(raw)
    assert req.messages == [{"role": "user", "content": "a b\nc"}]


def test_token_arrays_count_one_token_each_in_the_prompt_estimate() -> None:
    ids = EmbeddingsRequest({"model": "e", "input": [[1, 2, 3, 4, 5, 6, 7, 8]]})
    text = EmbeddingsRequest({"model": "e", "input": "x" * 32})
    assert estimate_prompt(ids.messages) == estimate_prompt(text.messages)


def test_legacy_completions_reserve_for_every_prompt_and_best_of() -> None:
    req = CompletionsRequest.parse(b'{"model":"c","prompt":["a","b","c"],"n":2,"best_of":3,"max_tokens":5,'
                                   b'"stream":true,"stream_options":{"include_usage":true}}')
    assert (req.endpoint, req.n, req.max_tokens, req.stream, req.include_usage) == ("completions", 9, 5, True, True)


@pytest.mark.parametrize(("door", "body", "param"), [
    (EmbeddingsRequest, {"input": "x"}, "model"),
    (EmbeddingsRequest, {"model": "e"}, "input"),
    (EmbeddingsRequest, {"model": "e", "input": ""}, "input"),
    (EmbeddingsRequest, {"model": "e", "input": ["x"] * (MAX_INPUTS + 1)}, "input"),
    (EmbeddingsRequest, {"model": "e", "input": [1, MAX_TOKEN_ID + 1]}, "input[1]"),
    (EmbeddingsRequest, {"model": "e", "input": ["x", 3]}, "input[1]"),
    (EmbeddingsRequest, {"model": "e", "input": "x", "dimensions": 0}, "dimensions"),
    (EmbeddingsRequest, {"model": "e", "input": "x", "encoding_format": "hex"}, "encoding_format"),
    (EmbeddingsRequest, {"model": "e", "input": "x", "stream": True}, "stream"),
    (CompletionsRequest, {"model": "c"}, "prompt"),
    (CompletionsRequest, {"model": "c", "prompt": "x", "n": 3, "best_of": 2}, "best_of"),
    (CompletionsRequest, {"model": "c", "prompt": "x", "temperature": 2.5}, "temperature"),
    (CompletionsRequest, {"model": "c", "prompt": "x", "max_tokens": True}, "max_tokens"),
    (CompletionsRequest, {"model": "c", "prompt": "x", "suffix": 1}, "suffix"),
])
def test_bad_input_names_its_parameter(door: type[EmbeddingsRequest | CompletionsRequest], body: dict[str, Any],
                                       param: str) -> None:
    with pytest.raises(InvalidRequest) as got:
        door(body)
    assert got.value.param == param and got.value.status == 400


def test_an_embeddings_reply_without_usage_gets_the_estimate() -> None:
    body = orjson.dumps({"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.5]}]})
    doc = orjson.loads(with_estimated_usage(body, 12))
    assert doc["usage"] == {"prompt_tokens": 12, "total_tokens": 12} and doc["data"][0]["embedding"] == [0.5]
