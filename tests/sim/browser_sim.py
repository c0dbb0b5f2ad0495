"""What the browser tests' upstream streams, played by the one OpenAI simulator (`browser_faults`).

Model `slow-*`: one chunk every `gap` seconds for a long time (the simulator records when the gateway
closes the connection: what the playground's Stop must cause). Model `split-*`: a reply with Chinese
text and emoji, its SSE bytes cut inside multi-byte characters and across events, each piece a write.
"""

from __future__ import annotations

import json
import time
from typing import Any

from tests.sim.openai_sim import Fault

SPLIT_REPLY = "你好，世界！🌍 流式响应 ✨ — 中文与 emoji 🎉👩‍💻 完整无缺。"


def chunk(content: str | None, *, finish: str | None = None, role: bool = False) -> bytes:
    delta: dict[str, Any] = {}
    if role:
        delta["role"] = "assistant"
    if content is not None:
        delta["content"] = content
    doc = {"id": "chatcmpl-sim", "object": "chat.completion.chunk", "created": int(time.time()), "model": "sim",
           "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
    return b"data: " + json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def usage_chunk(prompt: int, completion: int) -> bytes:
    doc = {"id": "chatcmpl-sim", "object": "chat.completion.chunk", "created": int(time.time()), "model": "sim",
           "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                    "total_tokens": prompt + completion}}
    return b"data: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n"


def split_stream_pieces() -> list[bytes]:
    """The whole stream, cut at awkward places: inside UTF-8 sequences, between CR/LF, mid-JSON."""
    body = chunk("", role=True)
    for piece in ["你好，", "世界！🌍", " 流式响应 ✨", " — 中文与 emoji 🎉", "👩‍💻 完整无缺。"]:
        body += chunk(piece)
    body += chunk(None, finish="stop") + usage_chunk(9, 12) + b"data: [DONE]\n\n"
    pieces, i, step = [], 0, 1
    while i < len(body):
        j = min(len(body), i + step)
        pieces.append(body[i:j])
        i = j
        step = step % 7 + 2  # 2..8 bytes: lands inside 3- and 4-byte characters again and again
    return pieces


def slow_events(words: int = 400) -> list[bytes]:
    """A long reply, one numbered word an event: the playground's Stop must end it early."""
    return [chunk("", role=True), *(chunk(f"word{i} ") for i in range(words)), chunk(None, finish="stop"),
            b"data: [DONE]\n\n"]


def browser_faults(gap: float = 0.15) -> dict[str, Fault]:
    """Model prefix -> what the one simulator (tests/sim/openai_sim.py) streams for it: `slow-*` a word every
    `gap` seconds, `split-*` the split stream, each piece its own write."""
    return {"slow-": Fault(script=lambda body: slow_events(), gap=gap),
            "split-": Fault(script=lambda body: split_stream_pieces(), gap=0.004)}
