"""The OpenAI simulator's wire material: recorded fixtures cut into events, scripted chat streams, and the
`Fault` and `SimRequest` records that tests configure and read (the server itself is `openai_sim.OpenAISim`)."""

from __future__ import annotations

import json
import re
import socket
import threading
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
    hold: threading.Event | None = None       # after `hold_after` events, wait until the test sets this
    hold_after: int = 1
    drop_after: int | None = None              # abort the socket after N events (no chunked terminator)
    eof_after: int | None = None               # end the body cleanly after N events (no finish, no [DONE])
    error_after: int | None = None             # after N events, send `data: {"error":...}` and end
    error_then_done: bool = False              # ... followed by `data: [DONE]` (as vLLM does)
    fixture: str | None = None                 # replay this fixture instead of the model's
    script: Callable[[dict[str, Any]], list[bytes]] | None = None  # stream these events (e.g. an agent's turn)
    reply: bytes | None = None                 # a plain (non-stream) chat reply instead of text.json
    plain: Callable[[dict[str, Any]], bytes] | None = None  # a plain chat reply built from the request
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
    def sized(cls, prompt_tokens: int = 12, *, delay: float = 0.0, **kw: Any) -> Fault:
        """Replies as long as the request asks (`max_tokens` completion tokens, 16 without it) and
        `prompt_tokens` prompt tokens, after `delay` s: every request of a load test costs the same."""
        return cls(first_byte_delay=delay, script=lambda body: sized_events(body, prompt_tokens),
                   plain=lambda body: sized_reply(body, prompt_tokens), **kw)

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


def _sized(body: dict[str, Any], prompt_tokens: int) -> tuple[dict[str, Any], int, dict[str, int]]:
    n = int(body.get("max_tokens") or 16)
    head = {"id": "chatcmpl-sized", "created": int(time.time()), "model": body.get("model")}
    return head, n, {"prompt_tokens": prompt_tokens, "completion_tokens": n, "total_tokens": prompt_tokens + n}


def sized_reply(body: dict[str, Any], prompt_tokens: int) -> bytes:
    """A plain chat completion of `max_tokens` tokens ("ok " each), finished by length."""
    head, n, usage = _sized(body, prompt_tokens)
    return json.dumps({**head, "object": "chat.completion", "usage": usage, "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "ok " * n}, "finish_reason": "length"}]}).encode()


def sized_events(body: dict[str, Any], prompt_tokens: int) -> list[bytes]:
    """The same completion streamed one token an event; the usage event only when the request asks for it."""
    head, n, usage = _sized(body, prompt_tokens)

    def event(doc: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps({**head, "object": "chat.completion.chunk", **doc}).encode() + b"\n\n"
    out = [event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})]
    out += [event({"choices": [{"index": 0, "delta": {"content": "ok "}, "finish_reason": None}]})] * n
    out.append(event({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}))
    if (body.get("stream_options") or {}).get("include_usage"):
        out.append(event({"choices": [], "usage": usage}))
    return [*out, b"data: [DONE]\n\n"]
