"""A real Prometheus (Debian's package, started by the test with its own config) scrapes `sluice serve
--workers 2` through /metrics and the admin token; after known traffic (successes, streams reporting
cached and reasoning tokens, an upstream error, a client disconnect) its HTTP API gives exact counts and
token sums, equal to the ledger's (the ledger is the truth the metrics are derived from)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import openai
import pytest

from tests.e2e.cluster import ADMIN_TOKEN, SluiceServer, free_port, http_get, query
from tests.harness import model, provider, write_toml
from tests.sim.openai_sim import Fault, ThreadedSim

pytestmark = pytest.mark.slow

UPSTREAM_KEY = "sk-upstream-" + "u" * 24
MSG = [{"role": "user", "content": "hi"}]


def prometheus_binary() -> str:
    found = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)
    if found is None:
        pytest.skip("prometheus is not installed (scripts/services installs Debian's package)")
    return found


class Prometheus:
    """`prometheus` on a free loopback port, scraping one target every second with a bearer token."""

    def __init__(self, tmp: Path, target: str) -> None:
        self.port = free_port()
        self.dir = tmp / "prometheus"
        self.dir.mkdir()
        self.config = self.dir / "prometheus.yml"
        self.config.write_text(json.dumps({  # YAML is a superset of JSON
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [{"job_name": "sluice", "metrics_path": "/metrics",
                                "authorization": {"type": "Bearer", "credentials": ADMIN_TOKEN},
                                "static_configs": [{"targets": [target]}]}]}))
        self.log = self.dir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Prometheus:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [prometheus_binary(), f"--config.file={self.config}", f"--storage.tsdb.path={self.dir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"], stdout=out, stderr=subprocess.STDOUT)
        self._until(lambda: self._ok("/-/ready"), "prometheus did not become ready")
        return self

    def _ok(self, path: str) -> bool:
        try:
            return http_get(f"http://127.0.0.1:{self.port}{path}")[0] == 200
        except OSError:
            return False

    def _until(self, cond: object, what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond():  # type: ignore[operator]
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text(errors="replace")
            assert time.monotonic() < deadline, f"{what}:\n{self.log.read_text(errors='replace')[-3000:]}"
            time.sleep(0.2)

    def value(self, expr: str) -> float | None:
        """The instant value of a PromQL expression with one result; None when it has none."""
        status, body = http_get(f"http://127.0.0.1:{self.port}/api/v1/query?query={urllib.parse.quote(expr)}")
        assert status == 200, body
        result = json.loads(body)["data"]["result"]
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def wait_value(self, expr: str, want: float) -> None:
        self._until(lambda: self.value(expr) == want, f"{expr} never became {want} (last {self.value(expr)})")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def upstream() -> Iterator[ThreadedSim]:
    with ThreadedSim() as sim:
        yield sim


def _config(tmp: Path, sim_url: str) -> tuple[Path, Path]:
    db = tmp / "sluice.db"
    cfg = tmp / "sluice.toml"
    write_toml(cfg, {"server": {"workers": 2, "heartbeat_seconds": 0.3}, "storage": {"url": f"sqlite:///{db}"},
                     "ledger": {"durable": True},
                     "providers": [provider("sim", "openai", sim_url, api_key=UPSTREAM_KEY)],
                     "models": [model("gpt-4o", ("sim", "fx-text"), pricing={"input": "2.50", "output": "10"}),
                                model("reasoner", ("sim", "fx-reasoning"),
                                      pricing={"input": "1.10", "cached_input": "0.275", "output": "4.40"})]})
    return cfg, db


async def _traffic(base: str, key: str, upstream: ThreadedSim) -> dict[str, int]:
    """Known traffic; returns how many requests of each kind were sent."""
    client = openai.AsyncOpenAI(base_url=base + "/v1", api_key=key, max_retries=0)
    sent = {"plain": 0, "reasoner": 0}
    try:
        # plain successes on fresh connections until both workers have answered (request ids name the process)
        processes: set[str] = set()
        while len(processes) < 2 or sent["plain"] < 4:
            assert sent["plain"] < 200, "every request went to one worker"
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
                async with http.post(base + "/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                                     json={"model": "gpt-4o", "messages": MSG}) as r:
                    assert r.status == 200, await r.text()
                    processes.add(r.headers["x-request-id"][:20])
            sent["plain"] += 1
        for _ in range(3):
            stream = await client.chat.completions.create(model="reasoner", messages=MSG, stream=True)  # type: ignore[arg-type]
            async for _chunk in stream:
                pass
            sent["reasoner"] += 1
        upstream.push(Fault.http_error(400))  # not retryable: one attempt, relayed as a 400
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(model="gpt-4o", messages=MSG)  # type: ignore[arg-type]
        upstream.push(Fault(pause_after={2: 60}))  # the stream stalls; the client leaves
        async with aiohttp.ClientSession() as http:
            async with http.post(base + "/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                                 json={"model": "gpt-4o", "messages": MSG, "stream": True}) as r:
                assert r.status == 200
                await r.content.readuntil(b"\n\n")
    finally:
        await client.close()
    return sent


def _create_key(cfg: Path, env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, "-m", "sluice", "keys", "create", "--name", "prom", "--json", "--config",
                          str(cfg)], capture_output=True, check=True, env=env, timeout=60).stdout
    return str(json.loads(out)["key"])


async def test_prometheus_scrapes_exact_totals_from_two_workers(tmp_path: Path, upstream: ThreadedSim) -> None:
    cfg, db = _config(tmp_path, upstream.base_url)
    server = SluiceServer(cfg, free_port(), tmp_path / "sluice.log").start()
    prom: Prometheus | None = None
    try:
        server.wait_ready(90)
        key = await asyncio.to_thread(_create_key, cfg, server.env)
        prom = Prometheus(tmp_path, f"127.0.0.1:{server.port}").start()
        sent = await _traffic(server.url, key, upstream)
        total = sent["plain"] + sent["reasoner"] + 2
        prom.wait_value("sum(sluice_requests_total)", total)  # every request settled and scraped
        prom.wait_value("sluice_requests_in_flight", 0)
        assert prom.value('sum(sluice_requests_total{status_class="2xx",error_code=""})') == total - 1
        assert prom.value('sum(sluice_requests_total{status_class="4xx",model="gpt-4o"})') == 1
        assert prom.value('sum(sluice_client_disconnects_total{model="gpt-4o",route="chat_completions"})') == 1
        assert prom.value('sum(sluice_requests_total{model="reasoner",provider="sim"})') == sent["reasoner"]
        assert prom.value('sum(sluice_upstream_attempts_total{provider="sim"})') == total
        # the upstream's 400 came before any token
        assert prom.value('sum(gen_ai_server_time_to_first_token_seconds_count)') == total - 1
        # tokens of each type: exact, and equal to the ledger's sums
        assert prom.value('sum(sluice_tokens_total{model="reasoner",type="reasoning"})') == 16 * sent["reasoner"]
        assert prom.value('sum(sluice_tokens_total{model="reasoner",type="cached"})') == 32 * sent["reasoner"]
        assert prom.value('sum(sluice_tokens_total{model="reasoner",type="output"})') == 22 * sent["reasoner"]
        (prompt, completion, cached, cost), = await asyncio.to_thread(
            query, f"sqlite:///{db}", "SELECT sum(prompt_tokens), sum(completion_tokens), sum(cached_tokens), "
                                      "sum(cost) FROM ledger")
        assert prom.value('sum(sluice_tokens_total{type="input"})') == prompt
        assert prom.value('sum(sluice_tokens_total{type="output"})') == completion
        assert prom.value('sum(sluice_tokens_total{type="cached"})') == cached
        assert prom.value("sum(sluice_cost_total)") == pytest.approx(cost / 1e9, rel=1e-9)
    finally:
        if prom is not None:
            prom.stop()
        server.stop()
