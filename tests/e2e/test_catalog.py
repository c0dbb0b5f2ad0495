"""Providers and models added through the admin API at runtime: two instances share PostgreSQL; what one
instance is told, the other serves within `channels.poll_seconds`, with no restart; keys stay encrypted."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from tests.e2e.cluster import ADMIN_TOKEN, aquery, pg_database, serving, two_speed_config
from tests.e2e.conftest import PY, run_cli, sluice_env
from tests.harness import model, provider, write_toml
from tests.sim.openai_sim import OpenAISim

UPSTREAM_KEY = "sk-live-added-upstream-key-0042"
POLL = 0.5  # channels.poll_seconds below: the delay the docs state for another instance to follow


async def _admin(base: str, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.request(
            method, f"{base}/admin/{path}", json=body, headers={"authorization": f"Bearer {ADMIN_TOKEN}"}) as r:
        return r.status, await r.json()


async def _served(client: openai.AsyncOpenAI, model: str, want: bool) -> bool:
    """Ask until the model is served (want) or gone (not want); 20 s at most (a loaded machine)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(20):
            while True:
                try:
                    await client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
                    if want:
                        return True
                except openai.NotFoundError:
                    if not want:
                        return True
                await asyncio.sleep(0.1)
    return False


@pytest.fixture
def pg_url() -> Iterator[str]:
    with pg_database("sluice_catalog") as url:
        yield url


@pytest.mark.postgres
@pytest.mark.parametrize("poll", [POLL, 3600.0], ids=["polling", "notify"])
async def test_a_provider_added_on_one_instance_serves_on_the_other(tmp_path: Path, pg_url: str,
                                                                    poll: float) -> None:
    """With an hour between polls, only PostgreSQL's NOTIFY can tell the other instance in time."""
    url = pg_url
    cfg = two_speed_config(tmp_path, url, slow_tps=100,
                           tables={"channels": {"poll_seconds": poll, "secret": "test-catalog-secret-1"}})
    async with OpenAISim() as sim, serving(cfg, tmp_path, "a") as a, serving(cfg, tmp_path, "b") as b:
        status, key = await _admin(a.url, "POST", "keys", {"name": "catalog-test"})
        assert status == 201
        client = openai.AsyncOpenAI(base_url=b.url + "/v1", api_key=key["key"], max_retries=0)
        try:
            assert await _served(client, "live-model", want=False)  # not there yet
            status, doc = await _admin(a.url, "PUT", "catalog/providers/live-up", {
                "kind": "openai", "base_url": sim.base_url, "api_keys": [UPSTREAM_KEY]})
            assert status == 200, doc
            status, doc = await _admin(a.url, "PUT", "catalog/models/live-model", {
                "targets": [{"provider": "live-up", "model": "gpt-4o"}], "free": True})
            assert status == 200 and doc["serving"], doc

            assert await _served(client, "live-model", want=True)  # on the other instance
            assert sim.requests[-1].headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
            rows = await aquery(url, "SELECT doc FROM catalog WHERE name = ?", "live-up")
            assert rows and UPSTREAM_KEY not in rows[0][0]  # encrypted at rest
            status, listing = await _admin(b.url, "GET", "catalog")
            assert status == 200 and UPSTREAM_KEY not in str(listing)
            assert [p["source"] for p in listing["providers"] if p["name"] == "live-up"] == ["database"]

            status, doc = await _admin(b.url, "PUT", "catalog/providers/live-up", {
                "kind": "openai", "base_url": sim.base_url, "enabled": False})
            assert status == 200 and not doc["serving"]
            client_a = openai.AsyncOpenAI(base_url=a.url + "/v1", api_key=key["key"], max_retries=0)
            try:
                assert await _served(client_a, "live-model", want=False)  # disabled everywhere
                # an edit that sends no keys keeps the sealed ones
                status, doc = await _admin(b.url, "PUT", "catalog/providers/live-up", {
                    "kind": "openai", "base_url": sim.base_url})
                assert status == 200 and doc["serving"]
                assert await _served(client_a, "live-model", want=True)
                assert sim.requests[-1].headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
            finally:
                await client_a.close()
        finally:
            await client.close()


@pytest.mark.postgres
async def test_catalog_rejects_what_would_break_the_configuration(tmp_path: Path, pg_url: str) -> None:
    url = pg_url
    cfg = two_speed_config(tmp_path, url, slow_tps=100, tables={"channels": {"poll_seconds": POLL}})
    async with serving(cfg, tmp_path, "a") as a:
        status, doc = await _admin(a.url, "PUT", "catalog/models/m", {"targets": [{"provider": "nope",
                                                                                   "model": "x"}]})
        assert status == 409 and "unknown provider" in doc["error"]["message"]  # well-formed, refused as things are
        status, doc = await _admin(a.url, "PUT", "catalog/providers/p", {"kind": "openai",
                                                                         "base_url": "http://127.0.0.1:9/v1",
                                                                         "api_keys": ["sk-x-0123456789abc"]})
        assert status == 409 and doc["error"]["code"] == "channels_secret_missing"
        status, doc = await _admin(a.url, "PUT", "catalog/providers/p", {"kind": "openai", "bogus": 1})
        assert status == 400 and "bogus" in doc["error"]["message"]
        status, doc = await _admin(a.url, "DELETE", "catalog/models/fast-sim")
        assert status == 404


def test_cli_puts_lists_and_deletes_with_keys_masked(tmp_path: Path) -> None:
    cfg = tmp_path / "sluice.toml"
    write_toml(cfg, {"storage": {"url": f"sqlite:///{tmp_path / 's.db'}"}, "channels": {"secret": "cli-test-secret"},
                     "providers": [provider("sim", "simulated")], "models": [model("m", ("sim", "m"))]})
    body = json.dumps({"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_keys": [UPSTREAM_KEY]})
    put = subprocess.run([PY, "-m", "sluice", "catalog", "put", "provider", "up", "-", "--config", str(cfg)],
                         input=body, env=sluice_env(), capture_output=True, text=True, timeout=30)
    assert put.returncode == 0, put.stderr
    listed = run_cli("catalog", "list", "--config", str(cfg))
    assert listed.returncode == 0 and UPSTREAM_KEY not in listed.stdout + put.stdout
    doc = json.loads(listed.stdout)
    assert [(p["name"], p["source"]) for p in doc["providers"]] == [("sim", "file"), ("up", "database")]
    assert run_cli("catalog", "delete", "provider", "up", "--config", str(cfg)).returncode == 0
    bad = run_cli("catalog", "delete", "provider", "up", "--config", str(cfg))
    assert bad.returncode == 1 and "No provider" in bad.stderr
