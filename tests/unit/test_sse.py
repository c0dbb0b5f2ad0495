"""The SSE codec, tested by fragmentation: the same bytes whole, in 1-byte pieces and in random pieces,
with LF, CR and CRLF line endings, multi-byte UTF-8 split across reads, comments, `event:`, BOM, U+2028."""

from __future__ import annotations

import itertools
import json
import random
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.sse import (
    DONE_FRAME,
    KEEPALIVE_FRAME,
    SSEDecoder,
    SSEEvent,
    SSELimitExceeded,
    encode_comment,
    encode_data,
    encode_event,
)
from tests.sim.openai_sim import fixture_bytes, fixture_payloads


def decode(pieces: list[bytes]) -> tuple[list[SSEEvent], SSEDecoder]:
    dec = SSEDecoder()
    out: list[SSEEvent] = []
    for p in pieces:
        out.extend(dec.feed(p))
    return out, dec


def one_byte(raw: bytes) -> list[bytes]:
    return [raw[i:i + 1] for i in range(len(raw))]


def random_cuts(raw: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(raw)), min(len(raw) - 1, rng.randint(1, 40)))) if len(raw) > 1 else []
    edges = [0, *cuts, len(raw)]
    return [raw[a:b] for a, b in itertools.pairwise(edges)]


def splittings(raw: bytes) -> list[list[bytes]]:
    rng = random.Random(20240926)
    return [[raw], one_byte(raw), *(random_cuts(raw, rng) for _ in range(25))]


def with_endings(raw_lf: bytes, eol: bytes) -> bytes:
    return raw_lf.replace(b"\n", eol)


PAYLOADS = [
    '{"choices":[{"delta":{"content":"你好，世界"}}]}',
    '{"choices":[{"delta":{"content":"emoji 🌍🧪 and é"}}]}',
    '{"choices":[{"delta":{"content":"line\u2028separator\u2029para"}}]}',
    '{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}',
]


def stream_lf() -> bytes:
    return b"".join(b"data: " + p.encode() + b"\n\n" for p in PAYLOADS) + DONE_FRAME


EXPECTED = [*(p.encode() for p in PAYLOADS), b"[DONE]"]


@pytest.mark.parametrize("eol", [b"\n", b"\r", b"\r\n"], ids=["LF", "CR", "CRLF"])
def test_every_splitting_and_line_ending_gives_the_same_events(eol: bytes) -> None:
    raw = with_endings(stream_lf(), eol)
    for pieces in splittings(raw):
        events, dec = decode(pieces)
        assert [e.data for e in events] == EXPECTED, pieces[:3]
        assert all(e.event is None for e in events)
        assert not dec.pending


@pytest.mark.parametrize("name", ["text.sse", "tool_calls.sse", "crlf.sse", "usage_on_finish.sse"])
def test_recorded_fixtures_decode_identically_however_cut(name: str) -> None:
    raw = fixture_bytes(name)
    want = fixture_payloads(name)
    for pieces in splittings(raw):
        events, dec = decode(pieces)
        assert [e.data for e in events] == want
        assert not dec.pending
    for payload in want[:-1]:
        json.loads(payload)  # each payload is one whole JSON document


def test_cr_at_end_of_one_read_and_lf_at_start_of_next_is_one_line_ending() -> None:
    events, dec = decode([b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"])
    assert [e.data for e in events] == [b"a\nb"]
    assert not dec.pending
    # and a lone CR followed by CRLF is two line endings: the event dispatches
    events, _ = decode([b"data: x\r", b"\r\n", b"data: y\r\n\r\n"])
    assert [e.data for e in events] == [b"x", b"y"]


def test_mixed_line_endings_in_one_stream() -> None:
    raw = b"data: 1\r\n\r\ndata: 2\n\ndata: 3\r\rdata: 4\r\n\n"
    for pieces in splittings(raw):
        events, _ = decode(pieces)
        assert [e.data for e in events] == [b"1", b"2", b"3", b"4"]


def test_multibyte_utf8_split_inside_a_character() -> None:
    payload = '{"c":"中文🌍"}'.encode()
    raw = b"data: " + payload + b"\n\n"
    start = raw.index("🌍".encode())
    for cut in range(start + 1, start + 4):  # inside the 4-byte emoji
        events, _ = decode([raw[:cut], raw[cut:]])
        assert [e.data for e in events] == [payload]
        assert json.loads(events[0].data)["c"] == "中文🌍"


def test_u2028_inside_json_does_not_split_lines() -> None:
    payload = json.dumps({"content": "a\u2028b\u2029c\x85d"}, ensure_ascii=False).encode()
    events, _ = decode(one_byte(b"data: " + payload + b"\n\n"))
    assert len(events) == 1
    assert json.loads(events[0].data)["content"] == "a\u2028b\u2029c\x85d"


def test_comments_are_ignored_and_do_not_dispatch() -> None:
    raw = b": keep-alive\n\n: OPENROUTER PROCESSING\n\ndata: {\"a\":1}\n: inside\ndata: {\"b\":2}\n\n"
    for pieces in splittings(raw):
        events, _ = decode(pieces)
        assert [e.data for e in events] == [b'{"a":1}\n{"b":2}']


def test_event_lines_name_the_event() -> None:
    raw = (b"event: message_start\ndata: {\"type\":\"message_start\"}\n\n"
           b"event: ping\ndata: {\"type\": \"ping\"}\n\ndata: plain\n\n")
    for pieces in splittings(raw):
        events, _ = decode(pieces)
        assert [(e.event, e.data) for e in events] == [
            ("message_start", b'{"type":"message_start"}'), ("ping", b'{"type": "ping"}'), (None, b"plain")]


def test_multi_line_data_joins_with_lf_and_strips_one_space() -> None:
    raw = b"data: {\ndata:  \"a\": 1\ndata:}\n\n"
    events, _ = decode(one_byte(raw))
    assert events[0].data == b'{\n "a": 1\n}'


def test_leading_bom_is_dropped_even_when_split_but_only_at_the_start() -> None:
    bom = b"\xef\xbb\xbf"
    raw = bom + b"data: first\n\ndata: second\n\n"
    for pieces in splittings(raw):
        events, _ = decode(pieces)
        assert [e.data for e in events] == [b"first", b"second"]
    # a BOM-like prefix that is not a BOM is kept
    events, _ = decode([b"\xef", b"data: x\n\n"])
    assert [e.data for e in events] == []  # the first line's field name is "\xefdata": not a data field
    events, _ = decode([b"data: a\n\n", bom + b"data: b\n\n"])
    assert [e.data for e in events] == [b"a"]  # a BOM later in the body is not stripped


def test_field_without_space_and_unknown_fields() -> None:
    events, _ = decode([b"data:{\"x\":1}\nretry: 3000\nfoo: bar\n\n"])
    assert [e.data for e in events] == [b'{"x":1}']


def test_id_field_is_kept_and_nul_ids_ignored() -> None:
    events, _ = decode([b"id: 7\ndata: a\n\nid: bad\x00\ndata: b\n\n"])
    assert [(e.id, e.data) for e in events] == [("7", b"a"), ("7", b"b")]


def test_truncated_stream_leaves_pending_bytes() -> None:
    raw = fixture_bytes("text.sse")
    cut = raw.index(b"[DONE]") - 40  # in the middle of the usage chunk
    events, dec = decode([raw[:cut]])
    assert dec.pending
    assert len(events) == len(fixture_payloads("text.sse")) - 2
    _, dec = decode([b"data: x\n"])  # a data line with no blank line after it
    assert dec.pending


def test_done_with_trailing_junk_is_still_data() -> None:
    events, _ = decode([b"data: [DONE] \n\n"])
    assert events[0].data.startswith(b"[DONE]")


# --- the encoder ---

def test_encode_data_is_exactly_openai_framing() -> None:
    payload = b'{"id":"chatcmpl-1","choices":[{"delta":{"content":"\xe4\xbd\xa0"}}]}'
    assert encode_data(payload) == b"data: " + payload + b"\n\n"
    assert encode_data(b"[DONE]") == DONE_FRAME == b"data: [DONE]\n\n"
    assert KEEPALIVE_FRAME == b": keep-alive\n\n"


def test_encode_multi_line_data_prefixes_every_line_and_round_trips() -> None:
    frame = encode_data(b"a\r\nb\rc\nd")
    assert frame == b"data: a\ndata: b\ndata: c\ndata: d\n\n"
    events, _ = decode([frame])
    assert events[0].data == b"a\nb\nc\nd"


def test_encode_event_and_comment() -> None:
    assert encode_event("ping", b"{}") == b"event: ping\ndata: {}\n\n"
    assert encode_comment("keep\nalive") == b": keep alive\n\n"
    events, _ = decode([encode_comment("x"), encode_event("message_stop", b'{"type":"message_stop"}')])
    assert [(e.event, e.data) for e in events] == [("message_stop", b'{"type":"message_stop"}')]


_json_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)


@settings(max_examples=150, deadline=None)
@given(contents=st.lists(_json_text, min_size=1, max_size=6), eol=st.sampled_from([b"\n", b"\r", b"\r\n"]),
       seed=st.integers(0, 2**32 - 1))
def test_round_trip_any_content_any_cut(contents: list[str], eol: bytes, seed: int) -> None:
    payloads = [json.dumps({"choices": [{"delta": {"content": c}}]}, ensure_ascii=False).encode()
                for c in contents]
    raw = b"".join(encode_data(p) for p in payloads) + DONE_FRAME
    raw = raw.replace(b"\n", eol)
    events, dec = decode(random_cuts(raw, random.Random(seed)))
    assert [e.data for e in events] == [*payloads, b"[DONE]"]
    assert [json.loads(e.data)["choices"][0]["delta"]["content"] for e in events[:-1]] == contents
    assert not dec.pending


# --- bounds: an upstream that never ends a line or an event ------------------------------------------

def test_a_line_that_never_ends_is_refused_at_the_bound_however_it_arrives() -> None:
    for pieces in ([b"data: " + b"x" * 5000], [b"data: "] + [b"x" * 7] * 800):
        dec = SSEDecoder(max_line=4096, max_event=1 << 20)
        with pytest.raises(SSELimitExceeded, match="longer than 4096"):
            for p in pieces:
                dec.feed(p)


def test_an_event_whose_data_lines_never_stop_is_refused_at_the_bound() -> None:
    dec = SSEDecoder(max_line=1024, max_event=10_000)
    with pytest.raises(SSELimitExceeded, match="larger than 10000"):
        for _ in range(1000):
            dec.feed(b"data: " + b"y" * 100 + b"\n")


def test_events_up_to_the_bound_pass_and_the_count_restarts_per_event() -> None:
    dec = SSEDecoder(max_line=2048, max_event=2048)
    body = b"data: " + b"z" * 2000 + b"\n\n"
    events = [ev for _ in range(50) for ev in dec.feed(body)]
    assert len(events) == 50 and all(len(e.data) == 2000 for e in events)


def test_decoder_is_linear_in_the_bytes_of_one_long_line() -> None:
    # 32 MiB in 1 KiB reads: a decoder that re-copies its buffer per read moves ~512 GiB (minutes);
    # a linear one moves the 32 MiB once. The bound is generous: it only catches the quadratic shape.
    size, piece = 32 << 20, b"a" * 1024
    dec = SSEDecoder(max_line=size + 16, max_event=size + 16)
    done: list[SSEEvent] = []

    def run() -> None:
        dec.feed(b"data: ")
        for _ in range(size // len(piece)):
            dec.feed(piece)
        done.extend(dec.feed(b"\n\n"))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(60)
    assert not t.is_alive(), "decoding one long line in small reads did not finish: quadratic copying"
    assert len(done) == 1 and len(done[0].data) == size


def test_one_event_a_read_keeps_the_state_earlier_reads_left() -> None:
    # a read holding exactly one `data:` event is the common case of a live stream; it must still see
    # the id, event name and data lines earlier reads left, and the bounds
    dec = SSEDecoder(max_line=4096, max_event=4096)
    reads = [b"id: 7\n\n", b"data: a\n\n", b"event: x\n", b"data: b\n\n", b"data: c\n", b"data: d\n\n",
             b"data: e", b"\n\n", b"data: f\n\n"]
    got = [(e.data, e.event, e.id) for r in reads for e in dec.feed(r)]
    assert got == [(b"a", None, "7"), (b"b", "x", "7"), (b"c\nd", None, "7"), (b"e", None, "7"),
                   (b"f", None, "7")]
    with pytest.raises(SSELimitExceeded, match="longer than 4096"):
        dec.feed(b"data: " + b"g" * 5000 + b"\n\n")
