"""Run a real `sluice serve` process on a free loopback port for end-to-end tests."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp

from tests.harness import ROOT, free_port, start_sluice, write_toml

__all__ = ["ROOT", "SluiceProcess", "free_port"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


class SluiceProcess:
    """`async with SluiceProcess(tmp_path, doc) as s:` -> s.base_url ('.../v1'), s.create_key(). `doc` is the
    config (tests/harness.py writes it as TOML) without [server] and [storage]: `server` adds to the first,
    `storage_url` replaces the SQLite file of the second."""

    def __init__(self, tmp: Path, doc: Mapping[str, Any], *, extra_env: dict[str, str] | None = None,
                 server: Mapping[str, Any] | None = None, storage_url: str | None = None) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.db = tmp / "sluice.db"
        self.config = tmp / "sluice.toml"
        self.log = tmp / "sluice.log"
        write_toml(self.config, {"server": {"host": "127.0.0.1", "port": self.port, **(server or {})},
                                 "storage": {"url": storage_url or f"sqlite:///{self.db}"}, **doc})
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.env = {**_env(), **(extra_env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.closers: list[Callable[[], Awaitable[None]]] = []  # clients to close before the server stops

    def cli(self, *args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "sluice", *args, "--config", str(self.config)],
                             env=self.env, capture_output=True, check=True, timeout=60)
        return out.stdout.decode()

    def create_key(self, name: str = "test", models: str | None = None) -> str:
        args = ["keys", "create", "--name", name, "--json"] + (["--models", models] if models else [])
        return str(json.loads(self.cli(*args))["key"])

    async def admin_key(self, name: str) -> tuple[str, str]:
        """(id, secret) of a new key made through the admin API, as fast as a request: a key per test on a
        shared server. Needs `SLUICE_ADMIN_TOKEN` in `extra_env`."""
        token = self.env["SLUICE_ADMIN_TOKEN"]
        async with aiohttp.ClientSession() as http, http.post(
                self.base_url.removesuffix("/v1") + "/admin/keys", json={"name": name},
                headers={"authorization": f"Bearer {token}"}) as r:
            doc = await r.json()
            assert r.status == 201, doc
            return str(doc["id"]), str(doc["key"])

    async def __aenter__(self) -> SluiceProcess:
        """Started by the one launcher (tests/harness.py): the port is retried on a clash."""
        self.proc, self.port = await asyncio.to_thread(start_sluice, self.config, self.log, env=self.env)
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        for close in self.closers:
            await close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, 15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
