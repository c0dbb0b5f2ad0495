"""The things a scenario can aim at: the fake upstream directly, Sluice, and optional peers (nginx,
LiteLLM proxy). Each target is started in its own process group and knows which pids to measure."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench.proc import Server, free_port

HOST = "127.0.0.1"
CHAT_PATH = "/v1/chat/completions"
RESPONSES_PATH = "/v1/responses"


@dataclass
class Target:
    """Where requests go, what headers they carry, and the gateway process (None when direct)."""

    name: str
    port: int
    headers: dict[str, str] = field(default_factory=dict)
    server: Server | None = None
    rss_idle_kb: int = 0  # gateway RSS right after it became ready

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{CHAT_PATH}"

    def pids(self) -> list[int]:
        return self.server.pids() if self.server is not None else []

    def gw_pids(self) -> list[int]:
        """The gateway's processes; none when requests go straight to the upstream."""
        return [] if self.name == "direct" else self.pids()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


def start_upstream(out: Path, procs: int = 1) -> Target:
    port = free_port()
    srv = Server("upstream", [sys.executable, "-m", "bench.upstream", "--port", str(port),
                              "--procs", str(procs)],
                 out / "logs" / "upstream.log", env=_env(Path(__file__).resolve().parent.parent))
    srv.wait_ready(port, "/health", timeout=15)
    return Target("direct", port, server=srv)


def _env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(root) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def sluice_config(out: Path, tag: str, port: int, upstream_port: int, extra: str = "") -> Path:
    db = (out / f"sluice-{tag}.db").resolve()
    for p in (db, db.with_suffix(".db-wal"), db.with_suffix(".db-shm")):
        p.unlink(missing_ok=True)
    cfg = out / f"sluice-{tag}.toml"
    free = "" if "[pricing]" in extra else "free = true\n"  # unpriced models are refused unless free
    cfg.write_text(f"""[server]
host = "{HOST}"
port = {port}

[storage]
url = "sqlite:///{db}"

[[providers]]
name = "fake"
kind = "openai"
base_url = "http://{HOST}:{upstream_port}/v1"
api_key = "bench"

[[providers]]
name = "fake-anthropic"
kind = "anthropic"
base_url = "http://{HOST}:{upstream_port}/v1"
api_key = "bench"

[[providers]]
name = "fake-responses"
kind = "openai"
base_url = "http://{HOST}:{upstream_port}/v1"
api_key = "bench"
apis = ["chat", "responses"]

# the front doors' pass-through models (bench/fronts.py); bench-model stays last, since a budgets
# fragment appended below prices it with a [pricing] table
[[models]]
name = "bench-claude"
free = true
targets = [{{ provider = "fake-anthropic", model = "bench-claude" }}]

[[models]]
name = "bench-native"
free = true
targets = [{{ provider = "fake-responses", model = "bench-native" }}]

[[models]]
name = "bench-model"
{free}targets = [{{ provider = "fake", model = "bench-model" }}]
{extra}""")
    return cfg


def start_sluice(root: Path, out: Path, upstream_port: int, workers: int = 1, tag: str = "main",
                 extra_toml: str = "", name: str = "sluice", key_args: tuple[str, ...] = (),
                 probe: tuple[dict[str, str], list[str]] | None = None) -> Target:
    """Write a config, create a key with the CLI, start `python -m sluice serve`, wait for /health.
    With `probe` (environment, command prefix), serve through `python -m bench.stalls serve` (bench/stalls.py)."""
    port = free_port()
    cfg = sluice_config(out, tag, port, upstream_port, extra_toml)
    env = _env(root)
    data_dir = (out / f"sluice-data-{tag}").resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    keys = subprocess.run([sys.executable, "-m", "sluice", "keys", "create", "--name", "bench", "--json",
                           *key_args, "--config", str(cfg)], cwd=root, env=env, capture_output=True, text=True,
                          timeout=60)
    key = None
    for line in reversed(keys.stdout.splitlines()):
        if line.strip().startswith("{"):
            key = json.loads(line).get("key")
            break
    if keys.returncode != 0 or not key:
        raise RuntimeError(f"`sluice keys create` failed ({keys.returncode}):\n"
                           f"{(keys.stdout + keys.stderr)[-1500:]}")
    prefix, run = [], ["-m", "sluice"]
    if probe is not None:  # run as a script: this checkout's probe over `root`'s sluice
        prefix, run = probe[1], [str(Path(__file__).resolve().parent / "stalls.py")]
        env.update(probe[0])
    srv = Server(name, [*prefix, sys.executable, *run, "serve", "--config", str(cfg), "--host", HOST,
                        "--port", str(port), "--workers", str(workers), "--data-dir", str(data_dir)],
                 out / "logs" / f"sluice-{tag}.log", env=env, cwd=str(root))
    try:
        try:
            srv.wait_ready(port, "/health", timeout=30)
        except RuntimeError:
            if not srv.alive():
                raise
            srv.wait_ready(port, None, timeout=5)  # fallback: TCP connect
    except RuntimeError:
        srv.stop()
        raise
    return Target(name, port, {"Authorization": f"Bearer {key}"}, srv)


NGINX_CONF = """worker_processes {workers};
pid {out}/nginx.pid;
error_log {out}/logs/nginx-error.log warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; multi_accept on; }}
http {{
  access_log off;
  client_body_temp_path {out}/nginx-tmp/body;
  proxy_temp_path {out}/nginx-tmp/proxy;
  fastcgi_temp_path {out}/nginx-tmp/fastcgi;
  uwsgi_temp_path {out}/nginx-tmp/uwsgi;
  scgi_temp_path {out}/nginx-tmp/scgi;
  keepalive_requests 1000000;
  upstream fake {{ server 127.0.0.1:{upstream}; keepalive 256; keepalive_requests 1000000; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://fake;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 120s;
    }}
  }}
}}
"""


def start_nginx(out: Path, upstream_port: int, workers: int = 1) -> Target:
    """nginx as the reference reverse proxy: plain proxy_pass, proxy_buffering off, upstream keep-alive."""
    exe = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if exe is None:
        raise RuntimeError("nginx is not installed (apt-get install -y nginx)")
    port = free_port()
    o = out.resolve()
    (o / "nginx-tmp").mkdir(parents=True, exist_ok=True)
    (o / "logs").mkdir(parents=True, exist_ok=True)
    conf = o / "nginx.conf"
    conf.write_text(NGINX_CONF.format(workers=workers, out=o, upstream=upstream_port, port=port))
    srv = Server("nginx", [exe, "-c", str(conf), "-p", str(o), "-g", "daemon off;"],
                 o / "logs" / "nginx.log")
    srv.wait_ready(port, None, timeout=10)
    return Target("nginx", port, server=srv)


LITELLM_CONF = """model_list:
  - model_name: bench-model
    litellm_params:
      model: openai/bench-model
      api_base: http://127.0.0.1:{upstream}/v1
      api_key: bench
general_settings:
  master_key: sk-bench-master
litellm_settings:
  drop_params: true
"""


def start_litellm(out: Path, upstream_port: int, install_timeout: float = 900) -> Target:
    """Install litellm[proxy] into bench/out/litellm-venv (once) and start its proxy on the fake upstream."""
    venv = (out / "litellm-venv").resolve()
    exe = venv / "bin" / "litellm"
    if not exe.exists():
        print(f"  installing litellm[proxy] into {venv} (bounded to {install_timeout:.0f}s)...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        r = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "litellm[proxy]"],
                           capture_output=True, text=True, timeout=install_timeout)
        if r.returncode != 0 or not exe.exists():
            raise RuntimeError(f"pip install 'litellm[proxy]' failed:\n{(r.stdout + r.stderr)[-1500:]}")
    port = free_port()
    conf = out / "litellm.yaml"
    conf.write_text(LITELLM_CONF.format(upstream=upstream_port))
    env = dict(os.environ, LITELLM_LOG="ERROR", LITELLM_TELEMETRY="False")
    srv = Server("litellm", [str(exe), "--config", str(conf.resolve()), "--host", HOST, "--port", str(port),
                             "--num_workers", "1"], out / "logs" / "litellm.log", env=env)
    try:
        srv.wait_ready(port, "/health/liveliness", timeout=120)
    except RuntimeError:
        srv.stop()
        raise
    return Target("litellm", port, {"Authorization": "Bearer sk-bench-master"}, srv)
