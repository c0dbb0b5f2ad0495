"""Operating a real `sluice serve`: `/ready` follows a Redis that is stopped and started again, the first
start of the embedded default prints an admin token that opens the admin API, and the access log has
every field while no log line of the run carries a secret it used."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from tests.e2e.cluster import ADMIN_TOKEN, ROOT, SluiceServer, free_port, http_get
from tests.harness import model, provider, write_toml
from tests.sim.openai_sim import Fault, ThreadedSim

pytestmark = pytest.mark.slow

UPSTREAM_KEY = "sk-upstream-" + "s" * 30
MSG = [{"role": "user", "content": "hi"}]


def until(cond: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


class RedisServer:
    """Its own `redis-server` on a free port, stopped and started by the test."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.proc = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                                      "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        until(self._answers, "redis-server did not start")

    def _answers(self) -> bool:
        import socket
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
        return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def _ready(url: str) -> tuple[int, dict[str, object]]:
    status, body = http_get(url + "/ready")
    return status, json.loads(body)


@pytest.fixture
def upstream() -> Iterator[ThreadedSim]:
    with ThreadedSim() as sim:
        yield sim


def _config(tmp: Path, tables: dict[str, Any] | None = None, sim_url: str | None = None) -> Path:
    """Model `m` priced, on the simulator at `sim_url` (else the simulated provider); `tables` add sections."""
    up = provider("up", "openai", sim_url, api_key=UPSTREAM_KEY) if sim_url else provider("up", "simulated")
    cfg = tmp / "sluice.toml"
    write_toml(cfg, {"server": {"ready_cache_seconds": 0.1}, "storage": {"url": f"sqlite:///{tmp / 'sluice.db'}"},
                     **(tables or {}), "providers": [up],
                     "models": [model("m", ("up", "fx-reasoning"), pricing={"input": "1.00", "output": "2.00"})]})
    return cfg


def test_ready_is_503_naming_redis_while_it_is_down(tmp_path: Path) -> None:
    redis = RedisServer(free_port())
    redis.start()
    server = SluiceServer(_config(tmp_path, {"redis": {"url": f"redis://127.0.0.1:{redis.port}/0"}}), free_port(),
                          tmp_path / "sluice.log").start()
    try:
        server.wait_ready(60)
        assert _ready(server.url) == (200, {"status": "ready"})
        redis.stop()
        until(lambda: _ready(server.url)[0] == 503, "/ready stayed 200 with redis stopped")
        assert _ready(server.url) == (503, {"status": "unavailable", "down": ["redis"]})
        assert http_get(server.url + "/health")[0] == 200  # liveness is not readiness
        redis.start()
        until(lambda: _ready(server.url)[0] == 200, "/ready stayed 503 with redis back")
        assert _ready(server.url) == (200, {"status": "ready"})
    finally:
        server.stop()
        redis.stop()
    assert "readiness: down: redis" in server.log.read_text()


def _serve_default(data: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env["PYTHONPATH"] = str(ROOT)
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "sluice", "serve", "--data-dir", str(data), "--port",
                                 str(port)], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=data.parent)


def test_first_start_prints_an_admin_token_that_opens_the_admin_api(tmp_path: Path) -> None:
    data, port, log = tmp_path / "data", free_port(), tmp_path / "sluice.log"
    url = f"http://127.0.0.1:{port}"
    for start in (1, 2):  # the second start finds the token made by the first and prints none
        proc = _serve_default(data, port, log)
        try:
            _wait_started(proc, url, log)
            tokens = re.findall(r"sadm-[A-Za-z0-9_-]{43}", log.read_text())
            assert len(tokens) == 1, log.read_text()
            token = tokens[0]
            assert f"{url}/console" in log.read_text()
            stored = (data / "admin-token.sha256").read_text()
            assert stored.strip() == hashlib.sha256(token.encode()).hexdigest()  # only the hash is stored
            assert (data / "admin-token.sha256").stat().st_mode & 0o077 == 0
            assert _get(url + "/admin/keys", token)[0] == 200, start
            assert _get(url + "/admin/keys", token[:-1] + "x")[0] == 401
            status, body = _get(url + "/metrics", token)
            assert status == 200 and b"sluice_requests_in_flight" in body
            assert _get(url + "/metrics", None)[0] == 401
        finally:
            proc.terminate()
            proc.wait(30)


def _wait_started(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    def up() -> bool:
        assert proc.poll() is None, log.read_text()
        with contextlib.suppress(OSError):
            return http_get(url + "/health")[0] == 200
        return False
    until(up, "sluice did not start", 60)


def _get(url: str, token: str | None) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as e:
        with e:
            return int(e.code), e.read()


async def test_access_log_fields_and_no_secret_in_any_log_line(tmp_path: Path, upstream: ThreadedSim) -> None:
    cfg = _config(tmp_path, sim_url=upstream.base_url)
    server = SluiceServer(cfg, free_port(), tmp_path / "sluice.log",
                          env={"SLUICE_LOG_FORMAT": "json", "SLUICE_LOG_LEVEL": "debug"}).start()
    try:
        await asyncio.to_thread(server.wait_ready, 60)
        key = await asyncio.to_thread(_create_key, cfg, server.env)
        bogus = key[:15] + "x" * 40  # well formed, right id, wrong secret
        client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
        ok = await client.chat.completions.with_raw_response.create(model="m", messages=MSG)  # type: ignore[arg-type]
        stream = await client.chat.completions.create(model="m", messages=MSG, stream=True)  # type: ignore[arg-type]
        async for _ in stream:
            pass
        upstream.always(Fault.http_error(500))
        with pytest.raises(openai.APIStatusError) as failed:
            await client.chat.completions.create(model="m", messages=MSG)  # type: ignore[arg-type]
        upstream.reset()
        async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=bogus, max_retries=0) as bad:
            with pytest.raises(openai.AuthenticationError):
                await bad.chat.completions.create(model="m", messages=MSG)  # type: ignore[arg-type]
        upstream.push(Fault(pause_after={2: 60}))
        async with aiohttp.ClientSession() as http:
            async with http.post(server.url + "/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                                 json={"model": "m", "messages": MSG, "stream": True}) as r:
                gone = r.headers["x-request-id"]
                await r.content.readuntil(b"\n\n")
            for path in ("/admin/keys", "/metrics"):
                async with http.get(server.url + path, headers={"authorization": f"Bearer {ADMIN_TOKEN}"}) as r:
                    assert r.status == 200
        await client.close()
        await asyncio.to_thread(until, lambda: gone in server.log.read_text(), "no access line for the disconnect")
    finally:
        await asyncio.to_thread(server.stop)
    text = server.log.read_text()
    for secret in (key, bogus, key[15:], UPSTREAM_KEY, ADMIN_TOKEN):
        assert secret not in text
    access = {d["request_id"]: d for d in (json.loads(line) for line in text.splitlines() if line.startswith("{"))
              if d["logger"] == "sluice.access"}
    line = access[ok.headers["x-request-id"]]
    assert line["key_id"] == key[3:15] and line["key_name"] == "logs" and line["account"] is None
    assert (line["model"], line["provider"], line["upstream_model"], line["route"]) == (
        "m", "up", "fx-reasoning", "chat_completions")
    assert (line["status"], line["error_code"], line["disconnected"]) == (200, None, False)
    # 14 x 1.00 + 6 x 2.00 per million tokens
    assert line["input_tokens"] == 14 and line["output_tokens"] == 6 and line["cost"] == 2.6e-05
    assert line["ttft_ms"] > 0 and line["duration_ms"] >= line["ttft_ms"]
    streamed = [d for d in access.values() if d["stream"] and not d["disconnected"]]
    assert [(d["input_tokens"], d["cached_tokens"], d["reasoning_tokens"]) for d in streamed] == [(40, 32, 16)]
    err = access[failed.value.response.headers["x-request-id"]]
    assert err["status"] >= 500 and err["error_code"] and err["attempts"] == 2
    assert access[gone]["disconnected"] is True
    assert len(access) == 4  # the bogus key's request is not an authenticated one: no record, no access line


def _create_key(cfg: Path, env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, "-m", "sluice", "keys", "create", "--name", "logs", "--json", "--config",
                          str(cfg)], capture_output=True, check=True, env=env, timeout=60).stdout
    return str(json.loads(out)["key"])
