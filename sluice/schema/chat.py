"""The chat-completions request as Sluice reads it: the fields it needs, checked; the rest untouched."""

from __future__ import annotations

import copy
from typing import Annotated, Any, ClassVar

import msgspec
import orjson
from msgspec import Meta

from sluice.errors import InvalidRequest, invalid_field

MAX_OUTPUT_TOKENS = 2**31 - 1     # no model's output cap comes near; keeps reservations far from int64
MAX_CHOICES = 128                 # OpenAI's documented range for n
_INT64 = Meta(ge=-(2**63), le=2**63 - 1)

_Tokens = Annotated[int, Meta(ge=1, le=MAX_OUTPUT_TOKENS)]
_Penalty = Annotated[float, Meta(ge=-2.0, le=2.0)]
_Stop = Annotated[str, Meta(max_length=4096)]


class _StreamOptions(msgspec.Struct):
    include_usage: bool | None = None


class _Fields(msgspec.Struct):
    """The ranges of the request fields Sluice reads or passes on, as OpenAI documents them (wire-format
    spec 2.1). Fields not named here are left to the upstream; unknown fields are ignored."""

    stream: bool | None = None
    stream_options: _StreamOptions | None = None
    max_tokens: _Tokens | None = None
    max_completion_tokens: _Tokens | None = None
    n: Annotated[int, Meta(ge=1, le=MAX_CHOICES)] | None = None
    temperature: Annotated[float, Meta(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    presence_penalty: _Penalty | None = None
    frequency_penalty: _Penalty | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    stop: _Stop | Annotated[list[_Stop], Meta(max_length=4)] | None = None
    seed: Annotated[int, _INT64] | None = None
    logit_bias: dict[str, Annotated[float, Meta(ge=-100.0, le=100.0)]] | None = None
    parallel_tool_calls: bool | None = None


def _fields(body: dict[str, Any]) -> _Fields:
    """Check the ranged fields; a wrong type or value is a 400 naming the field (`param`)."""
    try:
        return msgspec.convert(body, _Fields)
    except msgspec.ValidationError as exc:
        raise invalid_field(str(exc)) from None


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
        f = _fields(body)
        self.stream = bool(f.stream)
        inc = f.stream_options.include_usage if f.stream_options is not None else None
        self.include_usage = bool(inc) and self.stream
        self.max_tokens = f.max_completion_tokens if f.max_completion_tokens is not None else f.max_tokens
        self.n = 1 if f.n is None else f.n

    @classmethod
    def parse(cls, raw: bytes) -> ChatRequest:
        return cls(parse_json_object(raw))

    def without_body(self) -> ChatRequest:
        """This request with its body and messages dropped: what its ledger record still reads (model,
        endpoint, stream, n) once the prompt is estimated and the upstream has it, so that a held stream
        does not keep a coding agent's 50-500 KB context alive (docs/decisions.md, "What a held stream keeps")."""
        light = copy.copy(self)
        light.body, light.messages = {}, []
        return light


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
