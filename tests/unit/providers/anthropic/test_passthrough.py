"""Anthropic pass-through pieces: the body with only `model` rewritten, the forwarded headers, and the
stream forwarded frame for frame while its usage is read (against the Anthropic simulator)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from sluice.config import ProviderConfig
from sluice.errors import UpstreamError
from sluice.providers.anthropic import AnthropicProvider
from sluice.providers.anthropic.passthrough import PassthroughStream, native_body, native_headers, replace_model
from sluice.providers.base import Call, NativeBody
from sluice.schema.chat import ChatRequest
from sluice.sse import encode_event
from sluice.upstream import Timeouts, UpstreamClient
from tests.sim.anthropic_sim import AnthropicSim, Reply, frames

FIX = Path(__file__).resolve().parents[3] / "fixtures" / "anthropic"


@pytest.mark.parametrize("raw", [
    b'{"model":"a","messages":[]}',
    b'{ "messages": [{"model": "inner", "content": "\\"model\\": \\"x\\""}],\n  "model" : "a", "max_tokens": 5}',
    b'{"metadata": {"model": "nested"}, "stream": true, "model": "a"}',
    b'{"\\u006dodel": "a", "x": 1}',
])
def test_replace_model_touches_only_the_top_level_model(raw: bytes) -> None:
    out = replace_model(raw, "claude-b")
    parsed, before = orjson.loads(out), orjson.loads(raw)
    before["model"] = "claude-b"
    assert parsed == before
    if b"\\u006d" not in raw:  # the usual spelling: every other byte is kept
        assert out == raw.replace(b'"a"', b'"claude-b"')


def test_native_body_is_the_same_bytes_when_the_model_matches() -> None:
    raw = b'{"model": "m",  "messages": []}'
    assert native_body(NativeBody("anthropic", raw, "m"), "m") is raw


def test_native_headers_forward_version_and_betas_minus_the_strip_list() -> None:
    native = NativeBody("anthropic", b"{}", "m", {"anthropic-version": "2026-10-21",
                                                 "anthropic-beta": "a-1, b-2 ,c-3"})
    base = {"x-api-key": "sk-up", "anthropic-version": "2023-06-01"}
    assert native_headers(base, native, ["b-2"]) == {"x-api-key": "sk-up", "anthropic-version": "2026-10-21",
                                                     "anthropic-beta": "a-1,c-3"}
    only = NativeBody("anthropic", b"{}", "m", {"anthropic-beta": "b-2"})
    assert native_headers(base, only, ["b-2"]) == base


async def _stream(sim: AnthropicSim, client: UpstreamClient) -> PassthroughStream:
    resp = await client.request("POST", sim.base_url + "/messages", headers={}, body=b'{"stream": true}',
                                timeouts=Timeouts())
    return PassthroughStream(resp)


async def test_stream_frames_pass_unchanged_and_usage_is_read() -> None:
    fixture = frames((FIX / "cache_usage.sse").read_bytes())
    async with AnthropicSim() as sim:
        sim.replies.append(Reply(sse=fixture))
        client = UpstreamClient()
        try:
            stream = await _stream(sim, client)
            chunks = [c async for c in stream]
            await stream.aclose()
        finally:
            await client.aclose()
    assert b"".join(c.payload for c in chunks) == b"".join(fixture)
    assert chunks[-1].finish and not any(c.finish for c in chunks[:-1])
    usage = [c.usage for c in chunks if c.usage is not None][-1]
    start = orjson.loads(fixture[0].split(b"data: ", 1)[1])["message"]["usage"]
    reported = start["input_tokens"] + start["cache_read_input_tokens"] + start["cache_creation_input_tokens"]
    assert usage.prompt_tokens == reported and usage.cached_tokens == start["cache_read_input_tokens"]


async def test_stream_errors_and_truncation_raise() -> None:
    start = encode_event("message_start", orjson.dumps({"type": "message_start", "message": {
        "usage": {"input_tokens": 3, "output_tokens": 1}}}))
    error = encode_event("error", orjson.dumps({"type": "error", "error": {"type": "overloaded_error",
                                                                          "message": "busy"}}))
    async with AnthropicSim() as sim:
        sim.replies.append(Reply(sse=[start, error]))
        sim.replies.append(Reply(sse=[start]))
        client = UpstreamClient()
        try:
            for expected in ("busy", "before message_stop"):
                stream = await _stream(sim, client)
                got = []
                with pytest.raises(UpstreamError, match=expected):
                    async for c in stream:
                        got.append(c)
                await stream.aclose()
                assert got[0].usage is not None and got[0].usage.prompt_tokens == 3
        finally:
            await client.aclose()


async def test_headers_the_operator_pinned_win_over_the_clients() -> None:
    native = NativeBody("anthropic", b'{"model":"a","max_tokens":5,"messages":[]}', "a",
                        {"anthropic-version": "2026-10-21", "anthropic-beta": "x-1,y-2"})
    req = ChatRequest({"model": "a", "messages": [{"role": "user", "content": "x"}]})
    async with AnthropicSim() as sim:
        client = UpstreamClient()
        cfg = ProviderConfig(name="p", kind="anthropic", base_url=sim.base_url, api_key="sk-up",
                             headers={"anthropic-version": "2023-06-01"}, strip_betas=["y-2"])
        try:
            done = await AnthropicProvider(cfg, client).complete_native(Call(req, "b", "req_1", native=native))
        finally:
            await client.aclose()
    got = sim.received[0]
    assert got.headers["anthropic-version"] == "2023-06-01" and got.headers["anthropic-beta"] == "x-1"
    assert got.raw == b'{"model":"b","max_tokens":5,"messages":[]}'
    assert done.native and done.usage is not None and done.usage.prompt_tokens == 5
