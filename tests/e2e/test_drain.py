"""The graceful stop, on real `sluice serve` processes: after SIGTERM `/ready` answers 503 at once while
everything is still served for `server.drain_seconds`; then new connections are refused and open streams
go on to `[DONE]`; what is still open when `shutdown_grace_seconds` runs out ends with a `server_shutdown`
error (an SSE error event, Anthropic's `event: error`, or a 503) and is settled exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.cluster import (
    ADMIN_TOKEN,
    SluiceServer,
    aquery,
    chat_body,
    log_when,
    serving,
    storage_for,
    two_speed_config,
)
from tests.harness import one_upstream
from tests.sim.openai_sim import Fault, ThreadedSim, fixture_payloads

pytestmark = pytest.mark.slow

HELD_TOKENS = json.loads(fixture_payloads("text")[-2])["usage"]["completion_tokens"]  # a `held` stream's


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with storage_for(request.param, tmp_path, "sluice_drain") as url:
        yield url


def _config(tmp_path: Path, storage_url: str, *, drain: float, grace: float, workers: int = 1,
            upstream: str | None = None) -> Path:
    """`upstream` (an OpenAI simulator) serves the models `held` and `late`, both its text fixture."""
    up = {} if upstream is None else one_upstream(upstream, {"held": "fx-text", "late": "fx-text"}, name="up",
                                                  pricing={"input": "1", "output": "10"})
    server = {"workers": workers, "drain_seconds": drain, "shutdown_grace_seconds": grace}
    return two_speed_config(tmp_path, storage_url, slow_tps=4, server=server, **up)


def _server(cfg: Path, tmp_path: Path, name: str) -> contextlib.AbstractAsyncContextManager[SluiceServer]:
    return serving(cfg, tmp_path, name, ready_timeout=60)


async def _key(session: aiohttp.ClientSession, base: str, name: str) -> dict[str, Any]:
    async with session.post(base + "/admin/keys", json={"name": name, "budget": "1"},
                            headers={"authorization": f"Bearer {ADMIN_TOKEN}"}) as r:
        doc: dict[str, Any] = await r.json()
        assert r.status == 201, doc
        return doc


async def _open_stream(session: aiohttp.ClientSession, base: str, secret: str,
                       model: str = "slow-sim") -> aiohttp.ClientResponse:
    """A chat stream, read until its first content event: admitted, reserved and under way."""
    r = await session.post(base + "/v1/chat/completions", json=chat_body(model, True),
                           headers={"authorization": f"Bearer {secret}"})
    assert r.status == 200, await r.read()
    while b'"content":"' not in (line := await r.content.readuntil(b"\n\n")) or b'"content":""' in line:
        pass
    return r


async def _probe(base: str, path: str) -> int | None:
    """The status of GET `path` on a fresh connection; None when the connection is refused, -1 when it
    was dropped or left unanswered."""
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True),
                                         timeout=aiohttp.ClientTimeout(total=5)) as fresh, \
                fresh.get(base + path) as r:
            await r.read()
            return r.status
    except aiohttp.ClientConnectorError:
        return None
    except (aiohttp.ClientConnectionError, TimeoutError):
        return -1


async def _poll(base: str, path: str, want: int | None, within: float) -> float:
    """Probe until the answer is `want`; returns when (monotonic). Fails after `within` seconds."""
    deadline = time.monotonic() + within
    seen: list[int | None] = []
    while time.monotonic() < deadline:
        got = await _probe(base, path)
        if got == want:
            return time.monotonic()
        seen.append(got)
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} never answered {want} in {within}s; saw {seen[-5:]}")


async def _read_to_end(r: aiohttp.ClientResponse) -> bytes:
    try:
        return await r.read()
    finally:
        r.release()


@contextlib.contextmanager
def _held(sim: ThreadedSim) -> Iterator[threading.Event]:
    """Every stream of `sim` stops after its first word until the event is set (at the latest on exit):
    the test, not a clock, decides when an open stream ends."""
    hold = threading.Event()
    sim.always(Fault(hold=hold, hold_after=2))
    try:
        yield hold
    finally:
        hold.set()


async def _wait_exit(server: SluiceServer, within: float) -> int:
    assert server.proc is not None
    code: int = await asyncio.to_thread(server.proc.wait, within)
    return code


async def test_sigterm_says_503_at_once_serves_through_the_drain_then_lets_streams_finish(
        tmp_path: Path, sim: ThreadedSim) -> None:
    storage = f"sqlite:///{tmp_path / 'sluice.db'}"
    cfg = _config(tmp_path, storage, drain=6, grace=60, upstream=sim.base_url)
    with _held(sim) as hold:
        async with _server(cfg, tmp_path, "drain") as server, aiohttp.ClientSession() as session:
            key = await _key(session, server.url, "drain")
            auth = {"authorization": f"Bearer {key['key']}"}
            r = await _open_stream(session, server.url, key["key"], "held")  # open until the test lets it go
            reading = asyncio.ensure_future(_read_to_end(r))
            server.signal(signal.SIGTERM)
            # at once: not ready, still alive, still serving (a balancer polling /ready takes it out now)
            await _poll(server.url, "/ready", 503, within=5)
            assert await _probe(server.url, "/health") == 200
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh, \
                    fresh.post(server.url + "/v1/chat/completions", json=chat_body("fast-sim", False),
                               headers=auth) as late:
                assert late.status == 200, await late.read()
                assert late.headers["connection"] == "close"  # a balancer's kept-alive connection closes after it
                late_rid = late.headers["x-request-id"]
            # after the drain delay: new connections refused, the open stream still going
            await _poll(server.url, "/ready", None, within=30)
            assert not reading.done()
            hold.set()
            rest = await reading
            assert rest.rstrip().endswith(b"data: [DONE]"), rest[-300:]
            assert b'"error"' not in rest
            assert await _wait_exit(server, 30) in (0, -signal.SIGTERM)
    rid = r.headers["x-request-id"]
    # the access lines, written in batches, are all out by the exit: the stream ended just before it
    log = server.log.read_text(errors="replace")
    assert f"request_id={rid} route=chat_completions" in log and f"request_id={late_rid} " in log, log[-2000:]
    rows = await aquery(storage, "SELECT completion_tokens, error_code FROM ledger WHERE request_id = ?", rid)
    assert rows == [(HELD_TOKENS, None)]
    assert await aquery(storage, "SELECT status FROM ledger WHERE request_id = ?", late_rid) == [(200,)]
    assert await aquery(storage, "SELECT count(*) FROM reservations") == [(0,)]


async def _read_events(r: aiohttp.ClientResponse) -> list[bytes]:
    body = await r.read()
    return [e for e in body.split(b"\n\n") if e.strip()]


async def test_requests_open_past_the_grace_end_with_server_shutdown_and_are_settled_once(
        storage_url: str, tmp_path: Path) -> None:
    with ThreadedSim() as upstream:
        upstream.always(Fault.slow_first_byte(120))  # answers far too late: a request waiting for its first byte
        cfg = _config(tmp_path, storage_url, drain=0, grace=1.5, upstream=upstream.base_url)
        async with _server(cfg, tmp_path, "cut") as server, aiohttp.ClientSession() as session:
            key = await _key(session, server.url, "cut")
            auth = {"authorization": f"Bearer {key['key']}"}
            chat = await _open_stream(session, server.url, key["key"])
            messages = await session.post(server.url + "/v1/messages", headers={"x-api-key": key["key"]}, json={
                "model": "slow-sim", "max_tokens": 200, "stream": True,
                "messages": [{"role": "user", "content": "Tell me something"}]})
            assert messages.status == 200
            while b"content_block_delta" not in await messages.content.readuntil(b"\n\n"):
                pass
            waiting = asyncio.ensure_future(session.post(server.url + "/v1/chat/completions",
                                                         json=chat_body("late", True), headers=auth))
            deadline = time.monotonic() + 20
            while not upstream.requests:
                assert time.monotonic() < deadline, "the late request never reached the upstream"
                await asyncio.sleep(0.05)

            t0 = time.monotonic()
            server.signal(signal.SIGTERM)
            chat_events = await _read_events(chat)
            message_events = await _read_events(messages)
            unanswered = await asyncio.wait_for(waiting, 30)
            unanswered_body = await unanswered.json()
            assert time.monotonic() - t0 < 20
            assert await _wait_exit(server, 30) in (0, -signal.SIGTERM)

    # the chat stream: content so far, then OpenAI's error envelope as the last event, and no [DONE]
    assert chat_events[-1].startswith(b"data: {"), chat_events[-3:]
    last = json.loads(chat_events[-1][len(b"data: "):])
    assert list(last) == ["error"] and last["error"]["message"], last
    assert {k: v for k, v in last["error"].items() if k != "message"} == {
        "type": "server_error", "param": None, "code": "server_shutdown"}
    assert not any(b"[DONE]" in e for e in chat_events)
    # the Anthropic stream: its own error event
    assert message_events[-1].startswith(b"event: error\ndata: "), message_events[-3:]
    assert json.loads(message_events[-1].split(b"data: ", 1)[1])["type"] == "error"
    assert not any(b"message_stop" in e for e in message_events)
    # the request still waiting for its upstream: a 503 that the SDKs retry
    assert unanswered.status == 503 and unanswered_body["error"]["code"] == "server_shutdown"

    rids = [chat.headers["x-request-id"], messages.headers["x-request-id"], unanswered.headers["x-request-id"]]
    for rid, status in zip(rids, (200, 200, 503), strict=True):
        rows = await aquery(storage_url, "SELECT status, error_code FROM ledger WHERE request_id = ?", rid)
        assert rows == [(status, "server_shutdown")], (rid, rows)
    assert await aquery(storage_url, "SELECT count(*) FROM reservations") == [(0,)]
    costs = await aquery(storage_url, "SELECT cost FROM ledger WHERE key_id = ?", key["id"])
    spent = await aquery(storage_url, "SELECT spent, reserved FROM keys WHERE id = ?", key["id"])
    assert spent == [(sum(c or 0 for (c,) in costs), 0)]
    assert Decimal(spent[0][0]) > 0   # the cut streams are charged for what they streamed


async def test_each_worker_drains_itself(tmp_path: Path, sim: ThreadedSim) -> None:
    storage = f"sqlite:///{tmp_path / 'sluice.db'}"
    cfg = _config(tmp_path, storage, drain=4, grace=60, workers=2, upstream=sim.base_url)
    log = tmp_path / "workers.log"
    with _held(sim) as hold:
        async with _server(cfg, tmp_path, "workers") as server, aiohttp.ClientSession() as session:
            # /ready answers as soon as one worker has started: wait for both
            await log_when(log, lambda text: text.count("on SIGTERM: /ready 503") >= 2, "both workers ready", 60)
            key = await _key(session, server.url, "workers")
            r = await _open_stream(session, server.url, key["key"], "held")
            reading = asyncio.ensure_future(_read_to_end(r))
            server.signal(signal.SIGTERM)   # to the supervisor, which passes SIGTERM to every worker
            await _poll(server.url, "/ready", 503, within=3.5)
            # after the drain delay, refused as with one process (the supervisor let go of the socket), not
            # left waiting in the backlog; the open stream goes on
            await _poll(server.url, "/ready", None, within=30)
            assert not reading.done()
            hold.set()
            rest = await reading
            assert rest.rstrip().endswith(b"data: [DONE]"), rest[-300:]
            assert await _wait_exit(server, 60) in (0, -signal.SIGTERM)
    rows = await aquery(storage, "SELECT completion_tokens, error_code FROM ledger WHERE request_id = ?",
                        r.headers["x-request-id"])
    assert rows == [(HELD_TOKENS, None)]
    text = log.read_text(errors="replace")
    assert text.count("draining: /ready now answers 503") == 2, text  # each worker drains itself, once
