"""The admin OpenAPI document matches the handlers (issue 10, item 9): schemathesis, run against
`/admin/openapi.json` of a real `sluice serve` with an admin token, finds no server error and no conformance
failure (required fields, ranges, documented statuses, 405 with Allow for other methods), and, following the
document's links from what it creates, reaches every operation past its 404."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests.e2e.cluster import ADMIN_TOKEN, chat_body, serving, two_speed_config
from tests.harness import provider


def _schemathesis() -> list[str]:
    found = shutil.which("schemathesis", path=os.path.dirname(sys.executable))
    assert found, "schemathesis is in the test extra: pip install -e '.[test]'"
    return [found]


async def test_schemathesis_finds_no_failure_in_the_admin_api(tmp_path: Path) -> None:
    # a provider with a key pool, so that the links from /admin/channels reach a key's enable/disable
    pool = provider("pool", "simulated", api_keys=["sk-openapi-pool-0123456789"])
    cfg = two_speed_config(tmp_path, f"sqlite:///{tmp_path / 'sluice.db'}", slow_tps=50, providers=[pool])
    async with serving(cfg, tmp_path, "openapi") as server:
        async with aiohttp.ClientSession() as s:
            async with s.post(server.url + "/admin/keys", json={"name": "seed", "budget": "1"},
                              headers={"authorization": f"Bearer {ADMIN_TOKEN}"}) as r:
                assert r.status == 201
                seed = await r.json()
            # One logged request, so that the link from the request log reaches /admin/requests/{request_id}.
            async with s.post(server.url + "/v1/chat/completions", json=chat_body("fast-sim", False),
                              headers={"authorization": f"Bearer {seed['key']}"}) as r:
                assert r.status == 200
        # Every warning fails the run: "missing test data" means an operation was never reached past its 404.
        # Random fuzzing is the costly phase (65 s of 78 at 60 examples an operation): 20 there, each of the
        # 33 operations still fuzzed, with the coverage phase's boundary cases and 60 stateful scenarios.
        (tmp_path / "schemathesis.toml").write_text(
            "[warnings]\nfail-on = true\n\n[generation]\nmax-examples = 60\n\n"
            "[phases.fuzzing.generation]\nmax-examples = 20\n")
        cmd = [*_schemathesis(), "run", server.url + "/admin/openapi.json", "--header",
               f"Authorization: Bearer {ADMIN_TOKEN}", "--checks", "all", "--workers", "1",
               "--seed", "20261129", "--no-color"]
        res = await asyncio.to_thread(subprocess.run, cmd, cwd=tmp_path, capture_output=True, text=True,
                                      timeout=600, env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false"})
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-6000:]
    assert "Tested: 33" in out, out[-3000:]       # every documented operation was exercised (channels: 11)
    assert "Traceback" not in server.log.read_text()
