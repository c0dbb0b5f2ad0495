"""Signed thinking in the canonical chat form: `thinking_blocks`, so a tool loop can send an Anthropic
upstream's thinking back exactly as it came (its `signature` verifies the text, byte for byte).

The field sits on an assistant message (and on a stream chunk's `delta`) and holds Anthropic's own block
shapes, in the order the upstream produced them: `{"type": "thinking", "thinking": str, "signature": str}`
and `{"type": "redacted_thinking", "data": str}` (LiteLLM's `thinking_blocks`, which the OpenAI Agents SDK
reads and writes). In a stream each block arrives whole in one chunk when the upstream closes it; its text
has already streamed as `reasoning_content`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sluice.errors import InvalidRequest

FIELD = "thinking_blocks"
MAX_BLOCKS = 256   # per message: far above what one turn produces, even with interleaved thinking
# the keys each block kind carries, all strings; anything else on a block is dropped
_KEYS = {"thinking": ("thinking", "signature"), "redacted_thinking": ("data",)}


def checked_blocks(v: Any, param: str) -> list[dict[str, str]]:
    """A client's `thinking_blocks` (or the decoded form of one) checked and copied with only the keys
    Anthropic takes; InvalidRequest naming the bad block otherwise."""
    if not isinstance(v, list) or len(v) > MAX_BLOCKS:
        raise InvalidRequest(f"'{param}' must be an array of at most {MAX_BLOCKS} thinking blocks", param=param,
                             code="invalid_type")
    out: list[dict[str, str]] = []
    for j, block in enumerate(v):
        kind = block.get("type") if isinstance(block, dict) else None
        keys = _KEYS.get(kind) if isinstance(kind, str) else None
        if keys is None or not all(isinstance(block.get(k), str) for k in keys):
            raise InvalidRequest(f"{param}[{j}] must be a thinking block (type 'thinking' with string 'thinking' "
                                 "and 'signature', or 'redacted_thinking' with string 'data')",
                                 param=f"{param}[{j}]", code="invalid_value")
        entry = {"type": str(kind)}
        entry.update((k, block[k]) for k in keys)
        out.append(entry)
    return out


def without_thinking(messages: Any) -> list[Any] | None:
    """`messages` minus every `thinking_blocks`, for an upstream that cannot verify them (a new list, the
    client's left as they are); None when no message carries any, so the common case copies nothing."""
    if not isinstance(messages, list) or not any(isinstance(m, Mapping) and FIELD in m for m in messages):
        return None
    return [{k: v for k, v in m.items() if k != FIELD} if isinstance(m, Mapping) and FIELD in m else m
            for m in messages]
