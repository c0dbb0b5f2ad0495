"""The pass-through doors frame each event as `encode_event` would, with the event line made once per name."""

from __future__ import annotations

from sluice.providers.anthropic import passthrough
from sluice.providers.anthropic.passthrough import framed
from sluice.sse import encode_event


def test_a_frame_is_the_codecs_frame_for_names_seen_before_new_and_past_the_cache() -> None:
    names = ["content_block_delta", "response.output_text.delta", "é"] + [f"made-up-{i}" for i in range(300)]
    for _ in range(2):
        for name in names:
            for data in (b'{"a":1}', b"two\nlines", b""):
                assert framed(name, data) == encode_event(name, data)
    assert len(passthrough._EVENT_LINES) <= passthrough._MAX_EVENT_LINES
