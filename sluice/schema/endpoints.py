"""`POST /v1/embeddings` and legacy `POST /v1/completions` bodies: checked with ranges, otherwise untouched.

Both are `ChatRequest`s to the relay (admission, routing, metering), with `messages` a stand-in that
only the prompt estimate reads, and `endpoint` naming the upstream path they are passed through to.
"""

from __future__ import annotations

from typing import Any, ClassVar

from sluice.errors import InvalidRequest
from sluice.schema.chat import ChatRequest, parse_json_object, stream_fields

MAX_INPUTS = 2048          # items in an `input` / `prompt` list (OpenAI's limit for embeddings)
MAX_TOKEN_ID = 2**31 - 1
MAX_DIMENSIONS = 65_536


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if model is None:
        raise InvalidRequest("you must provide a model parameter", param="model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' must be a non-empty string", param="model")
    return model


def _texts(value: Any, name: str) -> tuple[str, int]:
    """(text, token ids) of a string, a list of strings, a token array or a list of token arrays."""
    if isinstance(value, str):
        return value, 0
    if not isinstance(value, list) or not value:
        raise InvalidRequest(f"'{name}' must be a string, an array of strings or an array of token arrays",
                             param=name, code="invalid_type")
    if len(value) > MAX_INPUTS:
        raise InvalidRequest(f"'{name}' may hold at most {MAX_INPUTS} items", param=name, code="invalid_value")
    if all(isinstance(t, int) and not isinstance(t, bool) for t in value):  # one token array
        for i, t in enumerate(value):
            if not _token(t):
                raise InvalidRequest(f"'{name}[{i}]' must be a token id (an integer 0..{MAX_TOKEN_ID})",
                                     param=f"{name}[{i}]", code="invalid_value")
        return "", len(value)
    texts: list[str] = []
    tokens = 0
    for i, item in enumerate(value):
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, list) and item and all(_token(t) for t in item):
            tokens += len(item)
        else:
            raise InvalidRequest(f"'{name}[{i}]' must be a string or a non-empty array of token ids "
                                 f"(integers 0..{MAX_TOKEN_ID})", param=f"{name}[{i}]", code="invalid_type")
    return "\n".join(texts), tokens


def _token(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_TOKEN_ID


def _stand_in(text: str, tokens: int) -> list[dict[str, Any]]:
    # token ids count one each: the estimator counts four ASCII characters as a token
    return [{"role": "user", "content": text + "x" * (4 * tokens)}]


def _number(body: dict[str, Any], name: str, lo: float, hi: float) -> None:
    v = body.get(name)
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InvalidRequest(f"'{name}' must be a number", param=name, code="invalid_type")
    if not lo <= v <= hi:
        raise InvalidRequest(f"'{name}' must be between {lo:g} and {hi:g}", param=name, code="invalid_value")


def _integer(body: dict[str, Any], name: str, lo: int, hi: int) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise InvalidRequest(f"'{name}' must be an integer", param=name, code="invalid_type")
    if not lo <= v <= hi:
        raise InvalidRequest(f"'{name}' must be between {lo} and {hi}", param=name, code="invalid_value")
    return v


class EmbeddingsRequest(ChatRequest):
    """A validated `POST /v1/embeddings` body; nothing is generated, so nothing is reserved for output."""

    endpoint: ClassVar[str] = "embeddings"

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.model = _model(body)
        if "input" not in body:
            raise InvalidRequest("Missing required parameter: 'input'.", param="input",
                                 code="missing_required_parameter")
        text, tokens = _texts(body["input"], "input")
        if not text and not tokens:
            raise InvalidRequest("'input' must not be empty", param="input", code="invalid_value")
        fmt = body.get("encoding_format")
        if fmt is not None and fmt not in ("float", "base64"):
            raise InvalidRequest("'encoding_format' must be 'float' or 'base64'", param="encoding_format",
                                 code="invalid_value")
        _integer(body, "dimensions", 1, MAX_DIMENSIONS)
        if body.get("stream"):
            raise InvalidRequest("embeddings cannot be streamed", param="stream", code="invalid_value")
        self.messages = _stand_in(text, tokens)
        self.stream = False
        self.include_usage = False
        self.max_tokens = 0
        self.n = 1

    @classmethod
    def parse(cls, raw: bytes) -> EmbeddingsRequest:
        return cls(parse_json_object(raw))


class CompletionsRequest(ChatRequest):
    """A validated legacy `POST /v1/completions` body. Every prompt of a list gets `n` completions."""

    endpoint: ClassVar[str] = "completions"

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.model = _model(body)
        if "prompt" not in body:
            raise InvalidRequest("Missing required parameter: 'prompt'.", param="prompt",
                                 code="missing_required_parameter")
        text, tokens = _texts(body["prompt"], "prompt")
        prompts = len(body["prompt"]) if isinstance(body["prompt"], list) and not tokens else 1
        self.stream, self.include_usage = stream_fields(body)
        self.max_tokens = _integer(body, "max_tokens", 0, 10_000_000)
        n = _integer(body, "n", 1, 128) or 1
        best_of = _integer(body, "best_of", 1, 128) or n
        if best_of < n:
            raise InvalidRequest("'best_of' must be at least 'n'", param="best_of", code="invalid_value")
        _integer(body, "logprobs", 0, 20)
        _number(body, "temperature", 0, 2)
        _number(body, "top_p", 0, 1)
        _number(body, "presence_penalty", -2, 2)
        _number(body, "frequency_penalty", -2, 2)
        for name in ("suffix", "user"):
            if body.get(name) is not None and not isinstance(body[name], str):
                raise InvalidRequest(f"'{name}' must be a string", param=name, code="invalid_type")
        self.messages = _stand_in(text, tokens)
        self.n = best_of * prompts  # what the upstream generates, and so what a reservation must cover

    @classmethod
    def parse(cls, raw: bytes) -> CompletionsRequest:
        return cls(parse_json_object(raw))
