"""A finished request leaves no reference cycle behind: its objects go with their last reference, so none
pile up for the cyclic collector, whose pauses stop every stream on the loop (docs/decisions.md, "Loop
stalls"). Counted with the collector keeping what it frees (`DEBUG_SAVEALL`) after the server has stopped."""

from __future__ import annotations

import gc
from pathlib import Path

import orjson

from sluice.http.lifecycle import RequestScope
from sluice.relay import RelayStream
from sluice.upstream.mock import MockReply
from tests.inproc import gateway

MSGS: list[dict[str, str]] = [{"role": "user", "content": "hi"}]
USAGE = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}


def _chunk(content: str | None = None, usage: dict[str, int] | None = None) -> bytes:
    choices = [] if usage else [{"index": 0, "delta": {"content": content}, "finish_reason": None}]
    return orjson.dumps({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "up",
                         "choices": choices, **({"usage": usage} if usage else {})})


async def test_finished_streams_leave_no_cycle_for_the_collector(tmp_path: Path) -> None:
    stream = MockReply.events([_chunk("Hel"), _chunk("lo"), _chunk(usage=USAGE)])
    gc.collect()
    flags = gc.get_debug()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        async with gateway(tmp_path, {"a.test": [stream]}) as gw:
            for _ in range(3):
                chunks = await gw.client.chat.completions.create(
                    model="m", messages=MSGS, stream=True)  # type: ignore[arg-type]
                assert [c async for c in chunks]
        gc.collect()
        left = [type(o).__name__ for o in gc.garbage if isinstance(o, RequestScope | RelayStream)]
    finally:
        gc.set_debug(flags)
        gc.garbage.clear()
    assert left == []
