"""The field checks OpenAI's embeddings and legacy completions front doors share (a model name, text or token
arrays, numbers in range), and the stand-in `messages` their canonical requests carry for the prompt
estimate."""

from __future__ import annotations

from typing import Any

from sluice.errors import InvalidRequest

MAX_INPUTS = 2048          # items in an `input` / `prompt` list (OpenAI's limit for embeddings)
MAX_TOKEN_ID = 2**31 - 1


def model_of(body: dict[str, Any]) -> str:
    model = body.get("model")
    if model is None:
        raise InvalidRequest("you must provide a model parameter", param="model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' must be a non-empty string", param="model")
    return model


def texts_of(value: Any, name: str) -> tuple[str, int]:
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


def stand_in(text: str, tokens: int) -> list[dict[str, Any]]:
    # token ids count one each: the estimator counts four ASCII characters as a token
    return [{"role": "user", "content": text + "x" * (4 * tokens)}]


def number_in(body: dict[str, Any], name: str, lo: float, hi: float) -> None:
    v = body.get(name)
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InvalidRequest(f"'{name}' must be a number", param=name, code="invalid_type")
    if not lo <= v <= hi:
        raise InvalidRequest(f"'{name}' must be between {lo:g} and {hi:g}", param=name, code="invalid_value")


def integer_in(body: dict[str, Any], name: str, lo: int, hi: int) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise InvalidRequest(f"'{name}' must be an integer", param=name, code="invalid_type")
    if not lo <= v <= hi:
        raise InvalidRequest(f"'{name}' must be between {lo} and {hi}", param=name, code="invalid_value")
    return v
