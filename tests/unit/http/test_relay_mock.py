"""The relay end to end in process: `create_app(transport=MockTransport)` served on loopback, driven by the
official `openai` client. Streams, failover between targets, usage in the reply and the ledger, and
upstream errors as the client sees them (never with the upstream's key)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import openai
import orjson
import pytest

from sluice.errors import UpstreamUnavailable
from sluice.upstream.mock import Delay, Fail, MockReply
from tests.inproc import UPSTREAM_KEY, Gateway, gateway

MSGS: list[dict[str, str]] = [{"role": "user", "content": "hi"}]


def chunk(content: str | None = None, finish: str | None = None, usage: dict[str, int] | None = None) -> bytes:
    choices = [] if usage else [{"index": 0, "delta": {} if content is None else {"content": content},
                                 "finish_reason": finish}]
    doc: dict[str, object] = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                              "model": "up", "choices": choices}
    if usage:
        doc["usage"] = usage
    return orjson.dumps(doc)


USAGE = {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
STREAM = [chunk("Hel"), chunk("lo"), chunk(finish="stop"), chunk(usage=USAGE)]
REPLY = orjson.dumps({"id": "chatcmpl-2", "object": "chat.completion", "created": 1, "model": "up",
                      "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"},
                                   "finish_reason": "stop"}], "usage": USAGE})


@pytest.fixture
def replies() -> dict[str, list[MockReply]]:
    """Host -> the replies it gives, in order (the last one repeats)."""
    return {}


@pytest.fixture
async def gw(tmp_path: Path, replies: dict[str, list[MockReply]]) -> AsyncIterator[Gateway]:
    async with gateway(tmp_path, replies) as g:
        yield g


async def test_a_stream_arrives_whole_with_usage_and_is_settled_once(
        gw: Gateway, replies: dict[str, list[MockReply]]) -> None:
    replies["a.test"] = [MockReply.events(STREAM)]
    stream = await gw.client.chat.completions.create(model="m", messages=MSGS, stream=True,  # type: ignore[arg-type]
                                                     stream_options={"include_usage": True})
    got = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in got if c.choices) == "Hello"
    assert got[-1].usage is not None and got[-1].usage.total_tokens == 14
    (req,) = gw.transport.requests
    assert orjson.loads(req.body)["model"] == "up-a"
    assert req.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert gw.transport.responses[0].closed


async def test_usage_the_client_did_not_ask_for_is_not_sent_but_is_recorded(
        gw: Gateway, replies: dict[str, list[MockReply]]) -> None:
    replies["a.test"] = [MockReply.events(STREAM)]
    stream = await gw.client.chat.completions.create(model="m", messages=MSGS, stream=True)  # type: ignore[arg-type]
    got = [c async for c in stream]
    assert all(c.usage is None for c in got) and all(c.choices for c in got)
    # the upstream was asked for usage all the same
    assert orjson.loads(gw.transport.requests[0].body)["stream_options"] == {"include_usage": True}


async def test_a_failing_first_target_fails_over_to_the_next_before_the_first_byte(
        gw: Gateway, replies: dict[str, list[MockReply]]) -> None:
    replies["a.test"] = [MockReply.json(b'{"error":{"message":"overloaded"}}', 503)]
    replies["b.test"] = [MockReply.json(REPLY)]
    done = await gw.client.chat.completions.create(model="m", messages=MSGS)  # type: ignore[arg-type]
    assert done.choices[0].message.content == "Hello" and done.usage is not None
    assert [r.url.split("/")[2] for r in gw.transport.requests] == ["a.test", "b.test"]


async def test_a_lone_target_is_retried_once_for_a_transient_failure(
        gw: Gateway, replies: dict[str, list[MockReply]]) -> None:
    replies["a.test"] = [MockReply.json(b'{"error":{"message":"busy"}}', 502), MockReply.events(STREAM)]
    stream = await gw.client.chat.completions.create(model="solo", messages=MSGS, stream=True)  # type: ignore[arg-type]
    assert "".join(c.choices[0].delta.content or "" for c in [x async for x in stream] if c.choices) == "Hello"
    assert len(gw.transport.requests) == 2


async def test_the_upstream_refusing_the_gateways_key_is_not_retried_there_and_never_shows_it(
        gw: Gateway, replies: dict[str, list[MockReply]]) -> None:
    replies["a.test"] = [MockReply.json(f'{{"error":{{"message":"bad key {UPSTREAM_KEY}"}}}}'.encode(), 401)]
    with pytest.raises(openai.APIStatusError) as got:
        await gw.client.chat.completions.create(model="solo", messages=MSGS)  # type: ignore[arg-type]
    assert len(gw.transport.requests) == 1  # the same key would be refused again
    assert UPSTREAM_KEY not in got.value.response.text
    assert got.value.response.headers["x-request-id"].startswith("req_")


async def test_an_upstream_rate_limit_reaches_the_client_as_one(
        gw: Gateway, replies: dict[str, list[MockReply]]) -> None:
    replies["a.test"] = [MockReply.json(b'{"error":{"message":"slow down","code":"rate_limit_exceeded"}}', 429,
                                        {"retry-after": "30"})]
    with pytest.raises(openai.RateLimitError) as got:
        await gw.client.chat.completions.create(model="solo", messages=MSGS)  # type: ignore[arg-type]
    assert got.value.code == "rate_limit_exceeded"
    assert len(gw.transport.requests) == 1  # 30 s is longer than failover waits for


async def test_a_stream_cut_after_the_first_byte_ends_in_an_error_event_not_a_retry(
        gw: Gateway, replies: dict[str, list[MockReply]]) -> None:
    replies["a.test"] = [MockReply(200, {"content-type": "text/event-stream"}, [
        b"data: " + STREAM[0] + b"\n\n", Delay(0.0), Fail(_cut())])]
    stream = await gw.client.chat.completions.create(model="m", messages=MSGS, stream=True)  # type: ignore[arg-type]
    seen: list[str] = []
    with pytest.raises(openai.APIError):
        async for c in stream:
            seen.append(c.choices[0].delta.content or "")
    assert seen == ["Hel"] and len(gw.transport.requests) == 1


async def test_the_ledger_has_one_record_per_request_with_the_upstreams_usage(tmp_path: Path) -> None:
    replies = {"a.test": [MockReply.json(b'{"error":{"message":"busy"}}', 503)], "b.test": [MockReply.events(STREAM)]}
    async with gateway(tmp_path, replies) as gw:
        stream = await gw.client.chat.completions.create(model="m", messages=MSGS,  # type: ignore[arg-type]
                                                         stream=True)
        rid = stream.response.headers["x-request-id"]
        async for _ in stream:
            pass
    (rec,) = await gw.ledger()
    assert (rec.request_id, rec.model, rec.provider, rec.upstream_model, rec.status) == (rid, "m", "b", "up-b", 200)
    assert (rec.prompt_tokens, rec.completion_tokens, rec.usage_source) == (11, 3, "reported")
    assert rec.stream and rec.attempts == 2


def _cut() -> Exception:
    return UpstreamUnavailable("the upstream closed the connection")
