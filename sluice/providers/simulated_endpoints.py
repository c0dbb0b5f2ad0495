"""The simulated model's embeddings and legacy completions, so the README's examples answer offline.

Embeddings are deterministic (a hash of each input spread over [-1, 1)), in float or base64 (little-endian
float32, as OpenAI sends them); completions reuse the simulated reply, one choice per prompt and `n`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import struct
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from sluice.providers.base import Call, Chunk, Completion
from sluice.schema.usage import Usage

Tokenize = Callable[[str], list[str]]
SIM_DIMENSIONS = 16          # the simulated vector length when the request names none
MAX_SIM_DIMENSIONS = 4096    # bounds the work a request can ask of the simulator
LEGACY_MAX_TOKENS = 16       # OpenAI's default for /v1/completions


def embedding_vector(item: str | list[int], dims: int) -> list[float]:
    """The simulated embedding of one input: the same input always gives the same vector."""
    seed = item.encode() if isinstance(item, str) else orjson.dumps(item)
    out: list[float] = []
    block = 0
    while len(out) < dims:
        digest = hashlib.sha256(seed + block.to_bytes(4, "little")).digest()
        out.extend(int.from_bytes(digest[i:i + 2], "little") / 32768 - 1 for i in range(0, 32, 2))
        block += 1
    return out[:dims]


def _inputs(value: Any) -> list[str | list[int]]:
    if isinstance(value, str):
        return [value]
    if value and all(isinstance(t, int) for t in value):
        return [value]
    return list(value)


def embeddings(call: Call, count: Tokenize) -> Completion:
    body = call.request.body
    items = _inputs(body["input"])
    dims = min(body.get("dimensions") or SIM_DIMENSIONS, MAX_SIM_DIMENSIONS)
    b64 = body.get("encoding_format") == "base64"
    data = []
    for i, item in enumerate(items):
        vec = embedding_vector(item, dims)
        emb: Any = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode() if b64 else vec
        data.append({"object": "embedding", "index": i, "embedding": emb})
    prompt = sum(len(count(x)) if isinstance(x, str) else len(x) for x in items)
    usage = Usage(prompt, 0)
    doc = {"object": "list", "data": data, "model": call.upstream_model,
           "usage": {"prompt_tokens": prompt, "total_tokens": prompt}}
    return Completion(orjson.dumps(doc), usage, "", call.upstream_model)


class LegacyPlan:
    """One legacy completion request's choices: each prompt `n` times, the reply cut at `max_tokens`."""

    def __init__(self, call: Call, reply: list[str], count: Tokenize) -> None:
        body = call.request.body
        prompts = _inputs(body["prompt"])
        limit = body.get("max_tokens")
        limit = LEGACY_MAX_TOKENS if limit is None else limit
        self.pieces = reply[:limit]
        self.finish = "length" if limit < len(reply) else "stop"
        self.choices = len(prompts) * (body.get("n") or 1)
        prompt = sum(len(count(x)) if isinstance(x, str) else len(x) for x in prompts)
        self.usage = Usage(prompt, len(self.pieces) * self.choices)
        self.model = call.upstream_model
        self.head = {"id": "cmpl-" + secrets.token_hex(12), "object": "text_completion",
                     "created": int(time.time()), "model": call.upstream_model, "system_fingerprint": "fp_sluice_sim"}

    def completion(self) -> Completion:
        text = "".join(self.pieces)
        doc = {**self.head, "choices": [{"text": text, "index": i, "logprobs": None, "finish_reason": self.finish}
                                        for i in range(self.choices)], "usage": self.usage.to_openai()}
        return Completion(orjson.dumps(doc), self.usage, text * self.choices, self.model)


class LegacyStream:
    """A legacy completion streamed at the simulated model's pace; usage comes last, alone."""

    def __init__(self, plan: LegacyPlan, ttft: float, gap: float) -> None:
        self._plan, self._ttft, self._gap = plan, ttft, gap

    def __aiter__(self) -> AsyncIterator[Chunk]:
        return self._chunks()

    async def aclose(self) -> None:
        return None

    async def _chunks(self) -> AsyncIterator[Chunk]:
        if self._ttft:
            await asyncio.sleep(self._ttft)
        p = self._plan
        for k, piece in enumerate(p.pieces):
            if self._gap and k:
                await asyncio.sleep(self._gap)
            for i in range(p.choices):
                last = k == len(p.pieces) - 1
                c = {**p.head, "choices": [{"text": piece, "index": i, "logprobs": None,
                                            "finish_reason": p.finish if last else None}]}
                yield Chunk(orjson.dumps(c), parsed=c, text=piece, finish=last)
        if not p.pieces:
            for i in range(p.choices):
                c = {**p.head, "choices": [{"text": "", "index": i, "logprobs": None, "finish_reason": p.finish}]}
                yield Chunk(orjson.dumps(c), parsed=c, finish=True)
        u = {**p.head, "choices": [], "usage": p.usage.to_openai()}
        yield Chunk(orjson.dumps(u), parsed=u, usage=p.usage, usage_only=True)
