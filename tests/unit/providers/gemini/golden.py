"""Helpers for the Gemini golden tests: fixture replay through the state machine, expected chunk builders."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from sluice.providers.base import Chunk
from sluice.providers.gemini.stream import GeminiStreamState
from sluice.sse import SSEDecoder

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures" / "gemini"
CREATED = 1_700_000_000


def counter_ids() -> Callable[[], str]:
    n = itertools.count()
    return lambda: f"call_{next(n)}"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def replay(raw: bytes, *, piece: int | None = None, model: str = "gemini-upstream") -> list[Chunk]:
    """Cut `raw` into `piece`-byte reads (whole when None), decode SSE, run the state machine to EOF."""
    state = GeminiStreamState(upstream_model=model, created=CREATED, new_id=counter_ids())
    decoder = SSEDecoder()
    out: list[Chunk] = []
    reads = [raw] if piece is None else [raw[i:i + piece] for i in range(0, len(raw), piece)]
    for data in reads:
        for event in decoder.feed(data):
            out.extend(state.feed(orjson.loads(event.data)))
    out.extend(state.end())
    return out


def parsed(chunks: list[Chunk]) -> list[dict[str, Any]]:
    for c in chunks:
        assert c.parsed is not None
        assert orjson.loads(c.payload) == c.parsed
        assert b"[DONE]" not in c.payload
    return [c.parsed for c in chunks if c.parsed is not None]


class Expect:
    """Builds the exact OpenAI chunks one response should produce."""

    def __init__(self, id: str, model: str) -> None:
        self.id = id
        self.model = model

    def _env(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": CREATED, "model": self.model,
                "choices": choices}

    def delta(self, delta: dict[str, Any], index: int = 0) -> dict[str, Any]:
        return self._env([{"index": index, "delta": delta, "logprobs": None, "finish_reason": None}])

    def role(self, index: int = 0) -> dict[str, Any]:
        return self.delta({"role": "assistant", "content": ""}, index)

    def text(self, text: str, index: int = 0) -> dict[str, Any]:
        return self.delta({"content": text}, index)

    def finish(self, reason: str, index: int = 0) -> dict[str, Any]:
        return self._env([{"index": index, "delta": {}, "logprobs": None, "finish_reason": reason}])

    def usage(self, prompt: int, completion: int, cached: int = 0, reasoning: int = 0) -> dict[str, Any]:
        env = self._env([])
        env["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion,
                        "total_tokens": prompt + completion,
                        "prompt_tokens_details": {"cached_tokens": cached},
                        "completion_tokens_details": {"reasoning_tokens": reasoning}}
        return env
