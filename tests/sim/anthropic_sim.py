"""A loopback simulator of the Anthropic Messages API (`POST /v1/messages`, `/v1/messages/count_tokens`)
for end-to-end tests.

Serves a JSON Message or an SSE script (fixture bytes or events), or asks a `script` callable what to
answer (an agent's turn: call a tool, then answer from its result), with faults on demand: an error
status with headers, a slow first byte, a stream held silent until released, a mid-stream drop. It
records every request it received (bytes and headers) and whether a client closed its connection
before the reply was fully written.

With `thinking: {"type": "enabled"}` it keeps the real API's rules for signed thinking, with its messages:
every thinking or redacted_thinking block sent back must be one it issued, unchanged, and an assistant turn
whose tool_use is answered by the last message must start with its thinking.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from sluice.sse import SSEDecoder, encode_event

THINKING_FIRST = (
    "messages.{i}.content.0.type: Expected `thinking` or `redacted_thinking`, but found `{found}`. When "
    "`thinking` is enabled, a final `assistant` message must start with a thinking block (preceeding the lastmost "
    "set of `tool_use` and `tool_result` blocks). We recommend you include thinking blocks from previous turns. "
    "To avoid this requirement, disable `thinking`. Please consult our documentation at "
    "https://docs.claude.com/en/docs/build-with-claude/extended-thinking")


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
        self.issued: set[bytes] = set()   # every thinking and redacted_thinking block served, as canonical JSON
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    def reset(self) -> None:
        """Forget every reply queued and request seen (a simulator shared by the tests of a module)."""
        self.replies.clear()
        self.script = None
        self.received.clear()
        self.closed_early = False
        self.finished = asyncio.Event()
        self.issued.clear()

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
        problem = self._thinking_problem(body)
        if problem is not None:
            return web.json_response(error_body("invalid_request_error", problem), status=400)
        if self.replies:
            reply = self.replies.pop(0)
        else:
            reply = self.script(body) if self.script is not None else Reply(body=message())
        self.issued.update(_key(b) for b in _thinking_blocks(reply))
        if reply.first_byte_delay:
            await asyncio.sleep(reply.first_byte_delay)
        if reply.sse is None or reply.status != 200:
            return web.Response(status=reply.status, body=orjson.dumps(reply.body or {}), headers={
                "content-type": "application/json", "request-id": "req_sim", **reply.headers})
        return await self._stream(request, reply, reply.sse)

    def _thinking_problem(self, body: dict[str, Any]) -> str | None:
        thinking = body.get("thinking")
        if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
            return None  # adaptive thinking may skip a turn's thinking; disabled thinking drops old blocks
        messages = body.get("messages") or []
        for i, m in enumerate(messages):
            blocks = m.get("content") if m.get("role") == "assistant" else None
            for j, b in enumerate(blocks if isinstance(blocks, list) else []):
                if b.get("type") in ("thinking", "redacted_thinking") and _key(b) not in self.issued:
                    what = "signature` in `thinking" if b["type"] == "thinking" else "data` in `redacted_thinking"
                    return f"messages.{i}.content.{j}: Invalid `{what}` block"
        last = messages[-1] if messages else {}
        results = last.get("content") if last.get("role") == "user" else None
        if len(messages) < 2 or not isinstance(results, list) \
                or not any(b.get("type") == "tool_result" for b in results):
            return None
        turn = messages[-2].get("content")
        first = turn[0].get("type") if isinstance(turn, list) and turn else "text"
        return None if first in ("thinking", "redacted_thinking") else THINKING_FIRST.format(
            i=len(messages) - 2, found=first)

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


def _key(block: dict[str, Any]) -> bytes:
    keys = ("thinking", "signature") if block.get("type") == "thinking" else ("data",)
    return orjson.dumps([block.get("type"), *(block.get(k) for k in keys)])


def _thinking_blocks(reply: Reply) -> list[dict[str, Any]]:
    """The thinking and redacted_thinking blocks a reply serves, whole (a stream's put back together)."""
    if reply.sse is None:
        content = (reply.body or {}).get("content")
        return [b for b in content if b.get("type") in ("thinking", "redacted_thinking")] \
            if isinstance(content, list) else []
    open_blocks: dict[int, dict[str, Any]] = {}
    done: list[dict[str, Any]] = []
    for ev in SSEDecoder().feed(b"".join(reply.sse)):
        data = orjson.loads(ev.data)
        block, delta = data.get("content_block") or {}, data.get("delta") or {}
        if data.get("type") == "content_block_start" and block.get("type") in ("thinking", "redacted_thinking"):
            open_blocks[data["index"]] = dict(block)
        elif data.get("type") == "content_block_delta" and data.get("index") in open_blocks:
            b = open_blocks[data["index"]]
            for field in ("thinking", "signature"):
                b[field] = b.get(field, "") + delta.get(field, "")
        elif data.get("type") == "content_block_stop" and data.get("index") in open_blocks:
            done.append(open_blocks.pop(data["index"]))
    return done


def stream_events(content: list[dict[str, Any]], *, stop_reason: str = "end_turn", model: str = "claude-sim",
                  usage: dict[str, Any] | None = None, msg_id: str = "msg_sim") -> list[bytes]:
    """A whole streamed Message whose content blocks are `content` (text, (redacted) thinking, tool_use), as
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
             "redacted_thinking": block,
             "tool_use": {**block, "input": {}}}[kind]
    if kind == "redacted_thinking":
        deltas = []  # it comes whole in its start event
    elif kind == "text":
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
