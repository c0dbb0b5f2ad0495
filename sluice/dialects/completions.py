"""Legacy `POST /v1/completions` as a front door: the body checked with ranges and passed through untouched
(to the relay a `ChatRequest` whose `messages` only the prompt estimate reads). Its replies are OpenAI's
own: a plain reply passes back as sent, and a stream is written as chat completions' is
(`chat_completions.ChatStreamWriter`: each `text_completion` chunk's bytes framed, `[DONE]`, OpenAI's
error envelope)."""

from __future__ import annotations

from typing import Any, ClassVar

from sluice.dialects.openai_fields import integer_in, model_of, number_in, stand_in, texts_of
from sluice.errors import InvalidRequest
from sluice.schema.chat import ChatRequest, parse_json_object, stream_fields


class CompletionsRequest(ChatRequest):
    """A validated legacy `POST /v1/completions` body. Every prompt of a list gets `n` completions."""

    endpoint: ClassVar[str] = "completions"

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.model = model_of(body)
        if "prompt" not in body:
            raise InvalidRequest("Missing required parameter: 'prompt'.", param="prompt",
                                 code="missing_required_parameter")
        text, tokens = texts_of(body["prompt"], "prompt")
        prompts = len(body["prompt"]) if isinstance(body["prompt"], list) and not tokens else 1
        self.stream, self.include_usage = stream_fields(body)
        self.max_tokens = integer_in(body, "max_tokens", 0, 10_000_000)
        n = integer_in(body, "n", 1, 128) or 1
        best_of = integer_in(body, "best_of", 1, 128) or n
        if best_of < n:
            raise InvalidRequest("'best_of' must be at least 'n'", param="best_of", code="invalid_value")
        integer_in(body, "logprobs", 0, 20)
        number_in(body, "temperature", 0, 2)
        number_in(body, "top_p", 0, 1)
        number_in(body, "presence_penalty", -2, 2)
        number_in(body, "frequency_penalty", -2, 2)
        for name in ("suffix", "user"):
            if body.get(name) is not None and not isinstance(body[name], str):
                raise InvalidRequest(f"'{name}' must be a string", param=name, code="invalid_type")
        self.messages = stand_in(text, tokens)
        self.n = best_of * prompts  # what the upstream generates, and so what a reservation must cover

    @classmethod
    def parse(cls, raw: bytes) -> CompletionsRequest:
        return cls(parse_json_object(raw))
