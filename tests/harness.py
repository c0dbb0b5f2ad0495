"""The one test harness: a config builder that writes TOML from a dict (`provider`, `model` and `one_upstream`
build its common entries; `settings` loads it), and the one launcher of `sluice serve` processes. Tests
write no TOML by hand, except those whose subject is the config parser itself.

A port picked by binding port 0 and closing is free only until someone else binds it, so the launcher
passes `--port` and, when the server reports the address in use, starts again on another port. The
e2e launchers (tests/e2e/conftest.py, sluice_proc.py, browser_env.py, cluster.py) are wrappers."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from sluice.config import Settings, load


def toml_key(k: object) -> str:
    """A key bare when TOML allows it (letters, digits, _ and -), else quoted."""
    k = str(k)
    return k if k and all(c.isascii() and (c.isalnum() or c in "_-") for c in k) else json.dumps(k)


def toml_value(v: Any) -> str:
    """One TOML value: strings and numbers, booleans, inline tables and arrays (what configs use)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, Path):
        return json.dumps(str(v))
    return json.dumps(v)


def toml(doc: Mapping[str, Any]) -> str:
    """A config document as TOML: a mapping value is a table, a list of mappings an array of tables
    (`providers`, `models`), anything else a top-level key."""
    top = [f"{toml_key(k)} = {toml_value(v)}" for k, v in doc.items() if not _table(v) and not _tables(v)]
    out = [*top, ""] if top else []
    for k, v in doc.items():
        if _table(v):
            out += [f"[{k}]", *(f"{toml_key(kk)} = {toml_value(vv)}" for kk, vv in v.items()), ""]
        elif _tables(v):
            for item in v:
                out += [f"[[{k}]]", *(f"{toml_key(kk)} = {toml_value(vv)}" for kk, vv in item.items()), ""]
    return "\n".join(out)


def provider(name: str, kind: str = "openai", base_url: str | None = None, **fields: Any) -> dict[str, Any]:
    """One `[[providers]]` entry (no `base_url` for the simulated kind); `fields` are its other keys."""
    return {"name": name, "kind": kind, **({"base_url": base_url} if base_url is not None else {}), **fields}


def model(name: str, *targets: tuple[str, str] | Mapping[str, Any], pricing: Mapping[str, str] | None = None,
          **fields: Any) -> dict[str, Any]:
    """One `[[models]]` entry served by `targets`, each (provider, upstream model) or a whole target table;
    free unless `pricing` (per million tokens) is given."""
    price: dict[str, Any] = {"pricing": dict(pricing)} if pricing is not None else {"free": True}
    return {"name": name, **price, **fields,
            "targets": [dict(t) if isinstance(t, Mapping) else {"provider": t[0], "model": t[1]} for t in targets]}


def one_upstream(base_url: str, models: Mapping[str, str] | Sequence[str], *, kind: str = "openai",
                 name: str = "up", pricing: Mapping[str, str] | None = None, **fields: Any) -> dict[str, Any]:
    """The providers and models of a config with one upstream `name` at `base_url`: `models` maps each public
    name to the upstream's (a list: the same names); `fields` go to the provider (api_key, timeouts ...)."""
    pairs = models.items() if isinstance(models, Mapping) else ((m, m) for m in models)
    return {"providers": [provider(name, kind, base_url, **fields)],
            "models": [model(public, (name, up), pricing=pricing) for public, up in pairs]}


def write_toml(path: Path, doc: Mapping[str, Any]) -> Path:
    path.write_text(toml(doc), encoding="utf-8")
    return path


def settings(tmp: Path, doc: Mapping[str, Any]) -> Settings:
    """Validated settings from `doc` (a SQLite store in `tmp` unless `doc` names one), as `sluice serve`
    would load them from the same TOML."""
    full = {"storage": {"url": f"sqlite:///{tmp / 'sluice.db'}"}, **doc}
    return load(write_toml(tmp / "sluice.toml", full))


ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def free_port() -> int:
    """A port free at this instant. Another process may take it before ours binds it: for `sluice serve`
    use `start_sluice`, which retries on a clash; for a listener of the test's own, bind port 0 instead."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sluice_env(**extra: str) -> dict[str, str]:
    """The environment of a Sluice process: this checkout importable, no SLUICE_* from the caller's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


class Exited(RuntimeError):
    """The server process ended before it was ready; the message holds its log."""


def wait_ready(base: str, proc: subprocess.Popen[bytes] | None = None, *, path: str = "/health",
               timeout: float = 30.0) -> None:
    """Poll `base + path` until it answers 200; raise `Exited` if `proc` ends first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise Exited(f"sluice exited early with {proc.returncode}")
        try:
            with urllib.request.urlopen(base + path, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)  # polling a condition, not waiting for one
    raise RuntimeError(f"sluice at {base} did not become ready within {timeout:g}s")


def start_sluice(config: Path, log: Path, *, port: int | None = None, env: Mapping[str, str] | None = None,
                 args: Sequence[str] = (), ready: str = "/health", timeout: float = 30.0,
                 cwd: Path = ROOT) -> tuple[subprocess.Popen[bytes], int]:
    """Start `sluice serve --config CONFIG --port P` (output appended to `log`) and wait until `ready`
    answers 200. Without `port` a free one is picked, and a clash is retried on a new one; a given
    port is used as is (a restart on the same address). Returns the process and its port."""
    for _ in range(1 if port is not None else 5):
        p = port or free_port()
        start = log.stat().st_size if log.exists() else 0
        with log.open("ab") as out:
            proc = subprocess.Popen([PY, "-m", "sluice", "serve", "--config", str(config), "--port", str(p), *args],
                                    cwd=cwd, env=dict(env) if env is not None else sluice_env(),
                                    stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_ready(f"http://127.0.0.1:{p}", proc, path=ready, timeout=timeout)
            return proc, p
        except Exited:
            said = log.read_bytes()[start:].decode(errors="replace")
            if port is None and "address already in use" in said.lower():
                continue
            raise Exited(f"sluice exited early with {proc.returncode}:\n{said[-4000:]}") from None
        except RuntimeError:
            stop(proc)
            raise
    raise Exited("sluice found no free port in 5 attempts")


def stop(proc: subprocess.Popen[Any], timeout: float = 10.0) -> int | None:
    """SIGTERM, then SIGKILL if it has not ended within `timeout`; the exit code (None when killed)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            return None
    return proc.returncode


def _table(v: Any) -> bool:
    return isinstance(v, Mapping)


def _tables(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and bool(v) and all(isinstance(x, Mapping) for x in v)


def ledger_rows(db_path: Path) -> list[dict[str, Any]]:
    """Every ledger row of a Sluice's SQLite store, oldest first, read without taking a write lock."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM ledger ORDER BY created_at")]
    finally:
        db.close()


REDIS_URL = "redis://127.0.0.1:6379/0"


async def redis_or_skip(url: str = REDIS_URL) -> aioredis.Redis:
    """A client of the real Redis on this machine (the caller closes it), or the test is skipped without one."""
    admin = aioredis.Redis.from_url(url)
    try:
        await admin.ping()
    except (OSError, aioredis.ConnectionError):
        await admin.aclose()
        pytest.skip(f"no Redis server at {url}")
    return admin
