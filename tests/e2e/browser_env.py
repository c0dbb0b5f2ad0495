"""The browser tests' environment: a real `sluice serve` on loopback (simulated + OpenAI-compatible sim
upstreams), keys made with the CLI, and headless Debian Chromium driven by Playwright (never downloaded).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness import ROOT, model, provider, sluice_env, start_sluice, stop, toml

CHROMIUM = os.environ.get("SLUICE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ADMIN_TOKEN = "admin-test-token-123"
MARKDOWN_REPLY = ("## Result\n\nThis is **bold** and *italic* with `inline code`, <b>not html</b>.\n\n"
                  "- first item\n- second item\n\n```python\nprint('hi')\n```\n\nDone.")


def require_browser() -> None:
    """Skip (or fail under CI) when Chromium or the playwright package is missing."""
    reasons = []
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        reasons.append(f"no Chromium at {CHROMIUM} (run scripts/browser)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reasons.append("the playwright package is not installed (run scripts/browser)")
    if reasons:
        msg = "browser tests need: " + "; ".join(reasons)
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


def config_text(port: int, db: Path, sim_url: str) -> str:
    price = {"input": "1.00", "output": "2.00"}
    return toml({
        "server": {"host": "127.0.0.1", "port": port, "heartbeat_seconds": 5}, "storage": {"url": f"sqlite:///{db}"},
        "admin": {"token": ADMIN_TOKEN},
        "providers": [provider("sim", "simulated", ttft_ms=150, tokens_per_second=20, reply=MARKDOWN_REPLY),
                      provider("fast", "simulated", reply="Fast reply."),
                      provider("upstream", "openai", sim_url, api_key="sim-key")],
        "models": [model("sim-model", ("sim", "sim-model"), pricing=price),
                   model("fast-model", ("fast", "fast-model"), pricing=price),
                   model("slow-model", ("upstream", "slow-1")), model("cjk-model", ("upstream", "split-1"))]})


@dataclass
class Gateway:
    base_url: str
    config: Path
    proc: subprocess.Popen[bytes]
    user_key: str

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method, headers={
            "authorization": f"Bearer {ADMIN_TOKEN}", "content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as res:
            return json.loads(res.read())


_env = sluice_env


def create_key_cli(config: Path, name: str) -> str:
    out = subprocess.run([sys.executable, "-m", "sluice", "keys", "create", "--name", name, "--json",
                          "--config", str(config)], check=True, capture_output=True, env=_env(), timeout=60)
    doc = json.loads(out.stdout)
    return str(doc.get("key") or doc.get("secret"))


def start_gateway(tmp: Path, sim_url: str) -> Gateway:
    """Through the one launcher (tests/harness.py): the port is retried on a clash."""
    config = tmp / "sluice.toml"
    # the port in the file is a placeholder: the launcher passes --port
    config.write_text(config_text(8000, tmp / "sluice.db", sim_url), encoding="utf-8")
    key = create_key_cli(config, "browser-tests")
    proc, port = start_sluice(config, tmp / "server.log", env=sluice_env(), cwd=tmp)
    return Gateway(f"http://127.0.0.1:{port}", config, proc, key)


def stop_gateway(gw: Gateway) -> None:
    stop(gw.proc, 15)


def screenshot_dir() -> Path | None:
    """Set SLUICE_SCREENSHOTS=docs/img to refresh the committed screenshots while the tests run."""
    d = os.environ.get("SLUICE_SCREENSHOTS")
    if not d:
        return None
    path = (ROOT / d).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path
