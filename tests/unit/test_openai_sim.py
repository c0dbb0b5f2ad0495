"""The simulator itself, used in the test's own loop: it replays fixtures byte for byte and faults as told."""

from __future__ import annotations

import aiohttp
import pytest

from tests.sim.openai_sim import Fault, OpenAISim, fixture_bytes


async def _post(sim: OpenAISim, body: dict[str, object]) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as s, s.post(sim.base_url + "/chat/completions", json=body) as r:
        return r.status, await r.read()


async def test_replays_fixture_bytes_and_records_requests() -> None:
    async with OpenAISim() as sim:
        status, body = await _post(sim, {"model": "fx-crlf", "stream": True, "messages": []})
        assert status == 200 and body == fixture_bytes("crlf.sse")
        status, body = await _post(sim, {"model": "x", "messages": []})
        assert status == 200 and body == fixture_bytes("text.json")
        assert [r.body["model"] for r in sim.requests] == ["fx-crlf", "x"]
        assert all(r.completed and not r.client_closed for r in sim.requests)


async def test_queued_and_sticky_faults() -> None:
    async with OpenAISim() as sim:
        sim.push(Fault.rate_limited(retry_after=3))
        sim.always(Fault.http_error(503))
        assert (await _post(sim, {"model": "fx-text", "stream": True}))[0] == 429
        assert (await _post(sim, {"model": "fx-text", "stream": True}))[0] == 503
        assert (await _post(sim, {"model": "fx-text", "stream": True}))[0] == 503
        sim.reset()
        assert (await _post(sim, {"model": "fx-text", "stream": True}))[0] == 200


async def test_mid_stream_drop_is_a_truncated_body() -> None:
    async with OpenAISim() as sim:
        sim.push(Fault.mid_stream_drop(after=2))
        with pytest.raises(aiohttp.ClientPayloadError):
            await _post(sim, {"model": "fx-text", "stream": True})
        assert sim.last.events_sent == 2 and not sim.last.client_closed
