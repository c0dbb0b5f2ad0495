"""The OpenAI simulator's replies for `POST /v1/embeddings` and legacy `/v1/completions`: deterministic
bodies (and events) built from the request, so a test can compare what the client got with what was sent."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

WORDS = ["Once ", "upon ", "a ", "time", "."]


def embeddings_reply(body: dict[str, Any]) -> bytes:
    """A list of vectors (`dimensions` long, 4 by default), floats or base64 float32 as asked."""
    items = body["input"] if isinstance(body["input"], list) else [body["input"]]
    if items and isinstance(items[0], int):
        items = [items]
    dims = body.get("dimensions") or 4
    data = []
    for i, item in enumerate(items):
        vec = [round(((i + 1 + len(item)) * (k + 3) * 0.137) % 2 - 1, 6) for k in range(dims)]
        emb: Any = vec
        if body.get("encoding_format") == "base64":
            emb = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode()
        data.append({"object": "embedding", "index": i, "embedding": emb})
    prompt = sum(len(x.split()) if isinstance(x, str) else len(x) for x in items)
    return json.dumps({"object": "list", "data": data, "model": body["model"],
                       "usage": {"prompt_tokens": prompt, "total_tokens": prompt}}).encode()


def completion_reply(body: dict[str, Any]) -> bytes:
    """A plain legacy completion, or (with `stream`) its whole event stream ending in `[DONE]`; the usage
    event only when `stream_options.include_usage` asks for it, as OpenAI does."""
    head = {"id": "cmpl-sim", "object": "text_completion", "created": 1, "model": body["model"]}
    usage = {"prompt_tokens": 5, "completion_tokens": len(WORDS), "total_tokens": 5 + len(WORDS)}
    if not body.get("stream"):
        return json.dumps({**head, "choices": [{"text": "".join(WORDS), "index": 0, "logprobs": None,
                                                "finish_reason": "stop"}], "usage": usage}).encode()
    events = [{**head, "choices": [{"text": w, "index": 0, "logprobs": None,
                                    "finish_reason": "stop" if i == len(WORDS) - 1 else None}]}
              for i, w in enumerate(WORDS)]
    if (body.get("stream_options") or {}).get("include_usage"):
        events.append({**head, "choices": [], "usage": usage})
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
