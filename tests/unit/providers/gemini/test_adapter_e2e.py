"""GeminiProvider end to end against the loopback Gemini simulator (real sockets on 127.0.0.1)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from sluice.config import ProviderConfig
from sluice.errors import UpstreamError, UpstreamRateLimited, UpstreamTimeout, UpstreamUnavailable
from sluice.providers.base import Call, Chunk, Timeouts
from sluice.providers.gemini import GeminiProvider
from sluice.schema.chat import ChatRequest
from sluice.schema.usage import Usage
from sluice.upstream import UpstreamClient
from tests.sim.gemini_sim import GeminiSim, Script, text_events

from .golden import fixture


@pytest.fixture
async def sim() -> AsyncIterator[GeminiSim]:
    async with GeminiSim() as s:
        yield s


@pytest.fixture
async def provider(sim: GeminiSim) -> AsyncIterator[GeminiProvider]:
    client = UpstreamClient()
    cfg = ProviderConfig(name="gem", kind="gemini", base_url=sim.base_url + "/", api_key="AIza-test",
                         headers={"x-extra": "yes"})
    p = GeminiProvider(cfg, client)
    try:
        yield p
    finally:
        await p.aclose()
        await client.aclose()


def call(stream: bool = False, **kw: Any) -> Call:
    body = {"model": "alias", "messages": [{"role": "system", "content": "be brief"},
                                           {"role": "user", "content": "hi"}], "stream": stream, **kw}
    return Call(ChatRequest(body), upstream_model="gemini-2.5-flash", request_id="req-1",
                timeouts=Timeouts(connect=2.0, first_byte=2.0, idle=2.0))


async def collect(stream: Any) -> list[Chunk]:
    out: list[Chunk] = []
    try:
        async for chunk in stream:
            out.append(chunk)
    finally:
        await stream.aclose()
    return out


async def test_complete(sim: GeminiSim, provider: GeminiProvider) -> None:
    done = await provider.complete(call(temperature=0.2))
    body = orjson.loads(done.body)
    assert body["object"] == "chat.completion" and body["id"] == "chatcmpl-sim-1"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Hello from the simulator"}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert done.usage == Usage(5, 4)
    assert done.text == "Hello from the simulator" and done.model == "gemini-2.5-flash"
    [got] = sim.requests
    assert (got.model, got.action) == ("gemini-2.5-flash", "generateContent")
    assert got.headers["x-goog-api-key"] == "AIza-test" and got.headers["x-extra"] == "yes"
    assert got.body == {"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                        "systemInstruction": {"parts": [{"text": "be brief"}]},
                        "generationConfig": {"temperature": 0.2}}


async def test_stream_from_recorded_fixture(sim: GeminiSim, provider: GeminiProvider) -> None:
    sim.push(Script(raw=fixture("thinking_tool.sse")))
    chunks = await collect(await provider.stream(call(stream=True)))
    deltas = [c.parsed["choices"][0] if c.parsed and c.parsed["choices"] else None for c in chunks]
    assert [d["finish_reason"] if d else None for d in deltas] == [None, None, None, None, "tool_calls", None]
    assert chunks[-1].usage_only and chunks[-1].usage == Usage(30, 57, reasoning_tokens=45)
    [got] = sim.requests
    assert got.action == "streamGenerateContent" and got.query == {"alt": "sse"}
    assert got.headers["accept"] == "text/event-stream"


async def test_stream_scripted_lf_events(sim: GeminiSim, provider: GeminiProvider) -> None:
    sim.push(Script(events=text_events(["Hé", "llo ", "wörld"]), line_ending=b"\n"))
    chunks = await collect(await provider.stream(call(stream=True)))
    assert "".join(c.text for c in chunks) == "Héllo wörld"
    assert [c.finish for c in chunks].count(True) == 1
    assert chunks[-1].usage == Usage(5, 3)


@pytest.mark.parametrize("streaming", [False, True])
async def test_429_resource_exhausted_maps_with_retry_after(sim: GeminiSim, provider: GeminiProvider,
                                                             streaming: bool) -> None:
    sim.push(Script(status=429, message="Quota exceeded", retry_after="12"))
    with pytest.raises(UpstreamRateLimited) as info:
        if streaming:
            await provider.stream(call(stream=True))
        else:
            await provider.complete(call())
    assert info.value.status == 429 and info.value.retry_after == 12.0 and info.value.retryable
    assert info.value.to_dict()["error"] == {"message": "Quota exceeded", "type": "requests", "param": None,
                                             "code": "rate_limit_exceeded"}


@pytest.mark.parametrize(("status", "cls", "http"), [(500, UpstreamError, 502),
                                                     (503, UpstreamUnavailable, 503)])
async def test_server_errors(sim: GeminiSim, provider: GeminiProvider, status: int,
                             cls: type[UpstreamError], http: int) -> None:
    sim.push(Script(status=status), Script(status=status))
    for make in (lambda: provider.complete(call()), lambda: provider.stream(call(stream=True))):
        with pytest.raises(cls) as info:
            await make()
        assert info.value.status == http and isinstance(info.value.to_dict()["error"]["code"], str)


async def test_mid_stream_drop_raises(sim: GeminiSim, provider: GeminiProvider) -> None:
    sim.push(Script(events=text_events(["one", "two", "three"]), drop_after=1))
    stream = await provider.stream(call(stream=True))
    seen: list[Chunk] = []
    with pytest.raises(UpstreamError):
        async for chunk in stream:
            seen.append(chunk)
    await stream.aclose()
    assert [c.text for c in seen] == ["", "one"]
    assert not any(c.finish for c in seen)


async def test_eof_without_finish_raises(sim: GeminiSim, provider: GeminiProvider) -> None:
    sim.push(Script(raw=fixture("eof_no_finish.sse")))
    with pytest.raises(UpstreamError, match="truncated"):
        await collect(await provider.stream(call(stream=True)))


async def test_slow_first_byte_times_out(sim: GeminiSim, provider: GeminiProvider) -> None:
    sim.push(Script(first_byte_delay=1.0))
    fast = Call(ChatRequest({"model": "a", "messages": [{"role": "user", "content": "x"}]}),
                upstream_model="g", request_id="r", timeouts=Timeouts(connect=0.1, first_byte=0.1, idle=1.0))
    with pytest.raises(UpstreamTimeout):
        await provider.stream(fast)


async def test_client_closing_early_is_seen_upstream(sim: GeminiSim, provider: GeminiProvider) -> None:
    sim.push(Script(events=text_events([f"p{i}" for i in range(50)]), event_delay=0.05))
    stream = await provider.stream(call(stream=True))
    it = aiter(stream)
    assert (await anext(it)).text == ""
    assert (await anext(it)).text == "p0"
    await stream.aclose()
    for _ in range(100):
        if sim.closed_early:
            break
        await asyncio.sleep(0.02)
    assert sim.closed_early == 1 and sim.completed == 0


async def test_bad_request_is_rejected_before_any_upstream_call(sim: GeminiSim,
                                                                provider: GeminiProvider) -> None:
    from sluice.errors import InvalidRequest
    with pytest.raises(InvalidRequest):
        await provider.complete(call(logit_bias={"1": 2}))
    assert sim.requests == []
