"""The built-in simulated model: deterministic replies, configurable pacing, exact usage.

Used by the quickstart (so the first curl answers with no upstream), by tests and by benchmarks.
A "token" here is a word with its trailing space; usage counts exactly what was sent.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from sluice.config import ProviderConfig
from sluice.providers.base import Call, Chunk, Completion
from sluice.providers.simulated_endpoints import LegacyPlan, LegacyStream, embeddings
from sluice.schema.usage import Usage

DEFAULT_REPLY = (
    "Hello! This is Sluice's simulated model answering through the gateway. "
    "It streams a fixed reply word by word, so you can watch the typewriter effect, "
    "check token usage on the last chunk, and try clients without any upstream key."
)
_TOKEN = re.compile(r"\S+\s*|\s+")


def tokenize(text: str) -> list[str]:
    """The simulated model's tokens: each word with the white space after it."""
    return _TOKEN.findall(text)


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    n = 0
    for m in messages:
        n += 3  # per-message overhead, as OpenAI counts it
        content = m.get("content")
        if isinstance(content, str):
            n += len(tokenize(content))
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    n += len(tokenize(part["text"]))
    return n + 3


class SimulatedProvider:
    endpoints = frozenset({"embeddings", "completions"})

    def __init__(self, cfg: ProviderConfig, client: object | None = None) -> None:
        self.name = cfg.name
        self._reply = cfg.reply or DEFAULT_REPLY
        self._ttft = cfg.ttft_ms / 1000
        self._gap = 1 / cfg.tokens_per_second if cfg.tokens_per_second > 0 else 0.0

    def _plan(self, call: Call) -> tuple[list[str], str, Usage]:
        pieces = tokenize(self._reply)
        finish = "stop"
        limit = call.request.max_tokens
        if limit is not None and limit < len(pieces):
            pieces, finish = pieces[:limit], "length"
        usage = Usage(prompt_tokens(call.request.messages), len(pieces) * call.request.n)
        return pieces, finish, usage

    async def complete(self, call: Call) -> Completion:
        if call.request.endpoint == "embeddings":
            return embeddings(call, tokenize)
        if call.request.endpoint == "completions":
            plan = LegacyPlan(call, tokenize(self._reply), tokenize)
            if self._ttft:
                await asyncio.sleep(self._ttft + self._gap * len(plan.pieces))
            return plan.completion()
        pieces, finish, usage = self._plan(call)
        if self._ttft:
            await asyncio.sleep(self._ttft + self._gap * len(pieces))
        text = "".join(pieces)
        doc = {
            "id": "chatcmpl-" + secrets.token_hex(12), "object": "chat.completion", "created": int(time.time()),
            "model": call.upstream_model,
            "choices": [{"index": i, "message": {"role": "assistant", "content": text, "refusal": None},
                         "logprobs": None, "finish_reason": finish} for i in range(call.request.n)],
            "usage": usage.to_openai(), "system_fingerprint": "fp_sluice_sim",
        }
        return Completion(orjson.dumps(doc), usage, text * call.request.n, call.upstream_model)

    async def stream(self, call: Call) -> SimulatedStream | LegacyStream:
        if call.request.endpoint == "completions":
            return LegacyStream(LegacyPlan(call, tokenize(self._reply), tokenize), self._ttft, self._gap)
        return SimulatedStream(*self._plan(call), call, self._ttft, self._gap)

    async def aclose(self) -> None:
        return None


class SimulatedStream:
    def __init__(self, pieces: list[str], finish: str, usage: Usage, call: Call, ttft: float,
                 gap: float) -> None:
        self._pieces, self._finish, self._usage = pieces, finish, usage
        self._n = call.request.n
        self._ttft, self._gap = ttft, gap
        self._head = {"id": "chatcmpl-" + secrets.token_hex(12), "object": "chat.completion.chunk",
                      "created": int(time.time()), "model": call.upstream_model,
                      "system_fingerprint": "fp_sluice_sim"}

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {**self._head, "choices": choices, **extra}

    def __aiter__(self) -> AsyncIterator[Chunk]:
        return self._events()

    async def _events(self) -> AsyncIterator[Chunk]:
        if self._ttft:
            await asyncio.sleep(self._ttft)
        for i in range(self._n):
            role = self._chunk([{"index": i, "delta": {"role": "assistant", "content": "", "refusal": None},
                                 "logprobs": None, "finish_reason": None}])
            yield Chunk(orjson.dumps(role), parsed=role)
        for k, piece in enumerate(self._pieces):
            if self._gap and k:
                await asyncio.sleep(self._gap)
            for i in range(self._n):
                c = self._chunk([{"index": i, "delta": {"content": piece}, "logprobs": None,
                                  "finish_reason": None}])
                yield Chunk(orjson.dumps(c), parsed=c, text=piece)
        for i in range(self._n):
            fin = self._chunk([{"index": i, "delta": {}, "logprobs": None, "finish_reason": self._finish}])
            yield Chunk(orjson.dumps(fin), parsed=fin, finish=True)
        u = self._chunk([], usage=self._usage.to_openai())
        yield Chunk(orjson.dumps(u), parsed=u, usage=self._usage, usage_only=True)

    async def aclose(self) -> None:
        return None
