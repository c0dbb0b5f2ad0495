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
import ssl
import threading
import time
from collections import deque
from typing import Any

from aiohttp import web

from tests.sim.openai_endpoints import completion_reply, embeddings_reply
from tests.sim.openai_wire import (
    FIXTURES,
    Fault,
    SimRequest,
    chat_events,
    closed_port,
    fixture_bytes,
    fixture_events,
    fixture_payloads,
    with_usage,
)

__all__ = ["FIXTURES", "Fault", "OpenAISim", "SimRequest", "ThreadedSim", "chat_events", "closed_port",
           "fixture_bytes", "fixture_events", "fixture_payloads"]


class OpenAISim:
    """The simulator itself; runs in the current event loop (see `ThreadedSim` for its own thread)."""

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None, backlog: int = 128) -> None:
        self._ssl = ssl_context  # serve https (a TLS upstream) with this server context
        self._backlog = backlog  # pending connections: a load test's hundreds of concurrent requests need more
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

    def users(self) -> list[str]:
        """The `user` field of every request so far (a load test tags each request with one)."""
        return [str(r.body.get("user")) for r in list(self.requests) if isinstance(r.body, dict)]

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
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._ssl, backlog=self._backlog)
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
                reply = f.plain(body) if f.plain is not None and isinstance(body, dict) else f.reply
                return web.Response(body=reply or with_usage(fixture_bytes(plain), f.usage),
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
            events = [with_usage(ev, f.usage) for ev in fixture_events(name)]
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
            if f.hold is not None and i + 1 == f.hold_after:
                await asyncio.to_thread(f.hold.wait)  # a thread's event: the test may run in another loop
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


class ThreadedSim:
    """`OpenAISim` on its own thread and event loop; the same API (push/always/reset/requests)."""

    def __init__(self, *, backlog: int = 128) -> None:
        self.sim = OpenAISim(backlog=backlog)
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
