"""A reasoning item's `encrypted_content` for a translated upstream: the signed thinking blocks of the turn
(`sluice/schema/thinking.py`) in an opaque, versioned envelope that Sluice reads back when a stateless client
(Codex, the Agents SDK: `store: false`, `include: ["reasoning.encrypted_content"]`) returns the item.

Version 1 is `sluice.th1.` + base64url(zlib(JSON array of blocks)). It is not a secret: the client already has
the thinking as the summary, and the upstream verifies each block's signature itself, so the envelope only has
to come back unchanged. Content without the prefix is another provider's (OpenAI's own reasoning): no translated
upstream can take it, so it is dropped; content with the prefix that does not decode is the client's 400.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Mapping
from typing import Any

import orjson

from sluice.errors import InvalidRequest
from sluice.schema.thinking import checked_blocks

INCLUDE = "reasoning.encrypted_content"   # what a client puts in `include` to be given the envelope
PREFIX = "sluice.th1."
MAX_DECODED = 32 << 20   # decoded bytes per request, all items together: twice the default body cap


def wanted(req: Mapping[str, Any]) -> bool:
    """Whether the client asked for `encrypted_content`, as OpenAI gives it only then."""
    include = req.get("include")
    return isinstance(include, list) and INCLUDE in include


def encode(blocks: Any) -> str | None:
    """The envelope of a reply's `thinking_blocks`; None when they are not thinking blocks (an upstream's odd
    field), since the client could never send them back."""
    try:
        checked = checked_blocks(blocks, "thinking_blocks")
    except InvalidRequest:
        return None
    return PREFIX + base64.urlsafe_b64encode(zlib.compress(orjson.dumps(checked), 6)).decode("ascii")


class Decoder:
    """Reads the envelopes of one request, within one budget of decoded bytes (a small envelope can inflate)."""

    def __init__(self, budget: int = MAX_DECODED) -> None:
        self.budget = budget

    def decode(self, v: Any, param: str) -> list[dict[str, str]]:
        """The blocks in `v`; [] for no content or another provider's; InvalidRequest when it is ours but bad."""
        if not isinstance(v, str) or not v.startswith(PREFIX):
            return []
        raw = self._inflate(v[len(PREFIX):], param)
        try:
            return checked_blocks(orjson.loads(raw), param)
        except (orjson.JSONDecodeError, InvalidRequest):
            raise _damaged(param) from None

    def _inflate(self, text: str, param: str) -> bytes:
        if self.budget <= 0:  # (a zero max_length would mean no limit at all)
            raise _too_large(param)
        try:
            inflater = zlib.decompressobj()
            raw = inflater.decompress(base64.urlsafe_b64decode(text.encode("ascii")), self.budget)
        except (binascii.Error, ValueError, zlib.error):  # ValueError: text that is not ASCII
            raise _damaged(param) from None
        if inflater.unconsumed_tail:
            raise _too_large(param)
        if not inflater.eof or inflater.unused_data:
            raise _damaged(param)
        self.budget -= len(raw)
        return raw


def _damaged(param: str) -> InvalidRequest:
    return InvalidRequest(f"'{param}' is not reasoning content Sluice produced (it is damaged or was changed); "
                          "send reasoning items back exactly as they were received", param=param,
                          code="invalid_encrypted_content")


def _too_large(param: str) -> InvalidRequest:
    return InvalidRequest(f"'{param}': the reasoning content of this request is too large once decoded "
                          f"(at most {MAX_DECODED >> 20} MiB in all)", param=param, code="invalid_encrypted_content")
