"""A loopback simulator of Gemini's REST wire format (aiohttp.web) for end-to-end provider tests.

Serves `POST /v1beta/models/{model}:generateContent` and `:streamGenerateContent?alt=sse` from
scripted replies or recorded `.sse` fixtures, injects faults on demand (error statuses with Gemini
error bodies, slow first byte, mid-stream drop), and records every request and early client close.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

_RPC = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED",
        500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


@dataclass
class Script:
    """What the simulator does for one request. Unset parts fall back to a small default reply."""

    events: list[dict[str, Any]] | None = None  # stream events, framed as `data: {json}` + line_ending * 2
    raw: bytes | None = None                    # a recorded stream body sent as is (e.g. a fixture)
    reply: dict[str, Any] | None = None         # the generateContent reply
    status: int = 200                           # non-200: a Gemini error body with the matching status
    message: str = "simulated failure"
    retry_after: str | None = None
    first_byte_delay: float = 0.0               # before the status line
    event_delay: float = 0.0                    # between stream events
    drop_after: int | None = None               # abort the connection after this many events
    line_ending: bytes = b"\r\n"


@dataclass
class Received:
    model: str
    action: str
    query: dict[str, str]
    headers: dict[str, str]
    body: dict[str, Any]


def text_reply(text: str = "Hello from the simulator", model: str = "gemini-sim") -> dict[str, Any]:
    return {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP",
                            "index": 0}],
            "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 4, "totalTokenCount": 9},
            "modelVersion": model, "responseId": "sim-1"}


def text_events(pieces: list[str], model: str = "gemini-sim") -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for i, piece in enumerate(pieces):
        cand: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": piece}]}, "index": 0}
        if i == len(pieces) - 1:
            cand["finishReason"] = "STOP"
        events.append({"candidates": [cand], "modelVersion": model, "responseId": "sim-s",
                       "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": i + 1}})
    return events


def embed_reply(body: dict[str, Any]) -> dict[str, Any]:
    """`batchEmbedContents`: one vector per request (`outputDimensionality` long, 3 by default), from its text."""
    out = []
    for req in body["requests"]:
        text = req["content"]["parts"][0]["text"]
        dims = req.get("outputDimensionality") or 3
        out.append({"values": [round((len(text) * (k + 1) * 0.061) % 2 - 1, 5) for k in range(dims)]})
    return {"embeddings": out}


@dataclass
class GeminiSim:
    """Queue `Script`s with `push()`; each request consumes one (the default reply when none is queued)."""

    scripts: deque[Script] = field(default_factory=deque)
    requests: list[Received] = field(default_factory=list)
    closed_early: int = 0
    completed: int = 0
    base_url: str = ""
    _runner: web.AppRunner | None = None

    def push(self, *scripts: Script) -> None:
        self.scripts.extend(scripts)

    def reset(self) -> None:
        """Forget every script queued and request seen (a simulator shared by the tests of a module)."""
        self.scripts.clear()
        self.requests.clear()
        self.closed_early = self.completed = 0

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1beta/models/{target}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}/v1beta"
        return self.base_url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> GeminiSim:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        model, _, action = request.match_info["target"].partition(":")
        raw = await request.read()
        self.requests.append(Received(model, action, dict(request.query),
                                      {k.lower(): v for k, v in request.headers.items()},
                                      orjson.loads(raw) if raw else {}))
        script = self.scripts.popleft() if self.scripts else Script()
        if script.first_byte_delay:
            await asyncio.sleep(script.first_byte_delay)
        if script.status != 200:
            return self._error(script)
        if action == "generateContent":
            self.completed += 1
            return web.Response(body=orjson.dumps(script.reply or text_reply(model=model)),
                                content_type="application/json")
        if action == "batchEmbedContents":
            self.completed += 1
            return web.json_response(embed_reply(self.requests[-1].body))
        if action == "streamGenerateContent" and request.query.get("alt") == "sse":
            return await self._stream(request, script, model)
        return web.json_response({"error": {"code": 404, "message": f"unknown action {action}",
                                            "status": "NOT_FOUND"}}, status=404)

    def _error(self, script: Script) -> web.Response:
        headers = {"retry-after": script.retry_after} if script.retry_after else {}
        body = {"error": {"code": script.status, "message": script.message,
                          "status": _RPC.get(script.status, "UNKNOWN")}}
        return web.Response(status=script.status, body=orjson.dumps(body), headers=headers,
                            content_type="application/json")

    async def _stream(self, request: web.Request, script: Script, model: str) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        if script.raw is not None:
            frames = [script.raw]
        else:
            sep = script.line_ending * 2
            frames = [b"data: " + orjson.dumps(ev) + sep for ev in script.events or text_events(["Hi", "!"],
                                                                                               model)]
        try:
            for i, frame in enumerate(frames):
                if script.drop_after is not None and i >= script.drop_after:
                    assert request.transport is not None
                    request.transport.abort()  # no terminating chunk: the client sees a broken body
                    return resp
                await resp.write(frame)
                if script.event_delay:
                    await asyncio.sleep(script.event_delay)
            await resp.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            self.closed_early += 1
            raise
        self.completed += 1
        return resp
