"""Serve a Sluice `App` in the test's own event loop on a real loopback socket (port 0, no bind-close race).

For middle-layer tests that inject the seams (store, transport, clock) and still talk HTTP to a real
server; `gateway()` is such an app behind a MockTransport, with a key and the official `openai` client."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import uvicorn

from sluice.auth.keys import hash_key, new_key
from sluice.clock import SYSTEM_CLOCK, Clock
from sluice.http.app import App, create_app
from sluice.storage.base import KeyRecord, LedgerQuery, LedgerRecord
from sluice.storage.sqlite import SQLiteStore
from sluice.upstream.mock import Handler, MockReply, MockRequest, MockTransport
from tests.harness import settings


@asynccontextmanager
async def serving(app: App) -> AsyncIterator[str]:
    """Yield the base URL (`http://127.0.0.1:PORT`) while uvicorn serves `app`; shut it down after."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="on", log_level="warning", http="httptools", loop="none")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the server stopped before it started")
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


UPSTREAM_KEY = "sk-upstream-SECRET-abcdefghij0123"  # the providers' key: no client may ever see it


@dataclass
class Gateway:
    client: openai.AsyncOpenAI
    transport: MockTransport
    db: Path
    key: KeyRecord
    app: App

    async def ledger(self) -> list[LedgerRecord]:
        """What was settled (read after the app stopped, which flushes the ledger writer)."""
        store = SQLiteStore(f"sqlite:///{self.db}")
        await store.open()
        try:
            return await store.list_ledger(LedgerQuery())
        finally:
            await store.close()


@asynccontextmanager
async def gateway(tmp_path: Path, replies: dict[str, list[MockReply]], *, clock: Clock = SYSTEM_CLOCK,
                  doc: dict[str, Any] | None = None, handler: Handler | None = None,
                  **key: Any) -> AsyncIterator[Gateway]:
    """Sluice in process with two OpenAI-compatible providers (hosts a.test, b.test) behind a MockTransport
    that answers each host with its `replies` in order (the last repeats), or as `handler` says; model `m`
    tries a then b, `solo` only a. `doc` adds config tables, `key` sets fields of the client's key. The app
    stops (ledger flushed) when the block ends."""
    def handle(req: MockRequest) -> MockReply:
        script = replies[req.url.split("/")[2]]
        return script.pop(0) if len(script) > 1 else script[0]

    config: dict[str, Any] = {
        "providers": [{"name": n, "kind": "openai", "base_url": f"http://{n}.test/v1", "api_key": UPSTREAM_KEY}
                      for n in ("a", "b")],
        "models": [{"name": "m", "free": True, "targets": [{"provider": "a", "model": "up-a"},
                                                         {"provider": "b", "model": "up-b", "priority": 1}]},
                   {"name": "solo", "free": True, "targets": [{"provider": "a", "model": "up-a"}]}],
        **(doc or {}),
    }
    db = tmp_path / "sluice.db"
    store = SQLiteStore(f"sqlite:///{db}")
    transport = MockTransport(handler or handle)
    kid, secret = new_key()
    rec = KeyRecord(kid, "t", hash_key(secret), **key)
    app = create_app(settings(tmp_path, config), store=store, transport=transport, clock=clock)
    async with serving(app) as base:
        await store.create_key(rec)
        client = openai.AsyncOpenAI(base_url=base + "/v1", api_key=secret, max_retries=0)
        try:
            yield Gateway(client, transport, db, rec, app)
        finally:
            await client.close()
