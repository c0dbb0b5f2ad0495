"""The OpenAI simulator's wire material: recorded fixtures cut into events, scripted chat streams, and the
`Fault` and `SimRequest` records that tests configure and read (the server itself is `openai_sim.OpenAISim`)."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "openai"
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def fixture_events(name: str) -> list[bytes]:
    """A recorded stream cut into its events, each with its own terminator, bytes exactly as on disk."""
    raw = fixture_bytes(name if "." in name else name + ".sse")
    out: list[bytes] = []
    pos = 0
    for m in _EVENT_END.finditer(raw):
        out.append(raw[pos:m.end()])
        pos = m.end()
    assert pos == len(raw), f"{name}: trailing bytes after the last event"
    return out


def fixture_payloads(name: str) -> list[bytes]:
    """The `data:` payload bytes of every event of a fixture (single-line data, as OpenAI sends)."""
    out = []
    for ev in fixture_events(name):
        line = ev.replace(b"\r\n", b"\n").replace(b"\r", b"\n").strip(b"\n")
        assert line.startswith(b"data: "), line
        out.append(line[len(b"data: "):])
    return out


def closed_port() -> int:
    """A port nothing listens on (bound, then released): connecting to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@dataclass
class Fault:
    """What to do differently for one request. Defaults: answer at once, replay the whole fixture."""

    status: int = 200
    body: bytes | None = None                  # with status != 200: the error body, sent as is
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    first_byte_delay: float = 0.0              # sleep before the status line (slow first byte)
    first_event_delay: float = 0.0             # headers at once, then sleep before event 1
    gap: float = 0.0                           # sleep between events
    pause_after: dict[int, float] = field(default_factory=dict)  # after N events sent, sleep s
    drop_after: int | None = None              # abort the socket after N events (no chunked terminator)
    eof_after: int | None = None               # end the body cleanly after N events (no finish, no [DONE])
    error_after: int | None = None             # after N events, send `data: {"error":...}` and end
    error_then_done: bool = False              # ... followed by `data: [DONE]` (as vLLM does)
    fixture: str | None = None                 # replay this fixture instead of the model's
    script: Callable[[dict[str, Any]], list[bytes]] | None = None  # stream these events (e.g. an agent's turn)
    reply: bytes | None = None                 # a plain (non-stream) chat reply instead of text.json
    usage: dict[str, Any] | None = None        # report this `usage` object instead of the fixture's
    endless: bytes | None = None               # after the head (and endless_prefix): these bytes, again and
    endless_every: float = 0.0                 # again every endless_every s, until the client leaves
    endless_prefix: bytes = b""
    endless_type: str = "text/event-stream"    # the content type of that endless reply, stream or not
    big_reply: int = 0                         # a plain reply: a valid completion padded to this many bytes

    # --- the faults tests ask for, by name ---
    @classmethod
    def slow_first_byte(cls, delay: float, **kw: Any) -> Fault:
        return cls(first_byte_delay=delay, **kw)

    @classmethod
    def slow_first_chunk(cls, delay: float, **kw: Any) -> Fault:
        return cls(first_event_delay=delay, **kw)

    @classmethod
    def mid_stream_drop(cls, after: int = 3, **kw: Any) -> Fault:
        return cls(drop_after=after, **kw)

    @classmethod
    def eof_without_finish(cls, after: int = 3, **kw: Any) -> Fault:
        return cls(eof_after=after, **kw)

    @classmethod
    def error_event(cls, after: int = 3, **kw: Any) -> Fault:
        return cls(error_after=after, **kw)

    @classmethod
    def http_error(cls, status: int, body: bytes | None = None, **kw: Any) -> Fault:
        if body is None and status == 401:
            body = fixture_bytes("error_401.json")
        if body is None:
            name = {400: "error_400.json", 429: "error_429.json", 503: "error_503.json"}.get(status, "error_500.json")
            body = fixture_bytes(name)
        return cls(status=status, body=body, **kw)

    @classmethod
    def rate_limited(cls, retry_after: int = 7, **kw: Any) -> Fault:
        return cls.http_error(429, headers={"retry-after": str(retry_after),
                                            "x-ratelimit-remaining-requests": "0"}, **kw)

    @classmethod
    def trickle(cls, data: bytes, every: float = 0.0, *, prefix: bytes = b"", **kw: Any) -> Fault:
        """An upstream that never finishes: `prefix`, then `data` forever (an endless line, comments...)."""
        return cls(endless=data, endless_every=every, endless_prefix=prefix, **kw)

    @classmethod
    def html_502(cls, **kw: Any) -> Fault:
        return cls(status=502, body=fixture_bytes("bad_gateway.html"), content_type="text/html", **kw)


@dataclass
class SimRequest:
    """One request as the simulator saw it. Times are `time.monotonic()` (comparable across threads)."""

    path: str
    headers: dict[str, str]
    raw: bytes
    body: Any
    arrived: float
    fault: Fault | None = None
    sent: bytes = b""                    # embeddings / legacy completions: the body or events sent
    responded_at: float | None = None    # when the status line went out
    events_sent: int = 0
    completed: bool = False              # the whole planned response was written
    client_closed: bool = False          # the client went away before that
    closed_at: float | None = None

    def note_closed(self) -> None:
        if not self.completed and not self.client_closed:
            self.client_closed = True
            self.closed_at = time.monotonic()

def chat_events(*, text: str = "", calls: tuple[tuple[str, str, str], ...] = (), model: str = "gpt-sim",
                usage: tuple[int, int] = (10, 7), cached: int | None = None) -> list[bytes]:
    """A whole chat stream (text, then tool calls as (id, name, arguments), a usage chunk, [DONE])."""
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        doc = {"id": "chatcmpl-script", "object": "chat.completion.chunk", "created": 1, "model": model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return b"data: " + json.dumps(doc).encode() + b"\n\n"

    out = [chunk({"role": "assistant", "content": ""})]
    if text:
        out.append(chunk({"content": text}))
    for i, (call_id, name, args) in enumerate(calls):
        out.append(chunk({"tool_calls": [{"index": i, "id": call_id, "type": "function",
                                          "function": {"name": name, "arguments": args}}]}))
    out.append(chunk({}, "tool_calls" if calls else "stop"))
    usage_doc = {"id": "chatcmpl-script", "object": "chat.completion.chunk", "created": 1, "model": model,
                 "choices": [], "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1],
                                          "total_tokens": sum(usage)}}
    if cached is not None:
        usage_doc["usage"]["prompt_tokens_details"] = {"cached_tokens": cached}  # type: ignore[index]
    return [*out, b"data: " + json.dumps(usage_doc).encode() + b"\n\n", b"data: [DONE]\n\n"]


def with_usage(raw: bytes, usage: dict[str, Any] | None) -> bytes:
    """A reply body or SSE event whose non-null `usage` is replaced by `usage` (absurd figures on demand)."""
    if usage is None or b'"usage"' not in raw:
        return raw
    is_event = raw.startswith(b"data: ")
    doc = json.loads(raw[6:] if is_event else raw)
    if not doc.get("usage"):
        return raw
    doc["usage"] = usage
    body = json.dumps(doc).encode()
    return b"data: " + body + b"\n\n" if is_event else body
