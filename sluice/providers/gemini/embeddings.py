"""OpenAI `POST /v1/embeddings` over Gemini's `batchEmbedContents`: one request per input text, the vectors
back in OpenAI's list shape (floats, or base64 little-endian float32 as OpenAI sends them)."""

from __future__ import annotations

import base64
import struct
from typing import Any

from sluice.errors import InvalidRequest, UpstreamError

JSON = dict[str, Any]


def to_batch_embed(body: JSON, upstream_model: str) -> JSON:
    """The Gemini request for an (already validated) OpenAI embeddings body. Token arrays have no Gemini
    equivalent, so they are a 400 naming `input` rather than a guess."""
    raw = body["input"]
    texts = [raw] if isinstance(raw, str) else raw
    if not all(isinstance(t, str) for t in texts):
        raise InvalidRequest(f"The model `{body['model']}` is served by Gemini, whose embeddings take text, "
                             "not token ids.", param="input", code="unsupported_value")
    name = "models/" + upstream_model.removeprefix("models/")
    dims = body.get("dimensions")
    requests = []
    for text in texts:
        req: JSON = {"model": name, "content": {"parts": [{"text": text}]}}
        if dims is not None:
            req["outputDimensionality"] = dims
        requests.append(req)
    return {"requests": requests}


def from_batch_embed(data: Any, body: JSON, upstream_model: str, count: int) -> JSON:
    """Gemini's reply -> OpenAI's embeddings list; `count` inputs must come back as `count` vectors."""
    embeddings = data.get("embeddings") if isinstance(data, dict) else None
    if not isinstance(embeddings, list) or len(embeddings) != count:
        raise UpstreamError("Gemini sent an embeddings reply without one vector per input")
    b64 = body.get("encoding_format") == "base64"
    out = []
    for i, emb in enumerate(embeddings):
        values = emb.get("values") if isinstance(emb, dict) else None
        if not isinstance(values, list) or not all(isinstance(v, (int, float)) for v in values):
            raise UpstreamError("Gemini sent an embedding that is not a list of numbers")
        vec: Any = base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode() if b64 else values
        out.append({"object": "embedding", "index": i, "embedding": vec})
    return {"object": "list", "data": out, "model": upstream_model}
