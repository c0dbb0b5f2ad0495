"""Model patterns through a real Sluice: the upstream gets the rewritten name, the client's suffix label is
stripped, and /v1/models lists what the upstream's own model list makes available under a pattern."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import openai

from tests.e2e.sluice_proc import SluiceProcess
from tests.harness import model, provider
from tests.sim.openai_sim import OpenAISim


async def _listed(client: openai.AsyncOpenAI, name: str) -> list[str]:
    """/v1/models, asked until `name` is there (the upstream's list is fetched in the background)."""
    ids: list[str] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(20):
            while name not in ids:
                ids = [m.id async for m in client.models.list()]
                if name not in ids:
                    await asyncio.sleep(0.1)
    return ids


async def test_patterns_rewrite_strip_and_list(tmp_path: Path) -> None:
    async with OpenAISim() as sim:
        body = {"providers": [provider("router", "openai", sim.base_url, api_key="sk-router-test")],
                "models": [model("router/*", ("router", "*")),
                           model("gpt-4o*", ("router", "{model}"), strip_suffixes=["[1m]"])]}
        async with SluiceProcess(tmp_path, body) as s:
            client = openai.AsyncOpenAI(base_url=s.base_url, api_key=s.create_key(), max_retries=0)
            s.closers.append(client.close)
            msgs: Any = [{"role": "user", "content": "hi"}]
            await client.chat.completions.create(model="router/vendor/some-model", messages=msgs)
            assert sim.last.body["model"] == "vendor/some-model"
            stream = await client.chat.completions.create(model="gpt-4o-mini[1m]", messages=msgs, stream=True)
            assert [c async for c in stream]
            assert sim.last.body["model"] == "gpt-4o-mini"
            try:
                await client.chat.completions.create(model="claude-x", messages=msgs)
                raise AssertionError("an unmatched name must be unknown")
            except openai.NotFoundError as exc:
                assert exc.code == "model_not_found"
            ids = await _listed(client, "router/gpt-4o-2024-08-06")  # the sim lists gpt-4o-2024-08-06
            assert "router/gpt-4o-2024-08-06" in ids and "gpt-4o-2024-08-06" in ids
            assert not any("*" in i for i in ids)
            got = await client.models.retrieve("router/anything")
            assert got.id == "router/anything"
