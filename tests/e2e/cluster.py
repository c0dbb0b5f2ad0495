"""Real processes on loopback for the scale and crash tests: `sluice serve` processes on fixed ports, nginx
from docs/nginx-sluice.conf, and a fresh PostgreSQL database / a dedicated Redis DB (the upstream is the one
OpenAI simulator, tests/sim/openai_sim.py). Nothing of Sluice's own code is faked.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis

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


def two_speed_config(tmp_path: Path, storage_url: str, *, slow_tps: float, server: Mapping[str, Any] | None = None,
                     tables: Mapping[str, Any] | None = None, providers: Sequence[Mapping[str, Any]] = (),
                     models: Sequence[Mapping[str, Any]] = ()) -> Path:
    """A config with models `fast-sim` and `slow-sim` (`slow_tps` tokens per second), both priced. `server`
    fills [server], `tables` add sections ([redis], [channels] ...), `providers` and `models` add entries."""
    price = {"input": "1", "output": "10"}
    return harness.write_toml(tmp_path / "sluice.toml", {
        "server": dict(server or {}), "storage": {"url": storage_url}, **(tables or {}),
        "providers": [harness.provider("fast", "simulated"),
                      harness.provider("slow", "simulated", tokens_per_second=slow_tps), *providers],
        "models": [harness.model("fast-sim", ("fast", "fast-sim"), pricing=price),
                   harness.model("slow-sim", ("slow", "slow-sim"), pricing=price), *models]})


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
