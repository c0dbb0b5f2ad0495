"""AnthropicProvider end to end against the loopback Anthropic simulator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from sluice.config import ProviderConfig
from sluice.errors import (
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from sluice.providers.anthropic import AnthropicProvider
from sluice.providers.base import Call, Chunk, Timeouts
from sluice.schema.chat import ChatRequest
from sluice.upstream import UpstreamClient
from tests.sim.anthropic_sim import AnthropicSim, Reply, error_body, frames, message

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures" / "anthropic"


@pytest.fixture
async def sim() -> AsyncIterator[AnthropicSim]:
    async with AnthropicSim() as s:
        yield s


@pytest.fixture
async def provider(sim: AnthropicSim) -> AsyncIterator[AnthropicProvider]:
    client = UpstreamClient()
    cfg = ProviderConfig(name="claude", kind="anthropic", base_url=sim.base_url, api_key="sk-ant-test",
                         headers={"anthropic-beta": "x-test"}, max_tokens_default=321)
    p = AnthropicProvider(cfg, client)
    try:
        yield p
    finally:
        await p.aclose()
        await client.aclose()


def call(stream: bool = False, timeouts: Timeouts | None = None, **extra: Any) -> Call:
    body = {"model": "alias", "messages": [{"role": "system", "content": "be brief"},
                                           {"role": "user", "content": "hi"}], "stream": stream, **extra}
    return Call(ChatRequest(body), upstream_model="claude-x", request_id="req-1",
                timeouts=timeouts or Timeouts(connect=2, first_byte=5, idle=5))


async def collect(provider: AnthropicProvider, c: Call, into: list[Chunk]) -> None:
    s = await provider.stream(c)
    try:
        async for chunk in s:
            into.append(chunk)
    finally:
        await s.aclose()


async def test_plain(sim: AnthropicSim, provider: AnthropicProvider) -> None:
    sim.replies.append(Reply(body=message("Hello there", msg_id="msg_9")))
    done = await provider.complete(call())
    body = orjson.loads(done.body)
    assert body["id"] == "chatcmpl-msg_9" and body["choices"][0]["message"]["content"] == "Hello there"
    assert body["choices"][0]["finish_reason"] == "stop"
    assert done.usage is not None and (done.usage.prompt_tokens, done.usage.completion_tokens) == (5, 2)
    assert done.text == "Hello there" and done.model == "claude-sim"
    got = sim.received[0]
    assert got.path == "/v1/messages"
    assert got.headers["x-api-key"] == "sk-ant-test" and got.headers["anthropic-version"] == "2023-06-01"
    assert got.headers["anthropic-beta"] == "x-test"
    assert got.body == {"model": "claude-x", "max_tokens": 321, "system": "be brief",
                        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}


async def test_stream(sim: AnthropicSim, provider: AnthropicProvider) -> None:
    sim.replies.append(Reply(sse=frames((FIXTURES / "parallel_tools.sse").read_bytes())))
    chunks: list[Chunk] = []
    await collect(provider, call(stream=True), chunks)
    assert sim.received[0].body["stream"] is True
    assert sim.received[0].headers["accept"] == "text/event-stream"
    parsed = [orjson.loads(c.payload) for c in chunks]
    assert parsed[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert parsed[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert parsed[-1]["choices"] == [] and chunks[-1].usage_only
    assert len(chunks) == 11


@pytest.mark.parametrize("stream", [False, True])
async def test_529_is_503_with_retry_after(sim: AnthropicSim, provider: AnthropicProvider,
                                           stream: bool) -> None:
    sim.replies.append(Reply(status=529, body=error_body("overloaded_error", "Overloaded"),
                             headers={"retry-after": "2"}))
    with pytest.raises(UpstreamUnavailable) as info:
        if stream:
            await provider.stream(call(stream=True))
        else:
            await provider.complete(call())
    assert info.value.status == 503 and info.value.retry_after == 2 and info.value.message == "Overloaded"


async def test_429_and_500_and_400(sim: AnthropicSim, provider: AnthropicProvider) -> None:
    sim.replies += [Reply(status=429, body=error_body("rate_limit_error", "slow"),
                          headers={"retry-after": "4"}),
                    Reply(status=500, body=error_body("api_error", "oops")),
                    Reply(status=400, body=error_body("invalid_request_error", "bad max_tokens"))]
    with pytest.raises(UpstreamRateLimited) as rl:
        await provider.stream(call(stream=True))
    assert rl.value.retry_after == 4
    with pytest.raises(UpstreamError) as server:
        await provider.complete(call())
    assert server.value.status == 502
    with pytest.raises(UpstreamRejected) as rejected:
        await provider.complete(call())
    assert rejected.value.message == "bad max_tokens"


async def test_mid_stream_error_event(sim: AnthropicSim, provider: AnthropicProvider) -> None:
    sim.replies.append(Reply(sse=frames((FIXTURES / "error_overloaded.sse").read_bytes())))
    chunks: list[Chunk] = []
    with pytest.raises(UpstreamUnavailable):
        await collect(provider, call(stream=True), chunks)
    assert [c.text for c in chunks] == ["", "Partial"]


async def test_mid_stream_drop(sim: AnthropicSim, provider: AnthropicProvider) -> None:
    sim.replies.append(Reply(sse=frames((FIXTURES / "text.sse").read_bytes()), drop_after=3))
    chunks: list[Chunk] = []
    with pytest.raises(UpstreamError):
        await collect(provider, call(stream=True), chunks)
    assert not any(c.finish for c in chunks)


async def test_slow_first_byte_times_out(sim: AnthropicSim, provider: AnthropicProvider) -> None:
    sim.replies.append(Reply(body=message(), first_byte_delay=1.0))
    with pytest.raises(UpstreamTimeout):
        await provider.complete(call(timeouts=Timeouts(connect=0.1, first_byte=0.2, idle=5)))


async def test_client_closing_early_closes_upstream(sim: AnthropicSim, provider: AnthropicProvider) -> None:
    sim.replies.append(Reply(sse=frames((FIXTURES / "text.sse").read_bytes()) * 20, event_delay=0.02))
    s = await provider.stream(call(stream=True))
    async for _ in s:
        break
    await s.aclose()
    await asyncio.wait_for(sim.finished.wait(), 2)
    assert sim.closed_early
