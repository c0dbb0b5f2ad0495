"""The outermost error boundary: a store that raises inside authentication (`database is locked`) never
reaches the server's plain-text 500; every route answers with its front door's envelope and x-request-id."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiohttp
import pytest

from sluice.auth.keys import new_key
from sluice.config import load
from sluice.http.app import create_app
from sluice.storage.base import KeyRecord
from sluice.storage.sqlite import SQLiteStore
from tests.inproc import serving

KEY = new_key()[1]  # well formed, so authentication reaches the store


class LockedStore(SQLiteStore):
    """A real SQLite store whose key lookup fails as a locked database does."""

    async def get_key(self, key_id: str) -> KeyRecord | None:
        raise sqlite3.OperationalError("database is locked")


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/v1/chat/completions", {"model": "sluice-sim", "messages": [{"role": "user", "content": "hi"}]}),
    ("GET", "/v1/models", None),
    ("GET", "/v1/models/sluice-sim", None),
    ("GET", "/v1/dashboard/key", None),
    ("POST", "/v1/responses", {"model": "sluice-sim", "input": "hi"}),
    ("GET", "/v1/responses/resp_1", None),
    ("POST", "/v1/embeddings", {"model": "sluice-sim", "input": "hi"}),
    ("POST", "/v1/completions", {"model": "sluice-sim", "prompt": "hi"}),
])
async def test_store_failure_in_auth_gets_the_openai_envelope(tmp_path: Path, method: str, path: str,
                                                              body: object) -> None:
    settings = load(data_dir=str(tmp_path))
    app = create_app(settings, store=LockedStore(f"sqlite:///{tmp_path / 'locked.db'}"))
    async with serving(app) as base, aiohttp.ClientSession() as http:
        async with http.request(method, base + path, json=body, headers={"Authorization": f"Bearer {KEY}"}) as r:
            assert r.status == 500
            assert r.headers["x-request-id"].startswith("req_")
            assert r.content_type == "application/json"
            doc = await r.json()
    assert set(doc["error"]) == {"message", "type", "param", "code"}
    assert "locked" not in doc["error"]["message"]  # internals stay in the server log


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
async def test_store_failure_on_messages_gets_the_anthropic_envelope(tmp_path: Path, path: str) -> None:
    settings = load(data_dir=str(tmp_path))
    app = create_app(settings, store=LockedStore(f"sqlite:///{tmp_path / 'locked.db'}"))
    body = {"model": "sluice-sim", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
    async with serving(app) as base, aiohttp.ClientSession() as http:
        async with http.post(base + path, json=body, headers={"x-api-key": KEY}) as r:
            assert r.status == 500
            assert r.headers["x-request-id"].startswith("req_")
            doc = await r.json()
    assert doc["type"] == "error"
    assert set(doc["error"]) >= {"type", "message"}
