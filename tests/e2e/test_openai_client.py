"""The official `openai` package against the real server: plain, streaming, models, and how it classifies errors."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from tests.e2e.conftest import SluiceServer
from tests.sim.openai_sim import Fault, ThreadedSim

TEXT = "Hello 世界 🌍! line\u2028sep\n"
MSGS = [{"role": "user", "content": "给我讲一个关于程序员的笑话"}]


@pytest.fixture
def client(sluice: SluiceServer, api_key: str) -> Iterator[OpenAI]:
    with OpenAI(base_url=sluice.base_url, api_key=api_key, max_retries=0, timeout=20) as c:
        yield c


def test_plain_completion(client: OpenAI, sim: ThreadedSim) -> None:
    r = client.chat.completions.create(model="gpt-4o", messages=MSGS)  # type: ignore[arg-type]
    assert r.choices[0].message.content == "Hello 世界 🌍!"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None and r.usage.total_tokens == 20
    assert r._request_id is not None and r._request_id.startswith("req_")
    body = sim.last.body
    assert body["model"] == "fx-text" and "stream" not in body and "stream_options" not in body


def test_typewriter_loop_from_the_docs_works_without_include_usage(client: OpenAI) -> None:
    stream = client.chat.completions.create(model="gpt-4o", stream=True, messages=MSGS)  # type: ignore[arg-type]
    out = ""
    for chunk in stream:
        delta = chunk.choices[0].delta  # the seed doc's loop: IndexError if a usage chunk got through
        if delta.content is not None:
            out += delta.content
    assert out == TEXT


def test_include_usage_puts_usage_on_the_last_chunk(client: OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="gpt-4o", stream=True, messages=MSGS,  # type: ignore[arg-type]
                                                 stream_options={"include_usage": True}))
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None and last.usage.prompt_tokens == 14 and last.usage.total_tokens == 20
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == TEXT


def test_tool_calls_accumulate_with_the_sdk_stream_helper(client: OpenAI) -> None:
    with client.chat.completions.stream(model="tools", messages=MSGS) as stream:  # type: ignore[arg-type]
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert calls is not None and [c.id for c in calls] == ["call_c2BhXbyfuDnF8jeKxSyLhOe1",
                                                           "call_Qm7fzjN8rV3yXkA0b5DpLs2E"]
    args = [c.function.arguments for c in calls]  # type: ignore[union-attr]
    assert args == ['{"city":"San Francisco"}', '{"city":"東京"}']
    assert final.choices[0].finish_reason == "tool_calls"


def test_unknown_fields_pass_through_and_model_is_rewritten(client: OpenAI, sim: ThreadedSim) -> None:
    list(client.chat.completions.create(
        model="vendor/llama-3.1:70b", stream=True, messages=MSGS,  # type: ignore[arg-type]
        stream_options={"include_usage": False}, seed=2**62 + 1,
        extra_body={"top_k": 40, "chat_template_kwargs": {"enable_thinking": False}}))
    body = sim.last.body
    assert body["model"] == "fx-text"
    assert body["top_k"] == 40 and body["chat_template_kwargs"] == {"enable_thinking": False}
    assert body["seed"] == 2**62 + 1  # not rounded through a float
    assert body["stream_options"]["include_usage"] is True  # forced for metering
    assert body["messages"] == MSGS


def test_simulated_model_streams(client: OpenAI) -> None:
    out = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="sim-local", stream=True, messages=MSGS) if c.choices)  # type: ignore[arg-type]
    assert out == "Hi from the local simulated model, word by word."


async def test_fifty_concurrent_async_streams_keep_their_content(sluice: SluiceServer, api_key: str) -> None:
    async with AsyncOpenAI(base_url=sluice.base_url, api_key=api_key, max_retries=0, timeout=30) as ac:
        async def one(i: int) -> tuple[str, int | None]:
            model = "sim-local" if i % 5 == 0 else "gpt-4o"
            stream = await ac.chat.completions.create(model=model, stream=True, messages=MSGS,  # type: ignore[arg-type]
                                                      stream_options={"include_usage": True})
            text, total = "", None
            async for chunk in stream:
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
                if chunk.usage is not None:
                    total = chunk.usage.total_tokens
            return text, total
        results = await asyncio.gather(*(one(i) for i in range(50)))
    for i, (text, total) in enumerate(results):
        assert text == ("Hi from the local simulated model, word by word." if i % 5 == 0 else TEXT)
        assert total is not None and total > 0


def test_models_list_and_retrieve_ids_with_slash_and_colon(client: OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert "gpt-4o" in ids and "vendor/llama-3.1:70b" in ids and "ft:gpt-4o-2024-08-06:acme::abc123" in ids
    for mid in ("vendor/llama-3.1:70b", "ft:gpt-4o-2024-08-06:acme::abc123"):
        m = client.models.retrieve(mid)
        assert m.id == mid and m.object == "model"
    with pytest.raises(openai.NotFoundError) as ei:
        client.models.retrieve("no-such/model:x")
    assert ei.value.code == "model_not_found"


def test_raw_response_has_request_id(client: OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MSGS)  # type: ignore[arg-type]
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.parse().choices[0].message.content == "Hello 世界 🌍!"


# --- errors, as the SDK classifies them ---

def test_401_bad_key(sluice: SluiceServer) -> None:
    with OpenAI(base_url=sluice.base_url, api_key="sk-not-a-real-key", max_retries=0) as c, \
            pytest.raises(openai.AuthenticationError) as ei:
        c.chat.completions.create(model="gpt-4o", messages=MSGS)  # type: ignore[arg-type]
    assert ei.value.status_code == 401 and ei.value.code == "invalid_api_key"
    assert ei.value.request_id is not None


def test_403_model_outside_the_keys_allow_list(sluice: SluiceServer) -> None:
    key = sluice.create_key("limited", models=["sim-local"])["key"]
    with OpenAI(base_url=sluice.base_url, api_key=key, max_retries=0) as c:
        with pytest.raises(openai.PermissionDeniedError) as ei:
            c.chat.completions.create(model="gpt-4o", messages=MSGS)  # type: ignore[arg-type]
        assert ei.value.status_code == 403 and ei.value.param == "model"
        assert [m.id for m in c.models.list()] == ["sim-local"]
        with pytest.raises(openai.NotFoundError):
            c.models.retrieve("gpt-4o")  # not revealed to this key


def test_404_unknown_model(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as ei:
        client.chat.completions.create(model="gpt-9", stream=True, messages=MSGS)  # type: ignore[arg-type]
    assert ei.value.code == "model_not_found" and ei.value.param == "model"


def test_400_wrong_types(client: OpenAI, sim: ThreadedSim) -> None:
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model="gpt-4o", messages=MSGS, temperature="hot")  # type: ignore[arg-type]
    assert ei.value.param == "temperature"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-4o", messages=MSGS, max_tokens="10")  # type: ignore[arg-type]
    assert sim.requests == []  # rejected before any upstream call


def test_400_from_the_upstream_is_relayed(client: OpenAI, sim: ThreadedSim) -> None:
    sim.always(Fault.http_error(400))
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model="gpt-4o", messages=MSGS, stream=True)  # type: ignore[arg-type]
    assert ei.value.param == "temperature" and ei.value.code == "invalid_value"
    assert len(sim.requests) == 1  # a 4xx is not retried


def test_429_with_retry_after_passed_through(client: OpenAI, sim: ThreadedSim) -> None:
    sim.always(Fault.rate_limited(retry_after=7))
    with pytest.raises(openai.RateLimitError) as ei:
        client.chat.completions.create(model="gpt-4o", messages=MSGS, stream=True)  # type: ignore[arg-type]
    assert ei.value.status_code == 429
    assert ei.value.response.headers["retry-after"] == "7"
    assert ei.value.code == "rate_limit_exceeded"
    assert len(sim.requests) == 1  # a wait longer than Sluice holds a client goes back to the client


@pytest.mark.parametrize(("fault", "status"), [
    (Fault.http_error(500), 502),
    (Fault.http_error(503, headers={"retry-after": "1"}), 503),
    (Fault.html_502(), 502),
])
def test_upstream_5xx_is_internal_server_error(client: OpenAI, sim: ThreadedSim, fault: Fault, status: int) -> None:
    sim.always(fault)
    for stream in (False, True):
        with pytest.raises(openai.InternalServerError) as ei:
            client.chat.completions.create(model="gpt-4o", messages=MSGS, stream=stream)  # type: ignore[arg-type]
        assert ei.value.status_code == status
        assert isinstance(ei.value.body, dict) and {"message", "type", "param", "code"} <= set(ei.value.body)


def test_unreachable_upstream_and_first_byte_timeout(client: OpenAI, sim: ThreadedSim) -> None:
    with pytest.raises(openai.InternalServerError) as ei:
        client.chat.completions.create(model="unreachable", messages=MSGS, stream=True)  # type: ignore[arg-type]
    assert ei.value.status_code in (502, 503)
    sim.always(Fault.slow_first_byte(2.5))  # past connect + first_byte (0.5 + 0.5 s)
    with pytest.raises(openai.InternalServerError) as ei:
        client.chat.completions.create(model="short-timeout", messages=MSGS, stream=True)  # type: ignore[arg-type]
    assert ei.value.status_code == 504


@pytest.mark.parametrize("fault", [Fault.mid_stream_drop(after=3), Fault.eof_without_finish(after=3),
                                   Fault.error_event(after=3)], ids=["drop", "eof", "error-event"])
def test_mid_stream_failure_raises_api_error_never_a_clean_finish(client: OpenAI, sim: ThreadedSim,
                                                                  fault: Fault) -> None:
    sim.push(fault)
    seen: list[str] = []
    finishes: list[str] = []
    with pytest.raises(openai.APIError) as ei:
        for chunk in client.chat.completions.create(model="gpt-4o", messages=MSGS, stream=True):  # type: ignore[arg-type]
            seen.append(chunk.choices[0].delta.content or "")
            if chunk.choices[0].finish_reason:
                finishes.append(chunk.choices[0].finish_reason)
    assert not isinstance(ei.value, openai.APIStatusError)  # raised from the stream, after the 200
    assert finishes == []
    assert "".join(seen) == "Hello 世界"
