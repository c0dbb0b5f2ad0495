"""Real processes on loopback for the scale and crash tests: an OpenAI-compatible upstream simulator that
counts what reaches it, `sluice serve` processes, nginx from docs/nginx-sluice.conf, and a fresh
PostgreSQL database / a dedicated Redis DB. Nothing of Sluice's own code is faked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis
from aiohttp import web

from tests import harness
from tests.harness import free_port

ROOT = Path(__file__).resolve().parents[2]
NGINX_TEMPLATE = ROOT / "docs" / "nginx-sluice.conf"
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
# A Redis DB of its own, so that clearing Sluice's keys never touches what other tests keep in DB 0.
REDIS_URL = "redis://127.0.0.1:6379/7"
REDIS_PREFIX = "sluice:rl:"
ADMIN_TOKEN = "admin-" + uuid.uuid4().hex


def unavailable(reason: str) -> None:
    """Skip with the reason; under CI a missing service is a failure, not a skip."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def nginx_binary() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                           if os.access(p, os.X_OK)), None)
    if found is None:
        unavailable("nginx is not installed (apt-get install -y nginx)")
    assert found is not None
    return found


# --- PostgreSQL and Redis --------------------------------------------------------------------------


async def _pg(url: str, query: str, *args: Any) -> list[Any]:
    con = await asyncpg.connect(url, timeout=5)
    try:
        return list(await con.fetch(query, *args))
    finally:
        await con.close()


@contextlib.contextmanager
def pg_database(prefix: str) -> Iterator[str]:
    """A fresh database `<prefix>_<hex>` on the local server, dropped afterwards; yields its URL."""
    try:
        asyncio.run(_pg(PG_ADMIN_URL, "SELECT 1"))
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        unavailable(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc!r}")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg(PG_ADMIN_URL, f"CREATE DATABASE {name}"))
    try:
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        asyncio.run(_pg(PG_ADMIN_URL, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def clear_redis(url: str = REDIS_URL) -> None:
    """Delete only the keys Sluice's limiter writes, in the DB the tests use."""
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        for k in list(client.scan_iter(match=REDIS_PREFIX + "*", count=1000)):
            client.delete(k)
    finally:
        client.close()


@contextlib.contextmanager
def redis_db(url: str = REDIS_URL) -> Iterator[str]:
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        client.ping()
    except (OSError, redis.RedisError) as exc:
        unavailable(f"Redis is not reachable at {url}: {exc!r}")
    finally:
        client.close()
    clear_redis(url)
    try:
        yield url
    finally:
        clear_redis(url)


def query(storage_url: str, text: str, *args: Any) -> list[tuple[Any, ...]]:
    """Read Sluice's database directly (qmark placeholders), whichever backend it is."""
    if storage_url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(storage_url[len("sqlite:///"):], timeout=30)) as db:
            return list(db.execute(text, args).fetchall())
    n = 0
    out = []
    for ch in text:
        if ch == "?":
            n += 1
            out.append(f"${n}")
        else:
            out.append(ch)
    return [tuple(r) for r in asyncio.run(_pg(storage_url, "".join(out), *args))]


async def aquery(storage_url: str, text: str, *args: Any) -> list[tuple[Any, ...]]:
    """`query` from a test's event loop (on a thread: it opens a loop of its own for asyncpg)."""
    return await asyncio.to_thread(query, storage_url, text, *args)


# --- the upstream simulator ------------------------------------------------------------------------


class UpstreamSim:
    """An OpenAI-compatible `/v1/chat/completions` on its own thread and loop. It answers after `delay`
    seconds with `max_tokens` completion tokens (and `prompt_tokens` prompt tokens), so every request
    costs the same, and records the `user` field of every request it receives."""

    def __init__(self, *, delay: float = 0.0, prompt_tokens: int = 12, gap: float = 0.0) -> None:
        self.delay = delay
        self.gap = gap
        self.prompt_tokens = prompt_tokens
        self.received: list[str] = []
        self._lock = threading.Lock()
        # bound here and kept (port 0): no window for another process to take the port before we listen
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port = int(self._sock.getsockname()[1])
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="upstream-sim", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def reset(self) -> None:
        with self._lock:
            self.received.clear()

    def seen(self) -> list[str]:
        with self._lock:
            return list(self.received)

    def __enter__(self) -> UpstreamSim:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the upstream simulator did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            if self._runner is not None:
                await self._runner.cleanup()
        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.SockSite(self._runner, self._sock, backlog=1024).start())
        self._ready.set()
        self._loop.run_forever()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        with self._lock:
            self.received.append(str(body.get("user")))
        n = int(body.get("max_tokens") or 16)
        usage = {"prompt_tokens": self.prompt_tokens, "completion_tokens": n,
                 "total_tokens": self.prompt_tokens + n}
        head = {"id": "chatcmpl-sim", "created": int(time.time()), "model": body.get("model")}
        await asyncio.sleep(self.delay)
        if not body.get("stream"):
            doc = {**head, "object": "chat.completion", "usage": usage, "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "ok " * n}, "finish_reason": "length"}]}
            return web.json_response(doc)
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)

        async def event(doc: dict[str, Any]) -> None:
            await resp.write(b"data: " + json.dumps({**head, "object": "chat.completion.chunk", **doc}).encode()
                             + b"\n\n")
        await event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
        for _ in range(n):
            if self.gap:
                await asyncio.sleep(self.gap)
            await event({"choices": [{"index": 0, "delta": {"content": "ok "}, "finish_reason": None}]})
        await event({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            await event({"choices": [], "usage": usage})
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


# --- sluice serve ----------------------------------------------------------------------------------


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as e:
        with e:
            return int(e.code), e.read()


class SluiceServer:
    """One `python -m sluice serve --config F --port P` process; its output goes to a log file."""

    def __init__(self, config: Path, port: int, log: Path, *, env: dict[str, str] | None = None) -> None:
        self.config, self.port, self.log = config, port, log
        self.env = {**os.environ, "SLUICE_ADMIN_TOKEN": ADMIN_TOKEN, "PYTHONPATH": str(ROOT), **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> SluiceServer:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sluice", "serve", "--config", str(self.config), "--port", str(self.port)],
                stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=self.config.parent)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Its port is fixed (the balancer's config names it, restarts reuse it), so no retry on a clash:
        instances start in parallel and wait here (tests/harness.py polls)."""
        assert self.proc is not None
        try:
            harness.wait_ready(self.url, self.proc, path="/ready", timeout=timeout)
        except RuntimeError as exc:
            raise AssertionError(f"sluice on :{self.port}: {exc}:\n{self.tail()}") from None

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when a machine or the OOM killer takes the process."""
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None


# --- nginx -----------------------------------------------------------------------------------------


def render_nginx_site(listen: str, instances: list[str]) -> str:
    """docs/nginx-sluice.conf with its placeholders filled: the config the deployment guide shows."""
    text = NGINX_TEMPLATE.read_text()
    text = text.replace("{{LISTEN}}", listen)
    for i, addr in enumerate(instances, start=1):
        text = text.replace(f"{{{{SLUICE_{i}}}}}", addr)
    assert "{{" not in text, f"unfilled placeholder in the nginx config:\n{text}"
    return text


class Nginx:
    """nginx in the foreground (`daemon off;`) with everything it writes under `prefix`."""

    def __init__(self, prefix: Path, port: int, instances: list[str]) -> None:
        self.prefix, self.port = prefix, port
        prefix.mkdir(parents=True, exist_ok=True)
        site = prefix / "sluice.conf"
        site.write_text(render_nginx_site(f"127.0.0.1:{port}", instances))
        temp = {name: prefix / name for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
        for p in temp.values():
            p.mkdir(exist_ok=True)
        user = "user root root;\n" if os.geteuid() == 0 else ""  # workers must reach the tmp dirs
        self.conf = prefix / "nginx.conf"
        self.conf.write_text(f"""{user}daemon off;
worker_processes 2;
pid {prefix / 'nginx.pid'};
error_log {prefix / 'error.log'} warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {temp['client_body']};
    proxy_temp_path {temp['proxy']};
    fastcgi_temp_path {temp['fastcgi']};
    uwsgi_temp_path {temp['uwsgi']};
    scgi_temp_path {temp['scgi']};
    include {site};
}}
""")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> Nginx:
        binary = nginx_binary()
        self.proc = subprocess.Popen([binary, "-e", str(self.prefix / "error.log"), "-p", str(self.prefix),
                                      "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"nginx exited ({self.proc.returncode}):\n{self.errors()}")
            with contextlib.suppress(OSError):
                if http_get(self.url + "/health")[0] == 200:
                    return self
            time.sleep(0.1)
        raise AssertionError(f"nginx not answering after {timeout}s:\n{self.errors()}")

    def errors(self) -> str:
        try:
            return (self.prefix / "error.log").read_text(errors="replace")[-4000:]
        except OSError:
            return "(no error log)"

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: finish open requests
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# --- one instance on the simulated provider: a fast model and a slow one (crash and drain tests) ----


@contextlib.contextmanager
def storage_for(kind: str, tmp_path: Path, prefix: str) -> Iterator[str]:
    """A fresh store URL: a SQLite file under `tmp_path`, or a throwaway PostgreSQL database."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'sluice.db'}"
        return
    with pg_database(prefix) as url:
        yield url


def two_speed_config(tmp_path: Path, storage_url: str, *, slow_tps: float, server: str = "",
                     sections: str = "", extra: str = "") -> Path:
    """A config with models `fast-sim` and `slow-sim` (`slow_tps` tokens per second), both priced.
    `server` goes into [server]; `sections` after [storage]; `extra` (more providers/models) at the end."""
    cfg = tmp_path / "sluice.toml"
    cfg.write_text(f"""
[server]
{server}

[storage]
url = "{storage_url}"
{sections}
[[providers]]
name = "fast"
kind = "simulated"

[[providers]]
name = "slow"
kind = "simulated"
tokens_per_second = {slow_tps}

[[models]]
name = "fast-sim"
pricing = {{ input = "1", output = "10" }}
targets = [{{ provider = "fast", model = "fast-sim" }}]

[[models]]
name = "slow-sim"
pricing = {{ input = "1", output = "10" }}
targets = [{{ provider = "slow", model = "slow-sim" }}]
{extra}""")
    return cfg


@contextlib.asynccontextmanager
async def serving(cfg: Path, tmp_path: Path, name: str, ready_timeout: float = 30.0) -> AsyncIterator[SluiceServer]:
    """A started `sluice serve` on a free port, ready; stopped on exit."""
    s = SluiceServer(cfg, free_port(), tmp_path / f"{name}.log").start()
    try:
        await asyncio.to_thread(s.wait_ready, ready_timeout)
        yield s
    finally:
        await asyncio.to_thread(s.stop)


def chat_body(model: str, stream: bool) -> dict[str, Any]:
    return {"model": model, "stream": stream, "messages": [{"role": "user", "content": "Tell me something"}]}


async def log_when(log: Path, cond: Callable[[str], bool], what: str, within: float = 15.0) -> str:
    """A server's log once `cond(log text)` holds: lines go out through a log thread, so a line the server
    has decided to write may not be in the file yet when the reply has arrived."""
    deadline = time.monotonic() + within
    while not cond(text := await asyncio.to_thread(log.read_text, errors="replace")):
        assert time.monotonic() < deadline, f"{what}:\n{text[-3000:]}"
        await asyncio.sleep(0.05)
    return text
