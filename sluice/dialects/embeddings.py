"""`POST /v1/embeddings` as a front door: the body checked with ranges and passed through untouched (to the
relay a `ChatRequest` whose `messages` only the prompt estimate reads); the upstream's reply passes back,
given the estimated `usage` when the upstream reported none. Errors in OpenAI's envelope."""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

from sluice.dialects.openai_fields import integer_in, model_of, stand_in, texts_of
from sluice.errors import InvalidRequest
from sluice.schema.chat import ChatRequest, parse_json_object

MAX_DIMENSIONS = 65_536


class EmbeddingsRequest(ChatRequest):
    """A validated `POST /v1/embeddings` body; nothing is generated, so nothing is reserved for output."""

    endpoint: ClassVar[str] = "embeddings"

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.model = model_of(body)
        if "input" not in body:
            raise InvalidRequest("Missing required parameter: 'input'.", param="input",
                                 code="missing_required_parameter")
        text, tokens = texts_of(body["input"], "input")
        if not text and not tokens:
            raise InvalidRequest("'input' must not be empty", param="input", code="invalid_value")
        fmt = body.get("encoding_format")
        if fmt is not None and fmt not in ("float", "base64"):
            raise InvalidRequest("'encoding_format' must be 'float' or 'base64'", param="encoding_format",
                                 code="invalid_value")
        integer_in(body, "dimensions", 1, MAX_DIMENSIONS)
        if body.get("stream"):
            raise InvalidRequest("embeddings cannot be streamed", param="stream", code="invalid_value")
        self.messages = stand_in(text, tokens)
        self.stream = False
        self.include_usage = False
        self.max_tokens = 0
        self.n = 1

    @classmethod
    def parse(cls, raw: bytes) -> EmbeddingsRequest:
        return cls(parse_json_object(raw))


def with_estimated_usage(body: bytes, prompt: int | None) -> bytes:
    """An embeddings reply from an upstream that reports no usage (Gemini) gets the estimate the ledger
    records, as OpenAI's SDKs expect `usage` there."""
    doc = orjson.loads(body)
    doc["usage"] = {"prompt_tokens": prompt or 0, "total_tokens": prompt or 0}
    return orjson.dumps(doc)
