"""An OpenAI-compatible streaming upstream for browser tests, run on loopback in a background thread.

Model `slow-*`: one chunk every `gap` seconds for a long time; records when the gateway closes the
connection (what the playground's Stop must cause). Model `split-*`: a reply with Chinese text and
emoji, its SSE bytes cut inside multi-byte characters and across events, each piece a separate write.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

from aiohttp import web

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


class OpenAISim:
    def __init__(self, gap: float = 0.15) -> None:
        self.gap = gap
        self.port = 0
        self.closed = threading.Event()      # a slow stream's client went away
        self.slow_started = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> OpenAISim:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("simulator did not start")
        return self

    def stop(self) -> None:
        async def down() -> None:
            if self._runner is not None:
                await self._runner.cleanup()
        asyncio.run_coroutine_threadsafe(down(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        doc = await request.json()
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        if str(doc.get("model", "")).startswith("slow"):
            await self._slow(request, resp)
        else:
            for piece in split_stream_pieces():
                await resp.write(piece)
                await asyncio.sleep(0.004)
            await resp.write_eof()
        return resp

    async def _slow(self, request: web.Request, resp: web.StreamResponse) -> None:
        self.slow_started.set()
        try:
            await resp.write(chunk("", role=True))
            for i in range(400):
                await resp.write(chunk(f"word{i} "))
                await asyncio.sleep(self.gap)
                transport = request.transport
                if transport is None or transport.is_closing():
                    self.closed.set()
                    return
            await resp.write(chunk(None, finish="stop") + b"data: [DONE]\n\n")
        except (ConnectionError, asyncio.CancelledError):
            self.closed.set()
            raise
