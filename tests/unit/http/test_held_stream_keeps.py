"""A held stream keeps none of its request body alive: once the upstream has the request, neither the raw
bytes, nor the parsed JSON, nor the canonical request outlive the stream's set-up, at every streaming front
door (a coding agent sends 50-500 KB a turn; docs/decisions.md, "What a held stream keeps"). The app is
driven in process and the stream held in its first body `send`, as a slow client holds it."""

from __future__ import annotations

import asyncio
import gc
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from sluice.auth.keys import hash_key, new_key
from sluice.http.app import create_app
from sluice.storage.base import KeyRecord
from sluice.storage.sqlite import SQLiteStore
from sluice.upstream.mock import MockReply, MockTransport
from tests.harness import settings
from tests.unit.http.test_stream_writes import ANTHROPIC, CHAT_READS, CLAUDE_READS, OPENAI, RESPONSES_READS

RESPONSES_UP = {**OPENAI, "apis": ["chat", "responses"]}


def _mark(token: int) -> str:
    """The text the request carries, made where it is needed: no object of the test holds it."""
    return f"held-stream-{token:x}"


def _body(token: int, door: str) -> bytes:
    if door == "/v1/responses":
        return orjson.dumps({"model": "m", "stream": True, "input": _mark(token)})
    return orjson.dumps({"model": "m", "stream": True, "max_tokens": 50,
                         "messages": [{"role": "user", "content": _mark(token)}]})


def _holding(token: int) -> list[object]:
    """The live objects that refer to a str or bytes carrying the request's text (suspended coroutines'
    frames, the request scope, dicts, lists, dataclasses ...)."""
    marker = _mark(token)
    raw = marker.encode()
    found = []
    for obj in gc.get_objects():
        for ref in gc.get_referents(obj):
            if (isinstance(ref, str) and marker in ref) or (isinstance(ref, bytes) and raw in ref):
                found.append(obj)
                break
    return found


@pytest.mark.parametrize(("provider", "reads", "path"), [
    (OPENAI, CHAT_READS, "/v1/chat/completions"),
    (ANTHROPIC, CLAUDE_READS, "/v1/messages"),
    (OPENAI, CHAT_READS, "/v1/messages"),
    (RESPONSES_UP, RESPONSES_READS, "/v1/responses"),
    (OPENAI, CHAT_READS, "/v1/responses"),
], ids=["chat", "messages-pass", "messages-translated", "responses-pass", "responses-translated"])
async def test_a_held_stream_keeps_none_of_its_request_body(tmp_path: Path, provider: Mapping[str, Any],
                                                           reads: list[bytes], path: str) -> None:
    token = secrets.randbits(64)
    mock = MockTransport(lambda req: MockReply(200, {"content-type": "text/event-stream"}, list(reads)))
    store = SQLiteStore(f"sqlite:///{tmp_path / 'sluice.db'}")
    app = create_app(settings(tmp_path, {
        "providers": [{"name": "a", "api_key": "k", **provider}],
        "models": [{"name": "m", "free": True, "targets": [{"provider": "a", "model": "up"}]}]}),
        store=store, transport=mock)
    await app.startup()
    kid, secret = new_key()
    await store.create_key(KeyRecord(kid, "t", hash_key(secret)))
    loop = asyncio.get_running_loop()
    held, release = asyncio.Event(), loop.create_future()
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()  # the body, then nothing: the client stays
    inbox.put_nowait({"type": "http.request", "body": _body(token, path), "more_body": False})
    sent: list[dict[str, Any]] = []

    async def send(msg: dict[str, Any]) -> None:
        sent.append(msg)
        if msg["type"] == "http.response.body" and not held.is_set():
            held.set()
            await asyncio.shield(release)  # the client reads slowly: the stream is held here

    headers = [(b"authorization", f"Bearer {secret}".encode()), (b"anthropic-version", b"2023-06-01")]
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers, "query_string": b"",
             "scheme": "http", "http_version": "1.1", "server": ("t", 1), "client": ("c", 2)}
    task = asyncio.create_task(app(scope, inbox.get, send))
    await held.wait()
    mock.requests.clear()  # the mock's record of the upstream request: the real client keeps none
    try:
        assert sent[0]["status"] == 200
        assert _holding(token) == []
    finally:
        release.set_result(None)
        await task
        await app.shutdown()
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
