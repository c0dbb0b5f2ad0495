"""A real `python -m sluice serve` on loopback (one per module), its config, keys made with the CLI."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import PY, ROOT, free_port, ledger_rows, sluice_env, start_sluice, stop, wait_ready, write_toml
from tests.sim.openai_sim import ThreadedSim, closed_port

__all__ = ["PY", "ROOT", "SluiceServer", "free_port", "run_cli", "sluice_env", "stop_process", "wait_health"]


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "sluice", *args], cwd=ROOT, env=env or sluice_env(), capture_output=True,
                          text=True, timeout=timeout)


# public name -> (provider, upstream model). `fx-<name>` makes the simulator replay <name>.sse.
MODELS: dict[str, tuple[str, str]] = {
    "gpt-4o": ("sim", "fx-text"),
    "gpt-4o-mini": ("sim", "fx-no_usage"),
    "tools": ("sim", "fx-tool_calls"),
    "usage-on-finish": ("sim", "fx-usage_on_finish"),
    "crlf": ("sim", "fx-crlf"),
    "vendor/llama-3.1:70b": ("sim", "fx-text"),
    "ft:gpt-4o-2024-08-06:acme::abc123": ("sim", "fx-text"),
    "short-timeout": ("sim-short", "fx-text"),
    "tight": ("sim-tight", "fx-text"),
    "unreachable": ("dead", "fx-text"),
    "sim-local": ("local", "sluice-sim"),
    "sim-local-slow": ("local-slow", "sluice-sim"),
}


def write_config(path: Path, *, sim_url: str, port: int, db: Path, server: dict[str, Any] | None = None,
                 pricing: dict[str, str] | None = None) -> Path:
    """Every model gets `pricing` (per million tokens), or is marked free when there is none."""
    srv = {"host": "127.0.0.1", "port": port, "heartbeat_seconds": 0.3, "key_cache_seconds": 0.1,
           "max_body_bytes": 65536, "shutdown_grace_seconds": 1, **(server or {})}
    providers = [
        {"name": "sim", "kind": "openai", "base_url": sim_url, "api_key": "sk-upstream-secret"},
        {"name": "sim-short", "kind": "openai", "base_url": sim_url, "timeouts": {"connect": 0.5, "first_byte": 0.5}},
        # short idle and total deadlines, and a key an upstream error may echo back (it must never reach a client)
        {"name": "sim-tight", "kind": "openai", "base_url": sim_url, "api_key": "upkey-SECRET-tight-0123456789",
         "timeouts": {"first_byte": 1.0, "idle": 0.5, "total": 4.0}},
        {"name": "dead", "kind": "openai", "base_url": f"http://127.0.0.1:{closed_port()}/v1",
         "timeouts": {"connect": 1.0}},
        {"name": "local", "kind": "simulated", "reply": "Hi from the local simulated model, word by word."},
        {"name": "local-slow", "kind": "simulated", "tokens_per_second": 4},
    ]
    models = [{"name": name, **({"pricing": pricing} if pricing else {"free": True}),
               "targets": [{"provider": prov, "model": up}]} for name, (prov, up) in MODELS.items()]
    return write_toml(path, {"server": srv, "storage": {"url": f"sqlite:///{db}"}, "providers": providers,
                             "models": models})


def wait_health(base: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 20) -> None:
    wait_ready(base, proc, timeout=timeout)


stop_process = stop


class SluiceServer:
    """A running `sluice serve` and the files it uses."""

    def __init__(self, config: Path, port: int, db: Path, log: Path) -> None:
        self.config = config
        self.port = port
        self.db = db
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self._started = False
        self.default_key: str | None = None  # the `api_key` fixture's, made on first use

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def start(self) -> SluiceServer:
        """The first start picks the port (retried on a clash); a restart keeps it."""
        self.proc, self.port = start_sluice(self.config, self.log, port=self.port if self._started else None,
                                            timeout=20)
        self._started = True
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def rss_kib(self) -> int:
        """The server process's resident memory now (for tests that it gives memory back)."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS in /proc")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, "--config", str(self.config))

    def create_key(self, name: str, models: list[str] | None = None) -> dict[str, Any]:
        args = ["keys", "create", "--name", name, "--json"]
        if models:
            args += ["--models", ",".join(models)]
        res = self.cli(*args)
        assert res.returncode == 0, res.stderr
        doc: dict[str, Any] = json.loads(res.stdout)
        return doc

    def ledger(self) -> list[dict[str, Any]]:
        return ledger_rows(self.db)

    def ledger_for(self, request_id: str, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The ledger rows of one request, waiting for the batched flush (about 0.2 s)."""
        end = time.monotonic() + timeout
        while True:
            rows = [r for r in self.ledger() if r["request_id"] == request_id]
            if rows or time.monotonic() > end:
                return rows
            time.sleep(0.05)


def _start(tmp_path_factory: pytest.TempPathFactory, sim: ThreadedSim, server: dict[str, Any] | None,
           pricing: dict[str, str] | None) -> SluiceServer:
    tmp = tmp_path_factory.mktemp("sluice")
    db = tmp / "sluice.db"
    cfg = write_config(tmp / "sluice.toml", sim_url=sim.base_url, port=free_port(), db=db, server=server,
                       pricing=pricing)
    return SluiceServer(cfg, 0, db, tmp / "server.log").start()


@pytest.fixture(scope="session")
def shared_sluice(sim: ThreadedSim, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SluiceServer]:
    """The server of every module that sets no options: started once for the session (tests only add keys
    and requests of their own to it, and read back only those)."""
    server = _start(tmp_path_factory, sim, None, None)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def sluice(request: pytest.FixtureRequest, sim: ThreadedSim, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[SluiceServer]:
    """A module may set `SERVER_OPTIONS = {...}` for its [server] table and `PRICING = {"input": ...,
    "output": ...}` for its models (else they are free): it then gets a server of its own, else the shared one."""
    server_options = getattr(request.module, "SERVER_OPTIONS", None)
    pricing = getattr(request.module, "PRICING", None)
    if server_options is None and pricing is None:
        yield request.getfixturevalue("shared_sluice")
        return
    server = _start(tmp_path_factory, sim, server_options, pricing)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api_key(sluice: SluiceServer) -> str:
    """A key for the module's server (one per server, made once with the CLI)."""
    if sluice.default_key is None:
        sluice.default_key = sluice.create_key("e2e")["key"]
    return sluice.default_key


@pytest.fixture(autouse=True)
def _fresh_sim(sim: ThreadedSim) -> None:
    sim.reset()
