"""A loopback simulator of the Anthropic Messages API (`POST /v1/messages`) for end-to-end tests.

Serves a JSON Message or an SSE script (fixture bytes or events), with faults on demand: an error
status with headers, a slow first byte, a mid-stream drop. It records every request it received and
whether a client closed its connection before the reply was fully written.
"""

from __future__ import annotations

import asyncio
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


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


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
        self.received: list[Received] = []
        self.closed_early = False
        self.finished = asyncio.Event()   # set when a streamed reply ended (fully or not)
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def __aenter__(self) -> AnthropicSim:
        app = web.Application()
        app.router.add_post("/v1/messages", self._handle)
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
        body = await request.json(loads=orjson.loads)
        self.received.append(Received(request.path, {k.lower(): v for k, v in request.headers.items()}, body))
        reply = self.replies.pop(0) if self.replies else Reply(body=message())
        if reply.first_byte_delay:
            await asyncio.sleep(reply.first_byte_delay)
        if reply.sse is None or reply.status != 200:
            return web.Response(status=reply.status, body=orjson.dumps(reply.body or {}), headers={
                "content-type": "application/json", "request-id": "req_sim", **reply.headers})
        return await self._stream(request, reply, reply.sse)

    async def _stream(self, request: web.Request, reply: Reply, sse: list[bytes]) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers={"content-type": "text/event-stream", **reply.headers})
        await resp.prepare(request)
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
