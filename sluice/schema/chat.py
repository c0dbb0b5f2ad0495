"""The chat-completions request as Sluice reads it: the fields it needs, checked; the rest untouched."""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

from sluice.errors import InvalidRequest


class ChatRequest:
    """A validated `POST /v1/chat/completions` body.

    `body` is the client's JSON object as parsed; providers copy it before changing anything, so the
    fields Sluice does not read reach OpenAI-compatible upstreams exactly as sent.
    """

    __slots__ = ("body", "include_usage", "max_tokens", "messages", "model", "n", "stream")
    # the upstream path served (after the provider's base URL); other OpenAI endpoints subclass this
    endpoint: ClassVar[str] = "chat/completions"

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        model = body.get("model")
        if model is None:
            raise InvalidRequest("you must provide a model parameter", param="model")
        if not isinstance(model, str) or not model:
            raise InvalidRequest("'model' must be a non-empty string", param="model")
        self.model = model
        messages = body.get("messages")
        if messages is None:
            raise InvalidRequest("Missing required parameter: 'messages'.", param="messages",
                                 code="missing_required_parameter")
        if not isinstance(messages, list):
            raise InvalidRequest("'messages' must be an array", param="messages", code="invalid_type")
        if not messages:
            raise InvalidRequest("'messages' must contain at least one message", param="messages",
                                 code="empty_array")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise InvalidRequest(f"messages[{i}] must be an object with a string 'role'",
                                     param=f"messages[{i}]", code="invalid_type")
        self.messages: list[dict[str, Any]] = messages
        self.stream, self.include_usage = stream_fields(body)
        self.max_tokens = _opt_int(body, "max_completion_tokens", minimum=1)
        if self.max_tokens is None:
            self.max_tokens = _opt_int(body, "max_tokens", minimum=1)
        n = _opt_int(body, "n", minimum=1)
        self.n = 1 if n is None else n
        for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
            v = body.get(name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise InvalidRequest(f"'{name}' must be a number", param=name, code="invalid_type")

    @classmethod
    def parse(cls, raw: bytes) -> ChatRequest:
        return cls(parse_json_object(raw))


def stream_fields(body: dict[str, Any]) -> tuple[bool, bool]:
    """(stream, include_usage) of a body that may stream; include_usage only counts when streaming."""
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean", param="stream", code="invalid_type")
    opts = body.get("stream_options")
    if opts is not None and not isinstance(opts, dict):
        raise InvalidRequest("'stream_options' must be an object", param="stream_options",
                             code="invalid_type")
    inc = opts.get("include_usage") if opts else None
    if inc is not None and not isinstance(inc, bool):
        raise InvalidRequest("'stream_options.include_usage' must be a boolean",
                             param="stream_options.include_usage", code="invalid_type")
    return bool(stream), bool(inc) and bool(stream)


def parse_json_object(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise InvalidRequest("The request body is empty; expected a JSON object.", code="invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    return body


def _opt_int(body: dict[str, Any], name: str, *, minimum: int) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise InvalidRequest(f"'{name}' must be an integer", param=name, code="invalid_type")
    if v < minimum:
        raise InvalidRequest(f"'{name}' must be at least {minimum}", param=name, code="invalid_value")
    return v
