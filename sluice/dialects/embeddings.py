"""`POST /v1/embeddings` as a front door: the body passes through; a reply without usage gets the estimate."""

from __future__ import annotations

import orjson


def with_estimated_usage(body: bytes, prompt: int | None) -> bytes:
    """An embeddings reply from an upstream that reports no usage (Gemini) gets the estimate the ledger
    records, as OpenAI's SDKs expect `usage` there."""
    doc = orjson.loads(body)
    doc["usage"] = {"prompt_tokens": prompt or 0, "total_tokens": prompt or 0}
    return orjson.dumps(doc)
