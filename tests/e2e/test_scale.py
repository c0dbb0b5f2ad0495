"""Three `sluice serve` processes behind nginx, sharing one PostgreSQL and one Redis: a prepaid budget and
a gateway-wide RPM limit hold across instances under 200 concurrent requests, and what is refused never
reaches the upstream. nginx runs the config docs/deploy.md shows (docs/nginx-sluice.conf).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.cluster import (
    ADMIN_TOKEN,
    Nginx,
    SluiceServer,
    aquery,
    clear_redis,
    free_port,
    nginx_binary,
    pg_database,
    redis_db,
)
from tests.harness import one_upstream, write_toml
from tests.sim.openai_sim import Fault, ThreadedSim

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

N = 200
MAX_TOKENS = 100
PROMPT_TOKENS = 12                       # what the simulator reports
PRICE_IN, PRICE_OUT = Decimal("1"), Decimal("10")   # per million tokens
COST = (PROMPT_TOKENS * PRICE_IN + MAX_TOKENS * PRICE_OUT) / 1_000_000   # every success costs this
NANO = Decimal(1_000_000_000)


@dataclass
class Services:
    pg_url: str
    redis_url: str
    sim: ThreadedSim


@pytest.fixture(scope="module")
def services() -> Iterator[Services]:
    nginx_binary()
    with pg_database("sluice_scale") as pg_url, redis_db() as redis_url, ThreadedSim(backlog=1024) as sim:
        yield Services(pg_url, redis_url, sim)


@dataclass
class Cluster:
    url: str              # nginx
    instances: list[SluiceServer]
    nginx: Nginx


StartCluster = Callable[[dict[str, Any]], Cluster]   # the config's extra tables -> a started cluster


def _config(s: Services, tables: dict[str, Any]) -> dict[str, Any]:
    return {"server": {"shutdown_grace_seconds": 5, "key_cache_seconds": 2}, "storage": {"url": s.pg_url},
            "redis": {"url": s.redis_url}, **tables,
            **one_upstream(s.sim.base_url, {"scale-model": "sim-1"}, name="sim",
                           pricing={"input": str(PRICE_IN), "output": str(PRICE_OUT)})}


@pytest.fixture
def cluster(services: Services, tmp_path: Path) -> Iterator[StartCluster]:
    started: list[Cluster] = []

    def start(tables: dict[str, Any]) -> Cluster:
        clear_redis(services.redis_url)
        services.sim.reset()
        services.sim.always(Fault.sized(PROMPT_TOKENS, delay=0.5))   # every success costs the same
        cfg = tmp_path / "sluice.toml"
        write_toml(cfg, _config(services, tables))
        instances = [SluiceServer(cfg, free_port(), tmp_path / f"sluice-{i}.log").start() for i in range(3)]
        c = Cluster("", instances, Nginx(tmp_path / "nginx", free_port(), [f"127.0.0.1:{s.port}" for s in instances]))
        started.append(c)
        for s in instances:
            s.wait_ready()
        c.nginx.start()
        c.url = c.nginx.url
        return c

    yield start
    for c in started:
        c.nginx.stop()
        for s in c.instances:
            s.stop()


async def _admin(session: aiohttp.ClientSession, base: str, method: str, path: str,
                 body: dict[str, Any] | None = None) -> dict[str, Any]:
    async with session.request(method, base + path, json=body,
                               headers={"authorization": f"Bearer {ADMIN_TOKEN}"}) as r:
        doc: dict[str, Any] = await r.json()
        assert r.status in (200, 201), doc
        return doc


@dataclass
class Reply:
    tag: str
    status: int
    headers: dict[str, str]
    body: bytes
    request_id: str


async def _fire(base: str, secret: str, n: int) -> tuple[list[Reply], float]:
    """`n` requests at once (half of them streaming); returns the replies and the seconds they took."""
    run = uuid.uuid4().hex[:8]
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
        async def one(i: int) -> Reply:
            tag = f"{run}-{i}"
            body = {"model": "scale-model", "max_tokens": MAX_TOKENS, "stream": i % 2 == 0, "user": tag,
                    "messages": [{"role": "user", "content": f"Say hello, request {i}"}]}
            async with session.post(base + "/v1/chat/completions", json=body,
                                    headers={"authorization": f"Bearer {secret}"}) as r:
                data = await r.read()
                return Reply(tag, r.status, {k.lower(): v for k, v in r.headers.items()}, data,
                             r.headers.get("x-request-id", ""))
        t0 = time.monotonic()
        replies = await asyncio.gather(*(one(i) for i in range(n)))
        return list(replies), time.monotonic() - t0


def _error(reply: Reply) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(reply.body)["error"]
    return doc


def _complete(reply: Reply) -> bool:
    """A 200 whose body is a whole completion (a stream that ended in [DONE], or a JSON reply)."""
    if reply.status != 200:
        return False
    if reply.headers.get("content-type", "").startswith("text/event-stream"):
        return reply.body.rstrip().endswith(b"data: [DONE]") and b'"error"' not in reply.body
    return b'"choices"' in reply.body


async def _wait_ledger(pg_url: str, key_id: str, n: int, wait: float = 10.0) -> list[tuple[Any, ...]]:
    """Refused requests are recorded off the hot path; wait until all `n` records are in."""
    deadline = time.monotonic() + wait
    while True:
        rows = await aquery(pg_url,
                                       "SELECT request_id, provider, status, cost, error_code FROM ledger "
                                       "WHERE key_id = ?", key_id)
        if len(rows) >= n or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.2)


async def test_budget_holds_across_three_instances(cluster: StartCluster, services: Services) -> None:
    c = cluster({})
    per = to_nanos(COST)
    budget = per * 51 - 1                 # what 50 requests cost at the price and max_tokens, plus change
    async with aiohttp.ClientSession() as s:
        key = await _admin(s, c.url, "POST", "/admin/keys", {"name": "budget", "budget": str(budget / NANO)})
    replies, seconds = await _fire(c.url, key["key"], N)

    ok = [r for r in replies if r.status == 200]
    refused = [r for r in replies if r.status != 200]
    assert all(_complete(r) for r in ok), [r.body[-200:] for r in ok if not _complete(r)][:3]
    for r in refused:
        assert r.status == 429, (r.status, r.body)
        assert _error(r)["code"] == "insufficient_quota", r.body
        assert _error(r)["type"] == "insufficient_quota", r.body
        assert r.headers.get("x-should-retry") == "false", r.headers
    # the budget was spent, not wasted by over-reservation, and never exceeded
    assert 40 <= len(ok) <= budget // per, (len(ok), budget // per)
    assert refused, "200 requests against a budget for 50 must see refusals"

    # refused requests never reached the upstream; each admitted one reached it exactly once
    seen = services.sim.users()
    assert len(seen) == len(ok)
    assert sorted(seen) == sorted(r.tag for r in ok)

    rows = await _wait_ledger(services.pg_url, key["id"], N)
    ids = [row[0] for row in rows]
    assert len(ids) == len(set(ids)) == N, (len(ids), len(set(ids)))
    upstream_ids = {row[0] for row in rows if row[1] is not None}
    assert upstream_ids == {r.request_id for r in ok}
    assert all(row[2] == 429 and row[3] in (None, 0) for row in rows if row[1] is None)
    settled = sum(row[3] or 0 for row in rows)
    assert settled == per * len(ok)

    async with aiohttp.ClientSession() as s:
        after = await _admin(s, c.url, "GET", f"/admin/keys/{key['id']}")
    spent = to_nanos(Decimal(after["spent"]))
    assert spent == settled <= budget
    assert Decimal(after["reserved"]) == 0
    assert await aquery(services.pg_url, "SELECT count(*) FROM reservations WHERE key_id = ?", key["id"]) == [(0,)]
    print(f"\nbudget {budget / NANO} for {budget // per} requests: {len(ok)} served, {len(refused)} refused "
          f"(insufficient_quota), settled {settled / NANO} = keys.spent, upstream saw {len(seen)}, {seconds:.2f}s")


async def test_global_rpm_is_shared_through_redis(cluster: StartCluster, services: Services) -> None:
    c = cluster({"limits": {"rpm": 50}})
    async with aiohttp.ClientSession() as s:
        key = await _admin(s, c.url, "POST", "/admin/keys", {"name": "rpm"})
    replies, seconds = await _fire(c.url, key["key"], N)

    ok = [r for r in replies if r.status == 200]
    refused = [r for r in replies if r.status != 200]
    assert all(_complete(r) for r in ok)
    # a bucket of 50 that refills one request every 60/50 s: 50, plus whatever refilled meanwhile
    assert 50 <= len(ok) <= 50 + int(seconds * 50 / 60), (len(ok), seconds)
    for r in refused:
        assert r.status == 429, (r.status, r.body)
        assert _error(r)["code"] == "rate_limit_exceeded", r.body
        assert int(r.headers["retry-after"]) >= 1
        assert r.headers["x-ratelimit-limit-requests"] == "50"
        assert r.headers["x-ratelimit-remaining-requests"] == "0"
        assert "x-ratelimit-reset-requests" in r.headers
    served_by = {r.headers.get("x-sluice-provider") for r in ok}
    assert served_by == {"sim"}
    assert sorted(services.sim.users()) == sorted(r.tag for r in ok)
    print(f"\nrpm 50 over 3 instances: {len(ok)} served, {len(refused)} refused (rate_limit_exceeded), "
          f"{seconds:.2f}s")


def to_nanos(amount: Decimal) -> int:
    return int(amount * NANO)
