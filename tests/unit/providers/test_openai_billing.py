"""What an OpenAI-compatible stream bills is what reading every chunk's text as it passed would bill, now
that the text is read only when counted: the usage reported, else the same text counted (tool calls,
several choices, a stream cut by an error event or by its end, one longer than the bytes a stream keeps
unread), the same bytes to the client, whatever the reads' cuts."""

from __future__ import annotations

import itertools
import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.clock import SYSTEM_CLOCK
from sluice.config import ProviderConfig
from sluice.errors import SluiceError
from sluice.metering.record import DEFERRED_BYTES, Stats
from sluice.providers.base import Call
from sluice.providers.openai_compat import OpenAICompatProvider
from sluice.relay import RelayStream
from sluice.schema.chat import ChatRequest
from sluice.schema.chunk import text_of
from sluice.schema.usage import Usage
from sluice.sse import DONE_FRAME, encode_data
from sluice.upstream import Timeouts
from sluice.upstream.mock import MockReply, MockTransport
from tests.unit.schema.test_chunk import CHUNK, spell


class Pieces:
    """A counter that keeps what it was fed: the same pieces counted means the same count, by any counter."""

    method = "pieces"

    def __init__(self) -> None:
        self.fed: list[str] = []

    def feed(self, text: str) -> None:
        if text:
            self.fed.append(text)

    @property
    def tokens(self) -> int:
        return len(self.fed)


def finished(obj: dict[str, Any]) -> bool:
    return any(isinstance(c, dict) and bool(c.get("finish_reason")) for c in obj.get("choices") or ())


def parsing_every_chunk(payloads: list[bytes], done: bool) -> tuple[Usage | None, list[str], bool, list[bytes]]:
    """What reading the stream by parsing each chunk gives: (usage, texts counted, failed, payloads sent)."""
    usage, texts, sent, finish = None, [], [], False
    for p in payloads:
        obj = orjson.loads(p)
        if obj.get("error"):
            return usage, texts, True, sent
        if obj.get("usage"):
            usage = Usage.from_openai(obj["usage"]) or usage
        finish = finish or finished(obj)
        texts += [text_of(obj)] if text_of(obj) else []
        sent.append(p)
    return usage, texts, not done and not finish, sent


async def relayed(payloads: list[bytes], done: bool, cuts: list[int]) -> tuple[Stats, bool, list[bytes]]:
    """The stream through the provider and the relay's metering loop, its bytes cut at `cuts`."""
    body = b"".join(map(encode_data, payloads)) + (DONE_FRAME if done else b"")
    edges = sorted({0, len(body), *(c % (len(body) + 1) for c in cuts)})
    reply = MockReply(200, {"content-type": "text/event-stream"}, [body[a:b] for a, b in itertools.pairwise(edges)])
    prov = OpenAICompatProvider(ProviderConfig(name="up", kind="openai", base_url="http://up.test/v1"),
                                MockTransport(lambda req: reply))
    req = ChatRequest({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True})
    call = Call(req, "up", "req_1", Timeouts(first_byte=5.0, idle=5.0))

    async def settle(code: str | None) -> Any:
        return None

    stats = Stats(Pieces())
    rs = RelayStream(await prov.stream(call), stats, SYSTEM_CLOCK, settle, False, [], False)
    out: list[bytes] = []
    failed = False
    try:
        async for piece in rs.written(lambda c: encode_data(c.payload)):
            out.append(piece)
    except SluiceError:
        failed = True
    finally:
        await rs.close()
    return stats, failed, out


def billed_alike(payloads: list[bytes], done: bool, stats: Stats, failed: bool, out: list[bytes]) -> None:
    usage, texts, should_fail, sent = parsing_every_chunk(payloads, done)
    assert failed == should_fail
    assert b"".join(out) == b"".join(map(encode_data, sent))
    assert stats.usage == usage
    if usage is None:  # the count is what the record bills: the same pieces, so the same tokens by any counter
        counter = stats.counted()
        assert isinstance(counter, Pieces) and sorted(counter.fed) == sorted(texts)


@settings(max_examples=200, deadline=None)
@given(st.lists(CHUNK, max_size=8), st.integers(0, 2), st.booleans(), st.lists(st.integers(0, 10**6), max_size=6))
async def test_a_stream_bills_what_parsing_every_chunk_bills(docs: list[dict[str, Any]], how: int, done: bool,
                                                             cuts: list[int]) -> None:
    payloads = [spell(d, how) for d in docs]
    billed_alike(payloads, done, *await relayed(payloads, done, cuts))


def _delta(text: str, n: int = 1) -> bytes:
    return orjson.dumps({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "up", "choices": [
        {"index": i, "delta": {"content": text}, "logprobs": None, "finish_reason": None} for i in range(n)],
        "usage": None})


FINISH = orjson.dumps({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None})
USAGE = orjson.dumps({"id": "c", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7,
                                                           "total_tokens": 12}})


@pytest.mark.parametrize("usage", [True, False])
@pytest.mark.parametrize("how", [0, 1])
async def test_a_stream_longer_than_what_is_kept_unread_counts_every_chunk(usage: bool, how: int) -> None:
    payloads = [spell(orjson.loads(_delta(f"piece {i} é ", 1 + i % 3)), how) for i in range(400)]
    assert sum(map(len, payloads)) > 4 * DEFERRED_BYTES
    payloads += [FINISH] + ([USAGE] if usage else [])
    stats, failed, out = await relayed(payloads, True, [1000, 5000, 70001])
    billed_alike(payloads, True, stats, failed, out)
    assert stats.deferred_size <= DEFERRED_BYTES  # what a stream keeps unread stays bounded
    if usage:
        assert stats.deferred == []  # once usage is reported, nothing is kept for a count no one asks for


async def test_an_error_event_mid_stream_bills_the_text_before_it() -> None:
    payloads = [_delta("a"), _delta("bc", 2), orjson.dumps({"error": {"message": "overloaded"}}), _delta("z")]
    stats, failed, out = await relayed(payloads, False, [])
    billed_alike(payloads, False, stats, failed, out)
    assert failed and sorted(stats.counted().fed) == ["a", "bcbc"]  # type: ignore[union-attr]


async def test_tool_calls_and_spaced_json_bill_their_arguments() -> None:
    call = {"index": 0, "id": "t1", "function": {"name": "get", "arguments": '{"q": "\\"x\\""}'}}
    payloads = [json.dumps({"choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}],
                            "usage": None}).encode(), FINISH]
    stats, failed, out = await relayed(payloads, True, [7])
    billed_alike(payloads, True, stats, failed, out)
    assert stats.counted().fed == ['get{"q": "\\"x\\""}']  # type: ignore[union-attr]
