"""An OpenAI-compatible upstream simulator: the real wire format from recorded-shape fixtures, faults on demand.

It serves `POST /v1/chat/completions` (and `/v1/responses`, replaying `responses_*` fixtures), and
`POST /v1/embeddings` and legacy `/v1/completions` (generated replies; `SimRequest.sent` keeps the bytes
sent, for comparison) on 127.0.0.1 (random port). Chat streams replay a fixture from
`tests/fixtures/openai/<name>.sse` event by event, bytes untouched; plain requests get `text.json`.
The fixture is chosen by the upstream model name Sluice sends: `fx-<name>` replays `<name>.sse`.

Faults are configured on the simulator object by the test (Sluice forwards no client headers):
`sim.push(fault)` queues a fault for the next request, `sim.always(fault)` applies it to every request
until `sim.reset()`. Every request is recorded (`sim.requests`): its JSON body, when it arrived, how many
events were sent, whether the response completed, and whether the client (Sluice) closed the
connection early, and when.

Use it in the test's loop (`async with OpenAISim() as sim`) or on its own thread (`ThreadedSim`), which
sync clients and session fixtures need: a blocked test loop must not stall the upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.sim.openai_endpoints import completion_reply, embeddings_reply

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "openai"
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def fixture_events(name: str) -> list[bytes]:
    """A recorded stream cut into its events, each with its own terminator, bytes exactly as on disk."""
    raw = fixture_bytes(name if "." in name else name + ".sse")
    out: list[bytes] = []
    pos = 0
    for m in _EVENT_END.finditer(raw):
        out.append(raw[pos:m.end()])
        pos = m.end()
    assert pos == len(raw), f"{name}: trailing bytes after the last event"
    return out


def fixture_payloads(name: str) -> list[bytes]:
    """The `data:` payload bytes of every event of a fixture (single-line data, as OpenAI sends)."""
    out = []
    for ev in fixture_events(name):
        line = ev.replace(b"\r\n", b"\n").replace(b"\r", b"\n").strip(b"\n")
        assert line.startswith(b"data: "), line
        out.append(line[len(b"data: "):])
    return out


def closed_port() -> int:
    """A port nothing listens on (bound, then released): connecting to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@dataclass
class Fault:
    """What to do differently for one request. Defaults: answer at once, replay the whole fixture."""

    status: int = 200
    body: bytes | None = None                  # with status != 200: the error body, sent as is
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    first_byte_delay: float = 0.0              # sleep before the status line (slow first byte)
    first_event_delay: float = 0.0             # headers at once, then sleep before event 1
    gap: float = 0.0                           # sleep between events
    pause_after: dict[int, float] = field(default_factory=dict)  # after N events sent, sleep s
    drop_after: int | None = None              # abort the socket after N events (no chunked terminator)
    eof_after: int | None = None               # end the body cleanly after N events (no finish, no [DONE])
    error_after: int | None = None             # after N events, send `data: {"error":...}` and end
    error_then_done: bool = False              # ... followed by `data: [DONE]` (as vLLM does)
    fixture: str | None = None                 # replay this fixture instead of the model's
    script: Callable[[dict[str, Any]], list[bytes]] | None = None  # stream these events (e.g. an agent's turn)
    reply: bytes | None = None                 # a plain (non-stream) chat reply instead of text.json
    usage: dict[str, Any] | None = None        # report this `usage` object instead of the fixture's
    endless: bytes | None = None               # after the head (and endless_prefix): these bytes, again and
    endless_every: float = 0.0                 # again every endless_every s, until the client leaves
    endless_prefix: bytes = b""
    endless_type: str = "text/event-stream"    # the content type of that endless reply, stream or not
    big_reply: int = 0                         # a plain reply: a valid completion padded to this many bytes

    # --- the faults tests ask for, by name ---
    @classmethod
    def slow_first_byte(cls, delay: float, **kw: Any) -> Fault:
        return cls(first_byte_delay=delay, **kw)

    @classmethod
    def slow_first_chunk(cls, delay: float, **kw: Any) -> Fault:
        return cls(first_event_delay=delay, **kw)

    @classmethod
    def mid_stream_drop(cls, after: int = 3, **kw: Any) -> Fault:
        return cls(drop_after=after, **kw)

    @classmethod
    def eof_without_finish(cls, after: int = 3, **kw: Any) -> Fault:
        return cls(eof_after=after, **kw)

    @classmethod
    def error_event(cls, after: int = 3, **kw: Any) -> Fault:
        return cls(error_after=after, **kw)

    @classmethod
    def http_error(cls, status: int, body: bytes | None = None, **kw: Any) -> Fault:
        if body is None and status == 401:
            body = fixture_bytes("error_401.json")
        if body is None:
            name = {400: "error_400.json", 429: "error_429.json", 503: "error_503.json"}.get(status, "error_500.json")
            body = fixture_bytes(name)
        return cls(status=status, body=body, **kw)

    @classmethod
    def rate_limited(cls, retry_after: int = 7, **kw: Any) -> Fault:
        return cls.http_error(429, headers={"retry-after": str(retry_after),
                                            "x-ratelimit-remaining-requests": "0"}, **kw)

    @classmethod
    def trickle(cls, data: bytes, every: float = 0.0, *, prefix: bytes = b"", **kw: Any) -> Fault:
        """An upstream that never finishes: `prefix`, then `data` forever (an endless line, comments...)."""
        return cls(endless=data, endless_every=every, endless_prefix=prefix, **kw)

    @classmethod
    def html_502(cls, **kw: Any) -> Fault:
        return cls(status=502, body=fixture_bytes("bad_gateway.html"), content_type="text/html", **kw)


@dataclass
class SimRequest:
    """One request as the simulator saw it. Times are `time.monotonic()` (comparable across threads)."""

    path: str
    headers: dict[str, str]
    raw: bytes
    body: Any
    arrived: float
    fault: Fault | None = None
    sent: bytes = b""                    # embeddings / legacy completions: the body or events sent
    responded_at: float | None = None    # when the status line went out
    events_sent: int = 0
    completed: bool = False              # the whole planned response was written
    client_closed: bool = False          # the client went away before that
    closed_at: float | None = None

    def note_closed(self) -> None:
        if not self.completed and not self.client_closed:
            self.client_closed = True
            self.closed_at = time.monotonic()


class OpenAISim:
    """The simulator itself; runs in the current event loop (see `ThreadedSim` for its own thread)."""

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl = ssl_context  # serve https (a TLS upstream) with this server context
        self.requests: list[SimRequest] = []
        self._queue: deque[Fault] = deque()
        self._always: Fault | None = None
        self._by_key: dict[str, Fault] = {}
        self._by_model: dict[str, Fault] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- configuration from the test ---
    def push(self, fault: Fault, times: int = 1) -> None:
        """Apply `fault` to the next `times` requests."""
        for _ in range(times):
            self._queue.append(fault)

    def always(self, fault: Fault) -> None:
        """Apply `fault` to every request until `reset()` (robust to Sluice's retry of a failed attempt)."""
        self._always = fault

    def for_key(self, api_key: str, fault: Fault) -> None:
        """Apply `fault` to every request that carries `Bearer api_key` until `reset()` (a key pool's key)."""
        self._by_key[api_key] = fault

    def for_model(self, prefix: str, fault: Fault) -> None:
        """Apply `fault` to every request for a model named `prefix...` until `reset()` (a scripted model)."""
        self._by_model[prefix] = fault

    def _model_fault(self, body: Any) -> Fault | None:
        model = str(body.get("model", "")) if isinstance(body, dict) else ""
        return next((f for prefix, f in self._by_model.items() if model.startswith(prefix)), None)

    def reset(self) -> None:
        self._queue.clear()
        self._always = None
        self._by_key.clear()
        self._by_model.clear()
        self.requests.clear()

    @property
    def base_url(self) -> str:
        return f"{'https' if self._ssl else 'http'}://127.0.0.1:{self.port}/v1"

    @property
    def last(self) -> SimRequest:
        return self.requests[-1]

    def _next_fault(self) -> Fault | None:
        try:
            return self._queue.popleft()
        except IndexError:
            return self._always

    # --- lifecycle ---
    async def start(self) -> OpenAISim:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/responses", self._responses)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/v1/completions", self._completions)
        # handler_cancellation: a client that goes away cancels the handler even while it sleeps
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._ssl)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> OpenAISim:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- handlers ---
    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": "gpt-4o-2024-08-06", "object": "model", "created": 1722814719, "owned_by": "system"}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "text.json", "text")

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        """The Responses API, for providers configured to pass it through: `responses_<name>` fixtures."""
        return await self._serve(request, "responses_text.json", "responses_text")

    async def _serve(self, request: web.Request, plain: str, streamed: str) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        fault = self._by_key.get(bearer) or self._model_fault(body) or self._next_fault()
        rec = SimRequest(request.path, dict(request.headers), raw, body, time.monotonic(), fault)
        self.requests.append(rec)
        f = fault or Fault()
        try:
            if f.first_byte_delay:
                await asyncio.sleep(f.first_byte_delay)
            if f.status != 200:
                resp = web.Response(status=f.status, body=f.body or b"", content_type=f.content_type,
                                    headers=f.headers)
                rec.responded_at = time.monotonic()
                rec.completed = True
                return resp
            if f.endless is not None:
                return await self._endless(request, rec, f)
            stream = isinstance(body, dict) and body.get("stream") is True
            if f.big_reply and not stream:
                doc = json.loads(fixture_bytes("text.json"))
                doc["padding"] = "p" * f.big_reply
                rec.responded_at = time.monotonic()
                rec.completed = True
                return web.Response(body=json.dumps(doc).encode(), content_type="application/json")
            if not stream:
                rec.responded_at = time.monotonic()
                rec.completed = True
                return web.Response(body=f.reply or _with_usage(fixture_bytes(plain), f.usage),
                                    content_type="application/json", headers=f.headers)
            return await self._stream(request, rec, f, body, streamed)
        except (asyncio.CancelledError, ConnectionError):
            rec.note_closed()
            raise

    async def _record(self, request: web.Request) -> tuple[SimRequest, web.Response | None]:
        """Record a request; the fault's error reply when one is queued (status != 200)."""
        raw = await request.read()
        rec = SimRequest(request.path, dict(request.headers), raw, json.loads(raw), time.monotonic(),
                         self._next_fault())
        self.requests.append(rec)
        rec.responded_at = time.monotonic()
        rec.completed = True
        f = rec.fault
        if f is not None and f.status != 200:
            return rec, web.Response(status=f.status, body=f.body or b"", content_type=f.content_type)
        return rec, None

    async def _embeddings(self, request: web.Request) -> web.Response:
        rec, err = await self._record(request)
        if err is not None:
            return err
        rec.sent = embeddings_reply(rec.body)
        return web.Response(body=rec.sent, content_type="application/json")

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        rec, err = await self._record(request)
        if err is not None:
            return err
        rec.sent = completion_reply(rec.body)
        if not rec.body.get("stream"):
            return web.Response(body=rec.sent, content_type="application/json")
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(rec.sent)
        await resp.write_eof()
        return resp

    async def _stream(self, request: web.Request, rec: SimRequest, f: Fault,
                      body: dict[str, Any], default: str) -> web.StreamResponse:
        model = str(body.get("model", ""))
        name = f.fixture or (model[3:] if model.startswith("fx-") else default)
        if f.script is not None:
            events = f.script(body)
        elif f.usage:
            events = [_with_usage(ev, f.usage) for ev in fixture_events(name)]
        else:
            events = fixture_events(name)
        resp = web.StreamResponse(headers={"content-type": "text/event-stream; charset=utf-8",
                                           "cache-control": "no-cache, must-revalidate",
                                           "x-request-id": "req_sim_" + str(len(self.requests)), **f.headers})
        rec.responded_at = time.monotonic()  # before the write: a fast client can see the head before
        await resp.prepare(request)           # this thread runs again after prepare()
        if f.first_event_delay:
            await asyncio.sleep(f.first_event_delay)
        for i, ev in enumerate(events):
            if f.drop_after is not None and i == f.drop_after:
                rec.completed = True  # the drop is ours, not the client's
                assert request.transport is not None
                request.transport.abort()
                return resp
            if f.eof_after is not None and i == f.eof_after:
                break
            if f.error_after is not None and i == f.error_after:
                await resp.write(b"data: " + fixture_bytes("error_event.json").strip() + b"\n\n")
                if f.error_then_done:
                    await resp.write(b"data: [DONE]\n\n")
                break
            if i and f.gap:
                await asyncio.sleep(f.gap)
            rec.events_sent = i + 1  # before the write, as responded_at: the client may read it before
            await resp.write(ev)      # this thread runs again
            pause = f.pause_after.get(i + 1)
            if pause:
                await asyncio.sleep(pause)
        rec.completed = True
        await resp.write_eof()
        return resp

    async def _endless(self, request: web.Request, rec: SimRequest, f: Fault) -> web.StreamResponse:
        assert f.endless is not None
        resp = web.StreamResponse(headers={"content-type": f.endless_type})
        rec.responded_at = time.monotonic()
        await resp.prepare(request)
        if f.endless_prefix:
            await resp.write(f.endless_prefix)
        while True:  # until Sluice closes the connection (the handler is cancelled then)
            await resp.write(f.endless)
            rec.events_sent += 1
            await asyncio.sleep(f.endless_every)


def chat_events(*, text: str = "", calls: tuple[tuple[str, str, str], ...] = (), model: str = "gpt-sim",
                usage: tuple[int, int] = (10, 7), cached: int | None = None) -> list[bytes]:
    """A whole chat stream (text, then tool calls as (id, name, arguments), a usage chunk, [DONE])."""
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        doc = {"id": "chatcmpl-script", "object": "chat.completion.chunk", "created": 1, "model": model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return b"data: " + json.dumps(doc).encode() + b"\n\n"

    out = [chunk({"role": "assistant", "content": ""})]
    if text:
        out.append(chunk({"content": text}))
    for i, (call_id, name, args) in enumerate(calls):
        out.append(chunk({"tool_calls": [{"index": i, "id": call_id, "type": "function",
                                          "function": {"name": name, "arguments": args}}]}))
    out.append(chunk({}, "tool_calls" if calls else "stop"))
    usage_doc = {"id": "chatcmpl-script", "object": "chat.completion.chunk", "created": 1, "model": model,
                 "choices": [], "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1],
                                          "total_tokens": sum(usage)}}
    if cached is not None:
        usage_doc["usage"]["prompt_tokens_details"] = {"cached_tokens": cached}  # type: ignore[index]
    return [*out, b"data: " + json.dumps(usage_doc).encode() + b"\n\n", b"data: [DONE]\n\n"]


def _with_usage(raw: bytes, usage: dict[str, Any] | None) -> bytes:
    """A reply body or SSE event whose non-null `usage` is replaced by `usage` (absurd figures on demand)."""
    if usage is None or b'"usage"' not in raw:
        return raw
    is_event = raw.startswith(b"data: ")
    doc = json.loads(raw[6:] if is_event else raw)
    if not doc.get("usage"):
        return raw
    doc["usage"] = usage
    body = json.dumps(doc).encode()
    return b"data: " + body + b"\n\n" if is_event else body


class ThreadedSim:
    """`OpenAISim` on its own thread and event loop; the same API (push/always/reset/requests)."""

    def __init__(self) -> None:
        self.sim = OpenAISim()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="openai-sim", daemon=True)

    def start(self) -> ThreadedSim:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.sim.start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.sim.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> ThreadedSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sim, name)

    def wait_for(self, pred: Any, timeout: float = 5.0) -> bool:
        """Poll `pred()` until true (for assertions on what the upstream saw); False on timeout."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred():
                return True
            time.sleep(0.02)
        return bool(pred())
