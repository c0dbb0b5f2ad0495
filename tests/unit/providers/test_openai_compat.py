"""The OpenAI-compatible provider over `MockTransport`: bytes pass through untouched, usage and finish are
read as they pass, upstream errors are mapped (status, type, code, retry-after) and never echo its key,
and the same stream cut into any pieces gives the same chunks."""

from __future__ import annotations

import asyncio
import random

import orjson
import pytest

from sluice.config import ProviderConfig
from sluice.errors import SluiceError, UpstreamError, UpstreamRateLimited, UpstreamTimeout
from sluice.providers.base import Call, Chunk
from sluice.providers.openai_compat import OpenAICompatProvider
from sluice.schema.chat import ChatRequest
from sluice.schema.chunk import payload_text
from sluice.upstream import Timeouts
from sluice.upstream.mock import Delay, Fail, MockReply, MockRequest, MockTransport, Piece

SECRET = "sk-upstream-SECRET-0123456789"
DELTAS = [
    b'{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}',
    b'{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hel\xc3\xa9"}}]}',
    b'{"id":"c1",  "object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"lo"},'
    b'"finish_reason":"stop"}]}',
    b'{"id":"c1","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2,'
    b'"total_tokens":9}}',
]


def provider(transport: MockTransport, **cfg: object) -> OpenAICompatProvider:
    return OpenAICompatProvider(ProviderConfig(name="up", kind="openai", base_url="http://up.test/v1",
                                               api_key=SECRET, **cfg), transport)  # type: ignore[arg-type]


def call(stream: bool = True, **body: object) -> Call:
    req = ChatRequest({"model": "public", "messages": [{"role": "user", "content": "hi"}], "stream": stream, **body})
    return Call(req, "upstream-model", "req_1", Timeouts(first_byte=5.0, idle=5.0))


async def collect(p: OpenAICompatProvider, c: Call) -> list[Chunk]:
    s = await p.stream(c)
    try:
        return [ch async for ch in s]
    finally:
        await s.aclose()


async def test_a_stream_passes_each_payload_through_byte_for_byte_with_usage_read() -> None:
    t = MockTransport(lambda req: MockReply.events(DELTAS))
    chunks = await collect(provider(t), call())
    assert [c.payload for c in chunks] == DELTAS  # the odd spacing of the third survives: no re-serialising
    assert [c.text for c in chunks] == [None] * 4  # the text is read from the payload only when asked for
    assert "".join(payload_text(c.payload) for c in chunks) == "Hel\u00e9lo"
    assert [c.finish for c in chunks] == [False, False, True, False]
    last = chunks[-1]
    assert last.usage_only and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (7, 2)
    assert t.responses[0].closed


async def test_the_request_names_the_upstream_model_asks_for_usage_and_carries_the_key() -> None:
    t = MockTransport(lambda req: MockReply.events(DELTAS))
    await collect(provider(t), call(stream_options={"include_usage": False}, temperature=0.5))
    (req,) = t.requests
    assert (req.method, req.url) == ("POST", "http://up.test/v1/chat/completions")
    assert req.headers["authorization"] == f"Bearer {SECRET}"
    assert req.headers["accept"] == "text/event-stream"
    body = orjson.loads(req.body)
    assert body["model"] == "upstream-model" and body["temperature"] == 0.5
    assert body["stream_options"] == {"include_usage": True}


async def test_without_stream_options_support_none_are_sent() -> None:
    t = MockTransport(lambda req: MockReply.events(DELTAS))
    await collect(provider(t, stream_options=False), call(stream_options={"include_usage": True}))
    assert "stream_options" not in orjson.loads(t.requests[0].body)


def _cuts(data: bytes, rng: random.Random) -> list[Piece]:
    out: list[Piece] = []
    i = 0
    while i < len(data):
        n = rng.randint(1, 9)
        out.append(data[i:i + n])
        i += n
    return out


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
@pytest.mark.parametrize("cut", ["bytes", "random", "whole"])
async def test_any_fragmentation_and_line_ending_gives_the_same_chunks(newline: bytes, cut: str) -> None:
    whole = b"".join(b"data: " + d + newline + newline for d in DELTAS) + b"data: [DONE]" + newline + newline
    pieces: list[Piece] = {
        "bytes": [whole[i:i + 1] for i in range(len(whole))],  # splits the two-byte \xc3\xa9 as well
        "random": _cuts(whole, random.Random(len(newline))),
        "whole": [whole],
    }[cut]
    t = MockTransport(lambda req: MockReply(200, {"content-type": "text/event-stream"}, pieces))
    chunks = await collect(provider(t), call())
    assert [c.payload for c in chunks] == DELTAS


async def test_a_plain_completion_returns_the_body_unchanged_with_usage() -> None:
    body = (b'{"id":"x","object":"chat.completion","model":"upstream-model","choices":[{"index":0,'
            b'"message":{"role":"assistant","content":"hey"},"finish_reason":"stop"}],'
            b'"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}')
    t = MockTransport(lambda req: MockReply.json(body))
    done = await provider(t).complete(call(stream=False, stream_options={"include_usage": True}))
    assert done.body == body and done.text == "hey" and done.model == "upstream-model"
    assert done.usage is not None and done.usage.completion_tokens == 1
    sent = orjson.loads(t.requests[0].body)
    assert "stream" not in sent and "stream_options" not in sent


async def test_an_upstream_rate_limit_keeps_its_type_code_and_retry_after() -> None:
    err = b'{"error":{"message":"Slow down","type":"requests","code":"rate_limit_exceeded","param":null}}'
    t = MockTransport(lambda req: MockReply.json(err, 429, {"retry-after-ms": "1500"}))
    with pytest.raises(UpstreamRateLimited) as got:
        await provider(t).stream(call())
    e = got.value
    assert (e.status, e.code, e.retry_after, e.retryable) == (429, "rate_limit_exceeded", 1.5, True)
    assert t.responses[0].closed


@pytest.mark.parametrize(("status", "body"), [
    (401, b'{"error":{"message":"Incorrect API key provided: sk-upstr**********6789","code":"invalid_api_key"}}'),
    (500, f"Internal error for key {SECRET}".encode()),
])
async def test_upstream_errors_never_pass_the_upstream_key_on(status: int, body: bytes) -> None:
    t = MockTransport(lambda req: MockReply(status, {"content-type": "text/plain"}, [body]))
    with pytest.raises(SluiceError) as got:
        await provider(t).complete(call(stream=False))
    assert SECRET not in str(got.value) and SECRET not in repr(got.value.__dict__)
    if status == 401:
        assert not getattr(got.value, "retry_same_target", True)  # the same key would be refused again
    else:
        assert got.value.retryable


async def test_an_error_event_mid_stream_becomes_an_upstream_error() -> None:
    t = MockTransport(lambda req: MockReply.events([DELTAS[0], b'{"error":{"message":"overloaded"}}']))
    with pytest.raises(UpstreamError, match="overloaded"):
        await collect(provider(t), call())


async def test_a_stream_cut_before_its_finish_is_an_error_not_a_short_reply() -> None:
    t = MockTransport(lambda req: MockReply(200, {"content-type": "text/event-stream"}, [
        b"data: " + DELTAS[0] + b"\n\n", Fail(UpstreamError("the upstream closed the connection"))]))
    with pytest.raises(UpstreamError, match="closed the connection"):
        await collect(provider(t), call())
    t2 = MockTransport(lambda req: MockReply.events(DELTAS[:2], done=False))
    with pytest.raises(UpstreamError, match="before it finished"):
        await collect(provider(t2), call())


async def test_silence_longer_than_idle_is_the_idle_timeout() -> None:
    t = MockTransport(lambda req: MockReply(200, {"content-type": "text/event-stream"}, [
        b"data: " + DELTAS[0] + b"\n\n", Delay(3600.0)]))
    with pytest.raises(UpstreamTimeout, match="sent nothing"):
        await collect(provider(t), call())


async def test_a_json_answer_to_a_stream_request_is_refused_with_its_error() -> None:
    t = MockTransport(lambda req: MockReply.json(b'{"error":{"message":"streaming unsupported"}}'))
    with pytest.raises(UpstreamError, match="streaming unsupported"):
        await provider(t).stream(call())


async def test_an_upstream_that_never_answers_hits_first_byte() -> None:
    async def never(req: MockRequest) -> MockReply:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    t = MockTransport(never)
    c = call()
    c.timeouts = Timeouts(first_byte=0.01)
    with pytest.raises(UpstreamTimeout, match="did not answer"):
        await provider(t).stream(c)


async def test_chunks_of_one_read_say_more_follows_and_the_last_of_each_read_does_not() -> None:
    from sluice.sse import DONE, encode_data
    one_read = b"".join(encode_data(p) for p in DELTAS[:3])
    t = MockTransport(lambda req: MockReply(200, {"content-type": "text/event-stream"},
                                            [one_read, encode_data(DELTAS[3]) + encode_data(DONE)]))
    chunks = await collect(provider(t), call())
    assert [c.payload for c in chunks] == DELTAS
    assert [c.more for c in chunks] == [True, True, False, False]
    # an error reported in the middle of a read: the chunks before it come first, the last one not held
    bad = one_read + encode_data(b'{"error":{"message":"overloaded","type":"server_error"}}') + encode_data(DELTAS[3])
    t = MockTransport(lambda req: MockReply(200, {"content-type": "text/event-stream"}, [bad]))
    s = await provider(t).stream(call())
    got: list[Chunk] = []
    with pytest.raises(UpstreamError, match="overloaded"):
        async for ch in s:
            got.append(ch)
    await s.aclose()
    assert [c.payload for c in got] == DELTAS[:3] and [c.more for c in got] == [True, True, False]
