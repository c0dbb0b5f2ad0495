"""Several `sluice serve` started at once on one empty database create one first key between them, not one
each: exactly one prints it, the keys table holds one key, and that key works on every instance.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.cluster import SluiceServer, aquery, free_port, pg_database
from tests.harness import model, provider, write_toml

pytestmark = pytest.mark.slow

INSTANCES = 4
KEY = re.compile(r"sk-[A-Za-z0-9]{52}")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'sluice.db'}"
        return
    with pg_database("sluice_first_key") as url:
        yield url


async def test_instances_starting_together_on_an_empty_database_create_one_first_key(
        storage_url: str, tmp_path: Path) -> None:
    cfg = tmp_path / "sluice.toml"
    write_toml(cfg, {"storage": {"url": storage_url}, "providers": [provider("sim", "simulated")],
                     "models": [model("sim", ("sim", "sim"))]})
    servers = [SluiceServer(cfg, free_port(), tmp_path / f"s{i}.log") for i in range(INSTANCES)]
    try:
        for s in servers:   # all spawned before any has started: they prepare the database together
            s.start()
        await asyncio.gather(*(asyncio.to_thread(s.wait_ready, 90) for s in servers))
        printed = [KEY.findall(s.log.read_text(errors="replace")) for s in servers]
        assert sum(1 for p in printed if p) == 1, printed
        (secret,) = {k for p in printed for k in p}
        assert await aquery(storage_url, "SELECT count(*) FROM keys") == [(1,)]
        async with aiohttp.ClientSession() as session:
            for s in servers:
                async with session.post(s.url + "/v1/chat/completions", headers={"authorization": f"Bearer {secret}"},
                                        json={"model": "sim", "messages": [{"role": "user", "content": "hi"}]}) as r:
                    assert r.status == 200, await r.text()
    finally:
        await asyncio.gather(*(asyncio.to_thread(s.stop) for s in servers))
