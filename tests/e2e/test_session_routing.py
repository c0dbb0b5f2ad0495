"""Routing by what a request is: a session sticks to one of two weighted targets (served by the other while
that one fails, and back on it once healthy), and embeddings / legacy completions for a model whose upstream
cannot serve them are a clear 400."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI

from tests.e2e.sluice_proc import SluiceProcess
from tests.harness import model, provider
from tests.sim.anthropic_sim import AnthropicSim
from tests.sim.gemini_sim import GeminiSim, embed_reply
from tests.sim.openai_sim import Fault, OpenAISim

MSGS = [{"role": "user", "content": "x"}]


def _config(a: str, b: str, anth: str, gem: str = "http://127.0.0.1:9/v1beta") -> dict[str, Any]:
    pair = [{"provider": p, "model": "fx-text", "weight": 1} for p in ("a", "b")]
    return {"providers": [provider("a", "openai", a), provider("b", "openai", b),
                          provider("anth", "anthropic", anth, api_key="sk-ant-upstream"),
                          provider("gem", "gemini", gem, api_key="gem-test")],
            "models": [model("pair", *pair), model("claude", ("anth", "claude-sonnet-4-5")),
                       model("gemini", ("gem", "gemini-embedding-001"))]}


async def test_a_session_sticks_to_one_target_and_comes_back_to_it_after_a_failure(tmp_path: Path) -> None:
    async with OpenAISim() as a, OpenAISim() as b, AnthropicSim() as anth, SluiceProcess(
            tmp_path, _config(a.base_url, b.base_url, anth.base_url)) as s:
        client = AsyncOpenAI(base_url=s.base_url, api_key=s.create_key(), max_retries=0)
        s.closers.append(client.close)
        sims = {"a": a, "b": b}
        for n in range(8):
            sess = f"sess-{n}"
            seen = []
            for _ in range(4):
                before = {k: len(v.requests) for k, v in sims.items()}
                await client.chat.completions.create(model="pair", messages=MSGS,  # type: ignore[arg-type]
                                                     extra_headers={"X-Claude-Code-Session-Id": sess})
                seen += [k for k, v in sims.items() if len(v.requests) > before[k]]
            assert len(seen) == 4 and len(set(seen)) == 1, (sess, seen)  # every request on one target

        # the session's target fails: each request is served by the next target in the session's own order
        # (every instance ranks them alike), and once the first is healthy the session goes back to it
        first = await client.chat.completions.with_raw_response.create(
            model="pair", messages=MSGS, extra_body={"prompt_cache_key": "moving"})  # type: ignore[arg-type]
        pinned = first.headers["x-sluice-provider"]
        other = "b" if pinned == "a" else "a"
        served_before = len(sims[pinned].requests)
        sims[pinned].always(Fault.http_error(500))
        for _ in range(2):  # below the cool-down threshold (3 failures in a row): the target is tried first
            moved = await client.chat.completions.with_raw_response.create(
                model="pair", messages=MSGS, extra_body={"prompt_cache_key": "moving"})  # type: ignore[arg-type]
            assert moved.headers["x-sluice-provider"] == other
        assert len(sims[pinned].requests) == served_before + 2  # each request tried it first
        sims[pinned].reset()
        for _ in range(3):
            again = await client.chat.completions.with_raw_response.create(
                model="pair", messages=MSGS, extra_body={"prompt_cache_key": "moving"})  # type: ignore[arg-type]
            assert again.headers["x-sluice-provider"] == pinned
        assert len(sims[pinned].requests) == 3

@pytest.mark.parametrize(("model", "endpoint"), [("claude", "embeddings"), ("claude", "completions"),
                                               ("gemini", "completions")])
async def test_a_model_whose_upstream_cannot_serve_the_endpoint_gets_a_clear_400(
        tmp_path: Path, model: str, endpoint: str) -> None:
    async with OpenAISim() as a, AnthropicSim() as anth, GeminiSim() as gem, SluiceProcess(
            tmp_path, _config(a.base_url, a.base_url, anth.base_url, gem.base_url)) as s:
        client = AsyncOpenAI(base_url=s.base_url, api_key=s.create_key(), max_retries=0)
        s.closers.append(client.close)
        body = {"model": model, "input": "x"} if endpoint == "embeddings" else {"model": model, "prompt": "x"}
        with pytest.raises(openai.BadRequestError) as err:
            await client.post(f"/{endpoint}", body=body, cast_to=object)
        detail = err.value.body
        assert isinstance(detail, dict) and detail["code"] == "unsupported_endpoint" and detail["param"] == "model"
        assert model in detail["message"] and not anth.received and not gem.requests


async def test_gemini_serves_embeddings_over_batch_embed_contents(tmp_path: Path) -> None:
    async with OpenAISim() as a, AnthropicSim() as anth, GeminiSim() as gem, SluiceProcess(
            tmp_path, _config(a.base_url, a.base_url, anth.base_url, gem.base_url)) as s:
        client = AsyncOpenAI(base_url=s.base_url, api_key=s.create_key(), max_retries=0)
        s.closers.append(client.close)
        floats = await client.embeddings.create(model="gemini", input=["hello", "a longer text"], dimensions=5,
                                                encoding_format="float")
        sent = gem.requests[-1]
        assert sent.action == "batchEmbedContents" and sent.model == "gemini-embedding-001"
        assert sent.body["requests"][1] == {"model": "models/gemini-embedding-001", "outputDimensionality": 5,
                                            "content": {"parts": [{"text": "a longer text"}]}}
        expected = embed_reply(sent.body)["embeddings"]
        assert [d.embedding for d in floats.data] == [e["values"] for e in expected]
        decoded = await client.embeddings.create(model="gemini", input="hello")  # the SDK asks for base64
        assert decoded.data[0].embedding == pytest.approx(embed_reply(gem.requests[-1].body)["embeddings"][0]["values"],
                                                          rel=1e-6, abs=1e-6)
        assert floats.usage.prompt_tokens > 0  # Gemini reports none: estimated, never left at nothing
        with pytest.raises(openai.BadRequestError) as err:
            await client.embeddings.create(model="gemini", input=[1, 2, 3])
        assert isinstance(err.value.body, dict) and err.value.body["param"] == "input"
