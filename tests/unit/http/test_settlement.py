"""Every way a relay request can end settles it exactly once, with the outcome its scope saw: a served
stream, an upstream error before any output, an error after output, the client leaving (before and after
the first byte), and the shutdown grace running out. In process through `MockTransport`; "once" is read
from the metrics every settlement adds to (a second one would count twice and take the in-flight gauge
below where it started), the record from the ledger; times come from the injected clock."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import openai
import orjson
import pytest

from sluice.clock import ManualClock
from sluice.errors import UpstreamUnavailable
from sluice.observability import metrics
from sluice.storage.base import LedgerRecord
from sluice.upstream.mock import Delay, Fail, MockReply, MockRequest
from tests.inproc import Gateway, gateway

MSGS: list[dict[str, str]] = [{"role": "user", "content": "hi"}]
HOLD = Delay(30.0)  # longer than any test runs; the request is cancelled while it waits


def chunk(content: str | None = None, usage: dict[str, int] | None = None) -> bytes:
    choices = [] if usage else [{"index": 0, "delta": {"content": content}, "finish_reason": None}]
    return orjson.dumps({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "up",
                         "choices": choices, **({"usage": usage} if usage else {})})


USAGE = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}


def _sample(name: str) -> float:
    return sum(s.value for m in metrics.REGISTRY.collect() for s in m.samples if s.name == name)


class Counted:
    """The settlement-side metrics before a test, to compare with after it."""

    def __init__(self) -> None:
        self.in_flight = _sample("sluice_requests_in_flight")
        self.requests = _sample("sluice_requests_total")
        self.streams = _sample("sluice_streams_open")

    def settled_once(self) -> None:
        assert _sample("sluice_requests_total") == self.requests + 1
        assert _sample("sluice_requests_in_flight") == self.in_flight
        assert _sample("sluice_streams_open") == self.streams


@pytest.fixture
def counted() -> Iterator[Counted]:
    yield Counted()


async def only_record(gw: Gateway) -> LedgerRecord:
    (rec,) = await gw.ledger()
    return rec


def stream(model: str = "m") -> object:
    return {"model": model, "messages": MSGS, "stream": True}


async def test_a_served_stream(tmp_path: Path, counted: Counted) -> None:
    async with gateway(tmp_path, {"a.test": [MockReply.events([chunk("Hel"), chunk("lo"), chunk(usage=USAGE)])]}) as gw:
        got = [c async for c in await gw.client.chat.completions.create(**stream())]  # type: ignore[call-overload]
        assert "".join(c.choices[0].delta.content for c in got) == "Hello"
    rec = await only_record(gw)
    assert (rec.status, rec.error_code, rec.disconnected, rec.provider) == (200, None, False, "a")
    assert (rec.prompt_tokens, rec.completion_tokens, rec.usage_source) == (7, 2, "reported")
    counted.settled_once()


async def test_an_upstream_error_before_any_output(tmp_path: Path, counted: Counted) -> None:
    down = MockReply.json(b'{"error":{"message":"overloaded"}}', 503)
    async with gateway(tmp_path, {"a.test": [down], "b.test": [down]}) as gw:
        with pytest.raises(openai.APIStatusError) as got:
            await gw.client.chat.completions.create(**stream())  # type: ignore[call-overload]
    rec = await only_record(gw)
    assert rec.status == got.value.status_code and rec.error_code == got.value.code
    assert (rec.provider, rec.attempts, rec.usage_source, rec.disconnected) == ("b", 2, "none", False)
    counted.settled_once()


async def test_an_error_after_output(tmp_path: Path, counted: Counted) -> None:
    cut = MockReply(200, {"content-type": "text/event-stream"},
                    [b"data: " + chunk("Hel") + b"\n\n", Fail(UpstreamUnavailable("the upstream closed"))])
    async with gateway(tmp_path, {"a.test": [cut]}) as gw:
        seen: list[str] = []
        with pytest.raises(openai.APIError):
            async for c in await gw.client.chat.completions.create(**stream("solo")):  # type: ignore[call-overload]
                seen.append(c.choices[0].delta.content)
        assert seen == ["Hel"]
    rec = await only_record(gw)
    assert (rec.status, rec.error_code, rec.usage_source) == (200, "upstream_unavailable", "estimated")
    assert rec.attempts == 1 and not rec.disconnected
    counted.settled_once()


async def test_the_client_leaving_mid_stream(tmp_path: Path, counted: Counted) -> None:
    held = MockReply(200, {"content-type": "text/event-stream"}, [b"data: " + chunk("Hel") + b"\n\n", HOLD])
    async with gateway(tmp_path, {"a.test": [held]}) as gw:
        s = await gw.client.chat.completions.create(**stream())  # type: ignore[call-overload]
        first = await s.__anext__()
        assert first.choices[0].delta.content == "Hel"
        await s.close()
    rec = await only_record(gw)
    assert (rec.status, rec.error_code, rec.disconnected) == (200, None, True)
    assert gw.transport.responses[0].closed
    counted.settled_once()


async def test_the_client_leaving_before_the_first_byte(tmp_path: Path, counted: Counted) -> None:
    arrived = asyncio.Event()

    async def handler(req: MockRequest) -> MockReply:
        arrived.set()
        await asyncio.Event().wait()  # never answers; cancelled with the request
        raise AssertionError("unreachable")

    async with gateway(tmp_path, {}, handler=handler) as gw:
        call = asyncio.create_task(gw.client.chat.completions.create(**stream()))  # type: ignore[call-overload]
        await arrived.wait()
        call.cancel()  # the client closes its connection
        with pytest.raises(asyncio.CancelledError):
            await call
    rec = await only_record(gw)
    assert (rec.status, rec.error_code, rec.disconnected, rec.provider) == (499, None, True, "a")
    counted.settled_once()


async def test_the_shutdown_grace_running_out_mid_stream(tmp_path: Path, counted: Counted) -> None:
    held = MockReply(200, {"content-type": "text/event-stream"}, [b"data: " + chunk("Hel") + b"\n\n", HOLD])
    async with gateway(tmp_path, {"a.test": [held]}) as gw:
        s = await gw.client.chat.completions.create(**stream())  # type: ignore[call-overload]
        assert (await s.__anext__()).choices[0].delta.content == "Hel"
        assert gw.app.drain.cut() == 1
        with pytest.raises(openai.APIError, match="shutting down"):
            await s.__anext__()
    rec = await only_record(gw)
    assert (rec.status, rec.error_code, rec.disconnected) == (200, "server_shutdown", False)
    counted.settled_once()


async def test_the_shutdown_grace_running_out_before_the_answer(tmp_path: Path, counted: Counted) -> None:
    arrived = asyncio.Event()

    async def handler(req: MockRequest) -> MockReply:
        arrived.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async with gateway(tmp_path, {}, handler=handler) as gw:
        call = asyncio.create_task(gw.client.chat.completions.create(model="m", messages=MSGS))  # type: ignore[arg-type]
        await arrived.wait()
        assert gw.app.drain.cut() == 1
        with pytest.raises(openai.APIStatusError) as got:
            await call
        assert (got.value.status_code, got.value.code) == (503, "server_shutdown")
    rec = await only_record(gw)
    assert (rec.status, rec.error_code, rec.disconnected, rec.stream) == (503, "server_shutdown", False, False)
    counted.settled_once()


async def test_a_plain_reply_is_settled_before_it_is_sent_and_says_its_charge(tmp_path: Path,
                                                                              counted: Counted) -> None:
    reply = MockReply.json(orjson.dumps({"id": "c2", "object": "chat.completion", "created": 1, "model": "up",
                                         "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                                      "finish_reason": "stop"}], "usage": USAGE}))
    async with gateway(tmp_path, {"a.test": [reply]}) as gw:
        raw = await gw.client.chat.completions.with_raw_response.create(model="m", messages=MSGS)  # type: ignore[arg-type]
        assert raw.headers["x-sluice-usage-source"] == "reported"
        assert raw.headers["x-sluice-provider"] == "a" and raw.headers["x-sluice-upstream-model"] == "up-a"
    rec = await only_record(gw)
    assert (rec.status, rec.stream, rec.prompt_tokens, rec.completion_tokens) == (200, False, 7, 2)
    counted.settled_once()


async def test_the_records_times_come_from_the_injected_clock(tmp_path: Path) -> None:
    clock = ManualClock()
    wall = clock.time()

    async def handler(req: MockRequest) -> MockReply:
        clock.advance(0.25)  # the upstream takes a quarter of a second to answer
        return MockReply.events([chunk("Hel"), chunk(usage=USAGE)])

    async with gateway(tmp_path, {}, handler=handler, clock=clock) as gw:
        async for _ in await gw.client.chat.completions.create(**stream()):  # type: ignore[call-overload]
            pass
    rec = await only_record(gw)
    assert (rec.ttft_ms, rec.duration_ms, rec.created_at) == (250.0, 250.0, wall)
