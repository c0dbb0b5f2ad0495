"""The Responses pass-through stream: frames forwarded as the upstream sent them (re-framed LF only),
however the bytes were cut, with usage read from the terminal event; upstream errors and truncation raise."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from sluice.errors import UpstreamError
from sluice.providers.openai_responses import ResponsesStream, reply_usage, usage_from
from sluice.sse import encode_event
from sluice.upstream import UpstreamLimits

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "openai"
SSE = (FIX / "responses_text.sse").read_bytes()


class _Body:
    """The upstream response's side the stream uses (the seam): body pieces, limits, progress, close()."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces
        self.closed = False
        self.limits = UpstreamLimits()

    def mark_progress(self) -> None:
        pass

    def check_progress(self) -> None:
        pass

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        for p in self.pieces:
            yield p

    def close(self) -> None:
        self.closed = True


def _cut(raw: bytes, size: int) -> list[bytes]:
    return [raw[i:i + size] for i in range(0, len(raw), size)]


async def _drain(pieces: list[bytes]) -> tuple[list[Any], _Body]:
    body = _Body(pieces)
    stream = ResponsesStream(body)  # type: ignore[arg-type]
    try:
        return [c async for c in stream], body
    finally:
        await stream.aclose()


@pytest.mark.parametrize("size", [1, 7, 4096, len(SSE)])
@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
async def test_frames_pass_unchanged_however_cut(size: int, newline: bytes) -> None:
    chunks, body = await _drain(_cut(SSE.replace(b"\n", newline), size))
    assert b"".join(c.payload for c in chunks) == SSE
    assert [c.finish for c in chunks].count(True) == 1 and chunks[-1].finish
    use = chunks[-1].usage
    assert use is not None and (use.prompt_tokens, use.completion_tokens) == (21, 75)
    assert (use.cached_tokens, use.reasoning_tokens) == (8, 64)
    assert all(c.usage is None for c in chunks[:-1]) and body.closed


async def test_type_only_in_data_is_named_from_it() -> None:
    raw = b"".join(b"data: " + line.removeprefix(b"data: ") + b"\n\n"
                   for line in SSE.split(b"\n") if line.startswith(b"data: "))
    chunks, _ = await _drain([raw])
    assert b"".join(c.payload for c in chunks) == SSE


async def test_error_event_and_truncation_raise() -> None:
    frames = SSE.split(b"\n\n")
    error = encode_event("error", orjson.dumps({"type": "error", "code": "server_error", "message": "boom",
                                                "sequence_number": 3}))
    with pytest.raises(UpstreamError, match="boom"):
        await _drain([b"\n\n".join(frames[:3]) + b"\n\n" + error])
    with pytest.raises(UpstreamError, match=r"before response\.completed"):
        await _drain([b"\n\n".join(frames[:5]) + b"\n\n"])


def test_usage_is_none_when_not_reported_and_clamped_when_odd() -> None:
    assert usage_from(None) is None and usage_from({"input_tokens": -1, "output_tokens": 2}) is None
    u = usage_from({"input_tokens": 5, "output_tokens": 2, "input_tokens_details": {"cached_tokens": 99}})
    assert u is not None and u.cached_tokens == 5
    use, model = reply_usage((FIX / "responses_text.json").read_bytes())
    assert use is not None and use.prompt_tokens == 21 and model == "gpt-5-2025-08-07"
    with pytest.raises(UpstreamError):
        reply_usage(b'{"object": "chat.completion"}')
