"""Metrics from a real App on loopback, driven by the official SDKs against the upstream simulator: each
request adds once, at settle, with bounded labels (unknown models and surplus error codes are `other`)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import anthropic
import openai
import pytest

from sluice.auth.keys import hash_key, new_key
from sluice.config import Settings
from sluice.http.app import create_app
from sluice.observability import metrics
from sluice.storage.base import KeyRecord
from tests import harness
from tests.harness import one_upstream
from tests.inproc import serving
from tests.sim.openai_sim import Fault, ThreadedSim

MSG = [{"role": "user", "content": "hi"}]
ADMIN = "admin-unit-" + "a" * 20


def value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def settings(tmp_path: Path, sim: ThreadedSim) -> Settings:
    return harness.settings(tmp_path, {"admin": {"token": ADMIN}, **one_upstream(
        sim.base_url, {"reasoner": "fx-reasoning"}, name="sim", pricing={"input": "1", "output": "2"})})


async def test_one_request_adds_once_at_settle_by_front_door(settings: Settings, tmp_path: Path,
                                                             sim: ThreadedSim) -> None:
    app = create_app(settings)
    kid, secret = new_key()
    before = {door: value("sluice_requests_total", route=door, model="reasoner", provider="sim", status_class="2xx",
                          error_code="") for door in ("chat_completions", "messages")}
    reasoning = value("sluice_tokens_total", model="reasoner", provider="sim", type="reasoning")
    ttft = value("gen_ai_server_time_to_first_token_seconds_count", model="reasoner", provider="sim")
    async with serving(app) as base:
        await app.resources.store.create_key(KeyRecord(kid, "unit", hash_key(secret)))
        async with openai.AsyncOpenAI(base_url=base + "/v1", api_key=secret, max_retries=0) as client:
            stream = await client.chat.completions.create(model="reasoner", messages=MSG, stream=True)  # type: ignore[arg-type]
            async for _ in stream:
                pass
        async with anthropic.AsyncAnthropic(base_url=base, api_key=secret, max_retries=0) as claude:
            await claude.messages.create(model="reasoner", max_tokens=64, messages=MSG)  # type: ignore[arg-type]
        assert value("sluice_requests_in_flight") == 0 and value("sluice_streams_open") == 0
    for door in ("chat_completions", "messages"):
        assert value("sluice_requests_total", route=door, model="reasoner", provider="sim", status_class="2xx",
                     error_code="") == before[door] + 1
    assert value("gen_ai_server_time_to_first_token_seconds_count", model="reasoner", provider="sim") == ttft + 2
    assert value("sluice_tokens_total", model="reasoner", provider="sim", type="reasoning") == reasoning + 16


async def test_labels_are_bounded(settings: Settings, sim: ThreadedSim) -> None:
    app = create_app(settings)
    kid, secret = new_key()
    other = value("sluice_requests_total", route="chat_completions", model="other", provider="none",
                  status_class="4xx", error_code="model_not_found")
    async with serving(app) as base:
        await app.resources.store.create_key(KeyRecord(kid, "unit", hash_key(secret)))
        async with openai.AsyncOpenAI(base_url=base + "/v1", api_key=secret, max_retries=0) as client:
            for model in ("made-up-1", "made-up-2"):
                with pytest.raises(openai.NotFoundError):
                    await client.chat.completions.create(model=model, messages=MSG)  # type: ignore[arg-type]
    assert value("sluice_requests_total", route="chat_completions", model="other", provider="none",
                 status_class="4xx", error_code="model_not_found") == other + 2
    labels = metrics.Labels(["m"], ["p"])
    codes = [labels.error_code(f"code_{i}") for i in range(metrics.MAX_ERROR_CODES + 5)]
    assert codes[:metrics.MAX_ERROR_CODES] == [f"code_{i}" for i in range(metrics.MAX_ERROR_CODES)]
    assert set(codes[metrics.MAX_ERROR_CODES:]) == {"other"}
    assert labels.error_code("code_0") == "code_0" and labels.error_code("x" * 65) == "other"
    assert (labels.model("m"), labels.model("n"), labels.provider("p"), labels.provider(None)) == (
        "m", "other", "p", "none")


async def test_upstream_retry_and_metrics_need_the_admin_token(settings: Settings, sim: ThreadedSim) -> None:
    app = create_app(settings)
    kid, secret = new_key()
    retries = value("sluice_upstream_retries_total", provider="sim")
    rejected = value("sluice_requests_rejected_total", route="chat_completions", code="invalid_api_key")
    async with serving(app) as base:
        await app.resources.store.create_key(KeyRecord(kid, "unit", hash_key(secret)))
        sim.push(Fault.http_error(503))  # retryable: the lone target is tried again, and answers
        async with openai.AsyncOpenAI(base_url=base + "/v1", api_key=secret, max_retries=0) as client:
            await client.chat.completions.create(model="reasoner", messages=MSG)  # type: ignore[arg-type]
        async with aiohttp.ClientSession() as http:
            async with http.get(base + "/metrics") as r:
                assert r.status == 401 and (await r.json())["error"]["code"] == "invalid_admin_token"
                assert r.headers["x-request-id"].startswith("req_")
            wrong = secret[:-1] + ("y" if secret.endswith("x") else "x")  # always a different secret
            async with http.post(base + "/v1/chat/completions", json={"model": "reasoner", "messages": MSG},
                                 headers={"authorization": f"Bearer {wrong}"}) as r:
                assert r.status == 401
            async with http.get(base + "/metrics", headers={"authorization": f"Bearer {secret}"}) as r:
                assert r.status == 401  # a client key is not the admin token
            async with http.get(base + "/metrics", headers={"authorization": f"Bearer {ADMIN}"}) as r:
                assert r.status == 200 and r.content_type == "text/plain"
                text = await r.text()
    assert value("sluice_upstream_retries_total", provider="sim") == retries + 1
    assert value("sluice_requests_rejected_total", route="chat_completions", code="invalid_api_key") == rejected + 1
    assert 'sluice_upstream_retries_total{provider="sim"}' in text


async def test_a_target_cooling_down_is_counted_and_shown_until_it_answers(settings: Settings,
                                                                          sim: ThreadedSim) -> None:
    app = create_app(settings)
    kid, secret = new_key()
    cooldowns = value("sluice_upstream_cooldowns_total", provider="sim")
    async with serving(app) as base:
        await app.resources.store.create_key(KeyRecord(kid, "unit", hash_key(secret)))
        async with openai.AsyncOpenAI(base_url=base + "/v1", api_key=secret, max_retries=0) as client:
            sim.always(Fault.http_error(503))
            for _ in range(2):  # two attempts each (the lone target's retry): the third failure starts a cooldown
                with pytest.raises(openai.APIStatusError):
                    await client.chat.completions.create(model="reasoner", messages=MSG)  # type: ignore[arg-type]
            assert value("sluice_upstream_cooldowns_total", provider="sim") == cooldowns + 1
            assert value("sluice_upstream_target_cooling", provider="sim", model="fx-reasoning") == 1
            sim.reset()
            await client.chat.completions.create(model="reasoner", messages=MSG)  # type: ignore[arg-type]
    assert value("sluice_upstream_target_cooling", provider="sim", model="fx-reasoning") == 0
