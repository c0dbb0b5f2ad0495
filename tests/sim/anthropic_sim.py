"""A loopback simulator of the Anthropic Messages API (`POST /v1/messages`, `/v1/messages/count_tokens`)
for end-to-end tests.

Serves a JSON Message or an SSE script (fixture bytes or events), or asks a `script` callable what to
answer (an agent's turn: call a tool, then answer from its result), with faults on demand: an error
status with headers, a slow first byte, a stream held silent until released, a mid-stream drop. It
records every request it received (bytes and headers) and whether a client closed its connection
before the reply was fully written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from sluice.sse import encode_event


@dataclass
class Reply:
    """What the simulator answers next. `sse` (whole frames) makes it stream; `body` is the JSON answer."""

    status: int = 200
    body: dict[str, Any] | None = None
    sse: list[bytes] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    first_byte_delay: float = 0.0   # before the status line
    event_delay: float = 0.0        # between SSE frames
    drop_after: int | None = None   # close the socket after this many SSE frames
    hold: asyncio.Event | None = None  # after the 200, send nothing until this is set


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    raw: bytes = b""
    query: str = ""


def frames(raw: bytes) -> list[bytes]:
    """Split fixture bytes into whole SSE frames (each ending in a blank line)."""
    return [part + b"\n\n" for part in raw.replace(b"\r\n", b"\n").split(b"\n\n") if part.strip()]


def events(*pairs: tuple[str, dict[str, Any]]) -> list[bytes]:
    return [encode_event(name, orjson.dumps(data)) for name, data in pairs]


def message(text: str = "Hello", *, msg_id: str = "msg_sim", model: str = "claude-sim") -> dict[str, Any]:
    return {"id": msg_id, "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 5, "output_tokens": 2}}


def error_body(kind: str, text: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": text}, "request_id": "req_sim"}


class AnthropicSim:
    """`async with AnthropicSim() as sim:`; queue replies with `sim.replies.append(Reply(...))`."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.script: Callable[[dict[str, Any]], Reply] | None = None  # used when no reply is queued
        self.received: list[Received] = []
        self.closed_early = False
        self.finished = asyncio.Event()   # set when a streamed reply ended (fully or not)
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def __aenter__(self) -> AnthropicSim:
        app = web.Application()
        app.router.add_post("/v1/messages", self._handle)
        app.router.add_post("/v1/messages/count_tokens", self._count)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = orjson.loads(raw)
        self.received.append(Received(request.path, {k.lower(): v for k, v in request.headers.items()}, body,
                                      raw, request.query_string))
        if self.replies:
            reply = self.replies.pop(0)
        else:
            reply = self.script(body) if self.script is not None else Reply(body=message())
        if reply.first_byte_delay:
            await asyncio.sleep(reply.first_byte_delay)
        if reply.sse is None or reply.status != 200:
            return web.Response(status=reply.status, body=orjson.dumps(reply.body or {}), headers={
                "content-type": "application/json", "request-id": "req_sim", **reply.headers})
        return await self._stream(request, reply, reply.sse)

    async def _stream(self, request: web.Request, reply: Reply, sse: list[bytes]) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers={"content-type": "text/event-stream", **reply.headers})
        await resp.prepare(request)
        if reply.hold is not None:
            await reply.hold.wait()
        try:
            for i, frame in enumerate(sse):
                if reply.drop_after is not None and i >= reply.drop_after:
                    assert request.transport is not None
                    request.transport.close()
                    return resp
                if reply.event_delay:
                    await asyncio.sleep(reply.event_delay)
                await resp.write(frame)
            await resp.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            self.closed_early = True
            raise
        finally:
            self.finished.set()
        return resp

    async def _count(self, request: web.Request) -> web.Response:
        """A count the test can recognise: 1000 + the number of messages; a queued error reply fails it."""
        raw = await request.read()
        body = orjson.loads(raw)
        self.received.append(Received(request.path, {k.lower(): v for k, v in request.headers.items()}, body,
                                      raw, request.query_string))
        if self.replies and self.replies[0].status != 200:
            reply = self.replies.pop(0)
            return web.json_response(reply.body or {}, status=reply.status)
        return web.json_response({"input_tokens": 1000 + len(body.get("messages") or [])})


def stream_events(content: list[dict[str, Any]], *, stop_reason: str = "end_turn", model: str = "claude-sim",
                  usage: dict[str, Any] | None = None, msg_id: str = "msg_sim") -> list[bytes]:
    """A whole streamed Message whose content blocks are `content` (text, thinking, tool_use), as
    Anthropic streams it: start, then per block start/deltas/stop, then message_delta and stop."""
    start_usage = {"input_tokens": 10, "output_tokens": 1, **(usage or {})}
    out = events(("message_start", {"type": "message_start", "message": {
        "id": msg_id, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": start_usage}}))
    for i, block in enumerate(content):
        out += events(*_block_events(i, block))
    out += events(("message_delta", {"type": "message_delta", "delta": {
        "stop_reason": stop_reason, "stop_sequence": None}, "usage": {"output_tokens": 7}}),
                  ("message_stop", {"type": "message_stop"}))
    return out


def _block_events(i: int, block: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    kind = block["type"]
    empty = {"text": {"type": "text", "text": ""},
             "thinking": {"type": "thinking", "thinking": "", "signature": ""},
             "tool_use": {**block, "input": {}}}[kind]
    if kind == "text":
        deltas = [{"type": "text_delta", "text": block["text"]}]
    elif kind == "thinking":
        deltas = [{"type": "thinking_delta", "thinking": block["thinking"]},
                  {"type": "signature_delta", "signature": block["signature"]}]
    else:
        deltas = [{"type": "input_json_delta", "partial_json": orjson.dumps(block["input"]).decode()}]
    return [("content_block_start", {"type": "content_block_start", "index": i, "content_block": empty}),
            *(("content_block_delta", {"type": "content_block_delta", "index": i, "delta": d}) for d in deltas),
            ("content_block_stop", {"type": "content_block_stop", "index": i})]


def answer(body: dict[str, Any], content: list[dict[str, Any]], *, stop_reason: str = "end_turn",
           usage: dict[str, Any] | None = None) -> Reply:
    """The reply to `body` with these content blocks: streamed when the request asked for a stream."""
    if body.get("stream"):
        return Reply(sse=stream_events(content, stop_reason=stop_reason, model=body["model"], usage=usage))
    msg = message(model=body["model"])
    msg.update(content=content, stop_reason=stop_reason)
    msg["usage"] = {"input_tokens": 10, "output_tokens": 7, **(usage or {})}
    return Reply(body=msg)
