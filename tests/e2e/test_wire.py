"""The SSE wire as a raw HTTP/1.1 client sees it: headers and their timing, chunk framing, event bytes."""

from __future__ import annotations

import asyncio
import itertools
import json

from tests.e2e.conftest import SluiceServer
from tests.e2e.rawhttp import RawConn, chat_body, data_payloads, frames, post_chat
from tests.sim.openai_sim import Fault, ThreadedSim, fixture_payloads


def _strip_comments(body: bytes) -> bytes:
    return b"".join(f for f in frames(body) if not f.startswith(b":"))


async def test_stream_headers_no_length_no_compression(sluice: SluiceServer, api_key: str) -> None:
    conn, head = await post_chat(sluice.port, api_key, chat_body(), **{"Accept-Encoding": "gzip, deflate, br"})
    try:
        assert head.status == 200
        ctype = head.get("content-type") or ""
        assert ctype.split(";")[0].strip() == "text/event-stream"
        assert head.get("cache-control") == "no-cache"
        assert head.get("x-accel-buffering") == "no"
        assert head.get("content-length") is None
        assert head.get("transfer-encoding") == "chunked"
        assert head.get("content-encoding") in (None, "identity")
        assert (head.get("x-request-id") or "").startswith("req_")
        body = await conn.body(head)
        assert b"data: [DONE]\n\n" in body  # plain text, not gzip
    finally:
        conn.close()


async def test_every_chunk_is_whole_frames_done_once_then_terminating_chunk(sluice: SluiceServer,
                                                                             api_key: str) -> None:
    conn, head = await post_chat(sluice.port, api_key, chat_body(include_usage=True))
    try:
        assert head.status == 200
        chunks = []
        while (c := await conn.chunk()) is not None:
            chunks.append(c)
        # one write per event: every HTTP chunk holds whole frames
        assert all(c.endswith(b"\n\n") for c in chunks)
        body = b"".join(chunks)
        fs = frames(body)
        for f in fs:
            for line in f[:-2].split(b"\n"):
                assert line.startswith((b"data: ", b":")), line
                assert not line.startswith((b"event:", b"id:", b"retry:"))
            assert b"\r" not in f
        assert fs.count(b"data: [DONE]\n\n") == 1
        assert fs[-1] == b"data: [DONE]\n\n"  # and the terminating 0-chunk came right after it
        assert not body.startswith(b"\xef\xbb\xbf")
    finally:
        conn.close()


async def test_status_line_waits_for_the_upstream_and_upstream_500_is_a_real_http_error(
        sluice: SluiceServer, api_key: str, sim: ThreadedSim) -> None:
    sim.always(Fault.slow_first_byte(0.4, status=500, body=b'{"error":{"message":"boom","type":"server_error",'
                                                           b'"param":null,"code":null}}'))
    conn, head = await post_chat(sluice.port, api_key, chat_body())
    try:
        assert head.status == 502  # not a 200 stream carrying an error
        assert (head.get("content-type") or "").startswith("application/json")
        doc = json.loads(await conn.body(head))
        assert set(doc["error"]) == {"message", "type", "param", "code"}
        assert doc["error"]["type"] == "server_error"
        assert sim.requests and all(r.responded_at is not None for r in sim.requests)
        assert head.at >= max(r.responded_at for r in sim.requests if r.responded_at is not None)
    finally:
        conn.close()


async def test_status_line_is_sent_only_after_the_upstream_answered(sluice: SluiceServer, api_key: str,
                                                                     sim: ThreadedSim) -> None:
    sim.push(Fault.slow_first_byte(0.4))
    conn, head = await post_chat(sluice.port, api_key, chat_body())
    try:
        assert head.status == 200
        responded = sim.last.responded_at
        assert responded is not None and head.at >= responded
        assert data_payloads(await conn.body(head))[-1] == b"[DONE]"
    finally:
        conn.close()


async def test_first_event_arrives_while_the_upstream_is_still_sleeping(sluice: SluiceServer, api_key: str,
                                                                         sim: ThreadedSim) -> None:
    sim.push(Fault(pause_after={2: 1.5}))
    conn, head = await post_chat(sluice.port, api_key, chat_body())
    try:
        assert head.status == 200
        got = b""
        while got.count(b"\n\n") < 2 or got.startswith(b":"):
            c = await conn.chunk()
            assert c is not None
            if not c.startswith(b":"):
                got += c
        rec = sim.last
        assert rec.events_sent == 2 and not rec.completed  # the upstream has not finished
        rest = await conn.body(head)
        assert _strip_comments(got + rest).endswith(b"data: [DONE]\n\n")
    finally:
        conn.close()


async def test_heartbeats_while_the_upstream_is_silent(sluice: SluiceServer, api_key: str,
                                                       sim: ThreadedSim) -> None:
    # headers at once, then 1.2 s of silence before the first event; then a silent 1.2 s mid-stream
    sim.push(Fault.slow_first_chunk(1.2, pause_after={3: 1.2}))
    conn, head = await post_chat(sluice.port, api_key, chat_body())
    try:
        assert head.status == 200
        fs = frames(await conn.body(head))
        first_data = next(i for i, f in enumerate(fs) if f.startswith(b"data: "))
        assert first_data >= 1 and all(f == b": keep-alive\n\n" for f in fs[:first_data])
        data_idx = [i for i, f in enumerate(fs) if f.startswith(b"data: ")]
        assert any(b - a > 1 for a, b in itertools.pairwise(data_idx)), "no beat mid-stream"
        assert all(f.startswith(b"data: ") or f == b": keep-alive\n\n" for f in fs)
        assert fs[-1] == b"data: [DONE]\n\n"
    finally:
        conn.close()


async def test_unchanged_events_are_forwarded_byte_for_byte_with_usage_when_asked(
        sluice: SluiceServer, api_key: str) -> None:
    conn, head = await post_chat(sluice.port, api_key, chat_body(include_usage=True))
    try:
        assert data_payloads(await conn.body(head)) == fixture_payloads("text.sse")
    finally:
        conn.close()


async def test_usage_chunk_is_stripped_when_not_asked(sluice: SluiceServer, api_key: str,
                                                      sim: ThreadedSim) -> None:
    for include in (None, False):
        conn, head = await post_chat(sluice.port, api_key, chat_body(include_usage=include))
        try:
            want = [p for p in fixture_payloads("text.sse") if b'"choices":[]' not in p]
            assert data_payloads(await conn.body(head)) == want
        finally:
            conn.close()
        # Sluice still asked the upstream for usage (for its ledger)
        assert sim.last.body["stream_options"]["include_usage"] is True


async def test_tool_call_stream_is_forwarded_byte_for_byte(sluice: SluiceServer, api_key: str) -> None:
    conn, head = await post_chat(sluice.port, api_key, chat_body("tools", include_usage=True))
    try:
        assert data_payloads(await conn.body(head)) == fixture_payloads("tool_calls.sse")
    finally:
        conn.close()


async def test_crlf_upstream_is_re_emitted_with_lf(sluice: SluiceServer, api_key: str) -> None:
    conn, head = await post_chat(sluice.port, api_key, chat_body("crlf", include_usage=True))
    try:
        body = await conn.body(head)
        assert b"\r" not in body
        assert data_payloads(body) == fixture_payloads("crlf.sse")
    finally:
        conn.close()


async def test_usage_on_the_finish_chunk(sluice: SluiceServer, api_key: str) -> None:
    want = fixture_payloads("usage_on_finish.sse")
    conn, head = await post_chat(sluice.port, api_key, chat_body("usage-on-finish", include_usage=True))
    try:
        assert data_payloads(await conn.body(head)) == want  # asked: forwarded untouched
    finally:
        conn.close()
    conn, head = await post_chat(sluice.port, api_key, chat_body("usage-on-finish"))
    try:
        got = data_payloads(await conn.body(head))
    finally:
        conn.close()
    assert got[:-2] == want[:-2]  # everything before the finish chunk byte-identical
    finish = json.loads(got[-2])
    assert "usage" not in finish  # the usage field is removed ...
    assert finish["choices"][0]["finish_reason"] == "stop"  # ... the choices remain
    assert finish["id"] == json.loads(want[-2])["id"]
    assert got[-1] == b"[DONE]"


async def test_include_usage_with_an_upstream_that_reports_none(sluice: SluiceServer, api_key: str) -> None:
    conn, head = await post_chat(sluice.port, api_key, chat_body("gpt-4o-mini", include_usage=True))
    try:
        got = data_payloads(await conn.body(head))
    finally:
        conn.close()
    assert got[:-2] == fixture_payloads("no_usage.sse")[:-1]
    last = json.loads(got[-2])
    assert last["choices"] == [] and last["usage"]["total_tokens"] >= 1
    assert got[-1] == b"[DONE]"


async def _assert_ends_with_one_error_event(sluice: SluiceServer, api_key: str, after: int) -> bytes:
    conn, head = await post_chat(sluice.port, api_key, chat_body())
    try:
        assert head.status == 200
        body = await conn.body(head)  # the chunked body is terminated properly
        assert await conn.eof()
    finally:
        conn.close()
    fs = [f for f in frames(body) if not f.startswith(b":")]
    assert b"data: [DONE]\n\n" not in fs
    assert [f[6:-2] for f in fs[:-1]] == fixture_payloads("text.sse")[:after]
    err = json.loads(fs[-1][6:-2])
    assert set(err) == {"error"} and set(err["error"]) == {"message", "type", "param", "code"}
    assert sum(1 for f in fs if b'"error"' in f) == 1
    return fs[-1]


async def test_mid_stream_drop_ends_with_an_error_event(sluice: SluiceServer, api_key: str,
                                                        sim: ThreadedSim) -> None:
    sim.push(Fault.mid_stream_drop(after=3))
    await _assert_ends_with_one_error_event(sluice, api_key, 3)


async def test_eof_without_finish_ends_with_an_error_event(sluice: SluiceServer, api_key: str,
                                                           sim: ThreadedSim) -> None:
    sim.push(Fault.eof_without_finish(after=4))
    await _assert_ends_with_one_error_event(sluice, api_key, 4)


async def test_error_payload_mid_stream_ends_with_an_error_event(sluice: SluiceServer, api_key: str,
                                                                 sim: ThreadedSim) -> None:
    sim.push(Fault.error_event(after=2, error_then_done=True))
    frame = await _assert_ends_with_one_error_event(sluice, api_key, 2)
    assert b"The server had an error processing your request" in frame


async def test_concurrent_raw_streams_do_not_mix(sluice: SluiceServer, api_key: str) -> None:
    async def one(model: str) -> list[bytes]:
        conn, head = await post_chat(sluice.port, api_key, chat_body(model, include_usage=True))
        try:
            return data_payloads(await conn.body(head))
        finally:
            conn.close()
    results = await asyncio.gather(*(one("tools" if i % 2 else "gpt-4o") for i in range(10)))
    for i, got in enumerate(results):
        assert got == fixture_payloads("tool_calls.sse" if i % 2 else "text.sse")


async def test_messages_stream_heartbeats_are_anthropic_pings(sluice: SluiceServer, api_key: str,
                                                              sim: ThreadedSim) -> None:
    # Claude Code ignores SSE comments: a silent /v1/messages stream must beat with `event: ping`
    sim.push(Fault.slow_first_chunk(1.2, pause_after={3: 1.2}))
    body = json.dumps({"model": "gpt-4o", "max_tokens": 64, "stream": True,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    conn = await RawConn.open(sluice.port)
    try:
        await conn.send("POST", "/v1/messages", body=body,
                        headers={"x-api-key": api_key, "Content-Type": "application/json"})
        head = await conn.head()
        assert head.status == 200
        fs = frames(await conn.body(head))
        ping = b'event: ping\ndata: {"type": "ping"}\n\n'
        names = [f.split(b"\n", 1)[0] for f in fs]
        first_event = next(i for i, f in enumerate(fs) if f != ping)
        assert first_event >= 1 and names[first_event] == b"event: message_start"
        assert not any(f.startswith(b":") for f in fs)  # no comments on this dialect
        real = [i for i, f in enumerate(fs) if f != ping]
        assert any(b - a > 1 for a, b in itertools.pairwise(real)), "no ping mid-stream"
        assert names[-1] == b"event: message_stop"
    finally:
        conn.close()
