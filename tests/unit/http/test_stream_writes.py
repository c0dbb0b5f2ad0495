"""Stream events that came in one upstream read go to the client in one body message (one write), at every
streaming front door and for every upstream kind, with the bytes on the wire unchanged; events of different
reads are never held for one another."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from sluice.auth.keys import hash_key, new_key
from sluice.http.app import create_app
from sluice.http.asgi import Message, Receive, Scope, Send
from sluice.sse import DONE_FRAME, encode_data, encode_event
from sluice.storage.base import KeyRecord
from sluice.storage.sqlite import SQLiteStore
from sluice.upstream.mock import MockReply, MockRequest, MockTransport
from tests.harness import settings
from tests.inproc import serving


def _chunk(content: str | None = None, finish: str | None = None, usage: bool = False) -> bytes:
    doc: dict[str, Any] = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "up",
                           "choices": [] if usage else [{"index": 0, "delta": {"content": content} if content
                                                         else {}, "finish_reason": finish}]}
    if usage:
        doc["usage"] = {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
    return orjson.dumps(doc)


READ1 = [_chunk("a"), _chunk("b"), _chunk("c")]
READ2 = [_chunk("d")]
READ3 = [_chunk(finish="stop"), _chunk(usage=True)]  # then [DONE], in the same read
CHAT_READS = [b"".join(map(encode_data, READ1)), b"".join(map(encode_data, READ2)),
              b"".join(map(encode_data, READ3)) + DONE_FRAME]


def _claude(name: str, **fields: Any) -> bytes:
    return encode_event(name, orjson.dumps({"type": name, **fields}))


_TEXT = {"type": "text_delta", "text": "hi"}
CLAUDE_READS = [
    _claude("message_start", message={"id": "msg_1", "type": "message", "role": "assistant", "model": "up",
                                      "content": [], "usage": {"input_tokens": 5, "output_tokens": 1}})
    + _claude("content_block_start", index=0, content_block={"type": "text", "text": ""}),
    _claude("content_block_delta", index=0, delta=_TEXT) + _claude("content_block_delta", index=0, delta=_TEXT),
    _claude("content_block_stop", index=0)
    + _claude("message_delta", delta={"stop_reason": "end_turn"}, usage={"output_tokens": 2})
    + _claude("message_stop"),
]


def _responses(name: str, **fields: Any) -> bytes:
    return encode_event(name, orjson.dumps({"type": name, **fields}))


_RESPONSE = {"id": "resp_1", "object": "response", "model": "up", "status": "in_progress", "output": []}
RESPONSES_READS = [
    _responses("response.created", response=_RESPONSE)
    + _responses("response.output_text.delta", item_id="m1", output_index=0, content_index=0, delta="a"),
    _responses("response.output_text.delta", item_id="m1", output_index=0, content_index=0, delta="b")
    + _responses("response.output_text.delta", item_id="m1", output_index=0, content_index=0, delta="c"),
    _responses("response.completed", response={**_RESPONSE, "status": "completed",
                                               "usage": {"input_tokens": 3, "output_tokens": 3}}),
]


async def _bodies(tmp_path: Path, provider: Mapping[str, Any], reads: list[bytes], path: str,
                  body: dict[str, Any]) -> tuple[bytes, list[bytes]]:
    """What the client read from `path` and the body messages the app sent for it, the upstream sending
    each of `reads` in one read."""
    def upstream(req: MockRequest) -> MockReply:
        return MockReply(200, {"content-type": "text/event-stream"}, list(reads))

    bodies: list[bytes] = []
    store = SQLiteStore(f"sqlite:///{tmp_path / 'sluice.db'}")
    app = create_app(settings(tmp_path, {
        "providers": [{"name": "a", "api_key": "k", **provider}],
        "models": [{"name": "m", "free": True, "targets": [{"provider": "a", "model": "up"}]}]}),
        store=store, transport=MockTransport(upstream))

    async def watched(scope: Scope, receive: Receive, send: Send) -> None:
        async def watch(msg: Message) -> None:
            if msg["type"] == "http.response.body" and scope.get("path") == path:
                bodies.append(msg["body"])
            await send(msg)
        await app(scope, receive, watch)

    kid, secret = new_key()
    async with serving(watched) as base:  # type: ignore[arg-type]
        await store.create_key(KeyRecord(kid, "t", hash_key(secret)))
        async with aiohttp.ClientSession() as http, http.post(
                base + path, headers={"authorization": f"Bearer {secret}", "anthropic-version": "2023-06-01"},
                json={"model": "m", "stream": True, **body}) as r:
            assert r.status == 200
            got = await r.read()
    assert got == b"".join(bodies)
    return got, bodies


OPENAI = {"kind": "openai", "base_url": "http://a.test/v1"}
ANTHROPIC = {"kind": "anthropic", "base_url": "http://a.test/v1"}
CHAT = {"messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {"max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}


async def test_chat_pass_through_writes_each_read_once_and_the_bytes_do_not_change(tmp_path: Path) -> None:
    got, bodies = await _bodies(tmp_path, OPENAI, CHAT_READS, "/v1/chat/completions", CHAT)
    # the client did not ask for usage: the usage chunk is not for it; everything else byte for byte
    assert got == b"".join(map(encode_data, [*READ1, *READ2, READ3[0]])) + DONE_FRAME
    assert bodies == [b"".join(map(encode_data, READ1)), encode_data(READ2[0]), encode_data(READ3[0]),
                      DONE_FRAME, b""]


async def test_anthropic_pass_through_writes_each_read_once_as_it_came(tmp_path: Path) -> None:
    _, bodies = await _bodies(tmp_path, ANTHROPIC, CLAUDE_READS, "/v1/messages", MESSAGES)
    assert bodies == [*CLAUDE_READS, b""]


async def test_responses_pass_through_writes_each_read_once_as_it_came(tmp_path: Path) -> None:
    provider = {**OPENAI, "apis": ["chat", "responses"]}
    _, bodies = await _bodies(tmp_path, provider, RESPONSES_READS, "/v1/responses", {"input": "hi"})
    assert bodies == [*RESPONSES_READS, b""]


async def test_anthropic_upstream_to_chat_writes_the_chunks_of_a_read_together(tmp_path: Path) -> None:
    _, bodies = await _bodies(tmp_path, ANTHROPIC, CLAUDE_READS, "/v1/chat/completions", CHAT)
    # read 1: the role chunk; read 2: both text deltas in one message; read 3: the finish chunk; then [DONE]
    assert [b.count(b"data: ") for b in bodies] == [1, 2, 1, 1, 0]
    assert bodies[1].count(b'"content":"hi"') == 2
    assert bodies[3] == DONE_FRAME


async def test_chat_upstream_to_messages_writes_the_events_of_a_read_together(tmp_path: Path) -> None:
    _, bodies = await _bodies(tmp_path, OPENAI, CHAT_READS, "/v1/messages", MESSAGES)
    # one message per upstream read, then the writer's closing events
    assert [b.count(b"event: content_block_delta") for b in bodies[:3]] == [3, 1, 0]
    assert b"event: message_start" in bodies[0]
    assert b"event: message_stop" in bodies[-2] and bodies[-1] == b""
    assert len(bodies) == 5


async def test_chat_upstream_to_responses_writes_the_events_of_a_read_together(tmp_path: Path) -> None:
    _, bodies = await _bodies(tmp_path, OPENAI, CHAT_READS, "/v1/responses", {"input": "hi"})
    # the writer's opening events, one message per upstream read, the closing events
    assert b"event: response.created" in bodies[0]
    assert [b.count(b"event: response.output_text.delta") for b in bodies[1:3]] == [3, 1]
    assert b"event: response.completed" in bodies[-2] and bodies[-1] == b""
    assert len(bodies) == 5
