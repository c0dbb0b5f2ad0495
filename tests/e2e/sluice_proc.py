"""Run a real `sluice serve` process on a free loopback port for end-to-end tests."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from tests.harness import ROOT, free_port, start_sluice

__all__ = ["ROOT", "SluiceProcess", "free_port"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


class SluiceProcess:
    """`async with SluiceProcess(tmp_path, toml_body) as s:` -> s.base_url ('.../v1'), s.create_key()."""

    def __init__(self, tmp: Path, body: str, *, extra_env: dict[str, str] | None = None, server: str = "",
                 storage_url: str | None = None) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.db = tmp / "sluice.db"
        self.config = tmp / "sluice.toml"
        self.log = tmp / "sluice.log"
        self.config.write_text(f'[server]\nhost = "127.0.0.1"\nport = {self.port}\n{server}\n'
                               f'[storage]\nurl = "{storage_url or "sqlite:///" + str(self.db)}"\n' + body)
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
