"""Chat stream events that came in one upstream read go to the client in one body message (one write),
with the bytes on the wire unchanged; events of different reads are never held for one another."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import orjson

from sluice.auth.keys import hash_key, new_key
from sluice.http.app import create_app
from sluice.http.asgi import Message, Receive, Scope, Send
from sluice.sse import DONE_FRAME, encode_data
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


async def test_events_of_one_read_are_written_together_and_the_bytes_do_not_change(tmp_path: Path) -> None:
    reads = [b"".join(map(encode_data, READ1)), b"".join(map(encode_data, READ2)),
             b"".join(map(encode_data, READ3)) + DONE_FRAME]

    def upstream(req: MockRequest) -> MockReply:
        return MockReply(200, {"content-type": "text/event-stream"}, list(reads))

    bodies: list[bytes] = []
    store = SQLiteStore(f"sqlite:///{tmp_path / 'sluice.db'}")
    app = create_app(settings(tmp_path, {
        "providers": [{"name": "a", "kind": "openai", "base_url": "http://a.test/v1", "api_key": "k"}],
        "models": [{"name": "m", "free": True, "targets": [{"provider": "a", "model": "up"}]}]}),
        store=store, transport=MockTransport(upstream))

    async def watched(scope: Scope, receive: Receive, send: Send) -> None:
        async def watch(msg: Message) -> None:
            if msg["type"] == "http.response.body" and scope.get("path") == "/v1/chat/completions":
                bodies.append(msg["body"])
            await send(msg)
        await app(scope, receive, watch)

    kid, secret = new_key()
    async with serving(watched) as base:  # type: ignore[arg-type]
        await store.create_key(KeyRecord(kid, "t", hash_key(secret)))
        async with aiohttp.ClientSession() as http, http.post(
                base + "/v1/chat/completions", headers={"authorization": f"Bearer {secret}"},
                json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}) as r:
            assert r.status == 200
            got = await r.read()
    # the client did not ask for usage: the usage chunk is not for it; everything else byte for byte
    assert got == b"".join(map(encode_data, [*READ1, *READ2, READ3[0]])) + DONE_FRAME
    assert bodies == [b"".join(map(encode_data, READ1)), encode_data(READ2[0]), encode_data(READ3[0]),
                      DONE_FRAME, b""]
