"""SSE codec: an incremental bytes -> events decoder and the event -> bytes encoder (stdlib only).

The decoder follows the WHATWG grammar: lines end in LF, CR or CRLF (a CR at the end of one read and
the LF at the start of the next are one line ending); a blank line dispatches; `:` lines are comments;
`data` lines join with LF; one space after the colon is stripped; a leading UTF-8 BOM is dropped.
Data stays bytes: splitting happens on bytes before any decoding, so a multi-byte character cut across
reads and U+2028 inside JSON are both safe, and the relay can forward the payload without decoding.
"""

from __future__ import annotations

DONE = b"[DONE]"
DONE_FRAME = b"data: [DONE]\n\n"
KEEPALIVE_FRAME = b": keep-alive\n\n"
_BOM = b"\xef\xbb\xbf"


class SSEEvent:
    """One dispatched event: its name (None when absent) and its data as bytes."""

    __slots__ = ("data", "event", "id")

    def __init__(self, data: bytes, event: str | None = None, id: str | None = None) -> None:
        self.data = data
        self.event = event
        self.id = id

    def __repr__(self) -> str:
        return f"SSEEvent(event={self.event!r}, data={self.data!r})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, SSEEvent) and self.data == other.data and self.event == other.event
                and self.id == other.id)

    __hash__ = None  # type: ignore[assignment]


class SSELimitExceeded(ValueError):
    """A line or an event grew past the decoder's bound (an upstream that never ends a line or an event)."""


DEFAULT_MAX_LINE = 4 << 20
DEFAULT_MAX_EVENT = 4 << 20


class SSEDecoder:
    """Feed it reads of any size; it returns the events completed by each read.

    Linear in the bytes fed: only the unfinished last line is kept between reads (a bytearray that
    grows in place), so a line arriving in a million pieces is copied once, not once per piece. A line
    longer than `max_line` or an event whose data passes `max_event` raises `SSELimitExceeded`.
    """

    __slots__ = ("_bound", "_data", "_event", "_id", "_max_event", "_max_line", "_pending_cr", "_size",
                 "_started", "_tail")

    def __init__(self, max_line: int = DEFAULT_MAX_LINE, max_event: int = DEFAULT_MAX_EVENT) -> None:
        self._tail = bytearray()
        self._pending_cr = False
        self._started = False
        self._data: list[bytes] = []
        self._size = 0
        self._event: str | None = None
        self._id: str | None = None
        self._max_line = max_line
        self._max_event = max_event
        self._bound = min(max_line, max_event)  # a read no longer than both cannot break either

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if not self._started:
            started = self._start(chunk)
            if started is None:
                return []
            chunk = started
        if self._pending_cr:
            self._pending_cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if b"\r" in chunk:
            self._pending_cr = chunk.endswith(b"\r")
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        tail = self._tail
        if (chunk[:6] == b"data: " and chunk[-2:] == b"\n\n" and chunk.find(b"\n") == len(chunk) - 2
                and not tail and not self._data and self._event is None and len(chunk) <= self._bound):
            # the common read of a live stream: exactly one complete single-line `data:` event
            return [SSEEvent(chunk[6:-2], None, self._id)]
        if b"\n" not in chunk:
            tail += chunk
            if len(tail) > self._max_line:
                raise SSELimitExceeded(f"an event-stream line is longer than {self._max_line} bytes")
            return []
        lines = chunk.split(b"\n")
        span = len(chunk)
        if tail:  # the line begun in earlier reads: copied once, now that it is complete
            span += len(tail)
            tail += lines[0]
            lines[0] = bytes(tail)
            tail.clear()
        last = lines.pop()
        if last:
            tail += last
            if len(tail) > self._max_line:
                raise SSELimitExceeded(f"an event-stream line is longer than {self._max_line} bytes")
        # lines no longer in all than the bounds cannot make a line or event over them: check only then
        held = sum(map(len, self._data)) + len(self._data) if self._data else 0
        check = span > self._max_line or span + held > self._max_event
        if check:
            self._size = held
        events: list[SSEEvent] = []
        for line in lines:
            if not line:
                if self._data or self._event is not None:
                    events.append(SSEEvent(b"\n".join(self._data), self._event, self._id))
                    self._data = []
                    self._size = 0
                    self._event = None
                continue
            if check and len(line) > self._max_line:
                raise SSELimitExceeded(f"an event-stream line is longer than {self._max_line} bytes")
            if line[:6] == b"data: ":
                if check:
                    self._add(line[6:])
                else:
                    self._data.append(line[6:])
                continue
            self._field(line)
        return events

    def _start(self, chunk: bytes) -> bytes | None:
        """The stream's first bytes without a UTF-8 BOM; None while they could still be one."""
        if not chunk:
            return None
        probe = bytes(self._tail) + chunk
        if len(probe) < 3 and _BOM.startswith(probe):
            self._tail[:] = probe  # could still be a BOM: wait for more
            return None
        self._started = True
        self._tail.clear()
        return probe[3:] if probe.startswith(_BOM) else probe

    def _add(self, data: bytes) -> None:
        self._size += len(data) + 1
        if self._size > self._max_event:
            raise SSELimitExceeded(f"an event-stream event is larger than {self._max_event} bytes")
        self._data.append(data)

    def _field(self, line: bytes) -> None:
        if line[:1] == b":":
            return  # comment
        name, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._add(value)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id" and b"\0" not in value:
            self._id = value.decode("utf-8", "replace")
        # `retry` and unknown fields carry nothing a relay needs

    @property
    def pending(self) -> bool:
        """True when bytes or an undispatched event are held: at EOF that means a truncated stream."""
        return bool(self._tail.strip()) or bool(self._data)


def encode_data(data: bytes) -> bytes:
    """Frame one `data:` event exactly as OpenAI does: `data: <payload>\\n\\n`, LF only."""
    if b"\n" in data or b"\r" in data:
        lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        return b"".join(b"data: " + ln + b"\n" for ln in lines) + b"\n"
    return b"data: " + data + b"\n\n"


def encode_event(event: str, data: bytes) -> bytes:
    """A named event (Anthropic's wire format needs `event:` lines; OpenAI chat streams never do)."""
    return b"event: " + event.encode() + b"\n" + encode_data(data)


def encode_comment(text: str) -> bytes:
    return b": " + text.encode().replace(b"\n", b" ").replace(b"\r", b" ") + b"\n\n"
