"""Log setup from the config: level, text or JSON. A record is formatted on the thread that logs it (the
event loop's, for requests) into a bounded buffer that a writer thread empties in batches, so a request
costs no cross-thread hand-off and a slow stderr never stalls the loop (lines past the bound are counted
and dropped, never waited for)."""

from __future__ import annotations

import atexit
import contextvars
import logging
import sys
import threading
import time
from typing import Any, TextIO

import orjson

from sluice.config import LogConfig
from sluice.observability.access_log import FIELDS

# The writer wakes at most this often for ordinary lines (a warning or worse is written at once) ...
FLUSH_SECONDS = 0.05
# ... or as soon as this many lines wait; and holds at most this much while the sink is slow.
FLUSH_LINES = 256
MAX_BUFFERED_CHARS = 4 << 20

_writer: BatchHandler | None = None

# The request being served by the current task (the app sets it once per HTTP request), so that every
# warning and error logged while serving it carries its id without each call site passing it.
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("sluice_request_id", default=None)


class BatchHandler(logging.Handler):
    """Formats each record where it is logged (reading the request id there, where its context is) and
    appends the line to a buffer; a writer thread writes the buffer to `stream` every `FLUSH_SECONDS`,
    after `FLUSH_LINES` lines, at once for a warning or worse, and at `close()` (nothing buffered is lost
    at exit). Never blocks the logging thread on the sink: past `MAX_BUFFERED_CHARS` a line is dropped and
    counted, and the writer reports the count in the stream once it catches up."""

    def __init__(self, stream: TextIO, *, flush_seconds: float = FLUSH_SECONDS, flush_lines: int = FLUSH_LINES,
                 max_chars: int = MAX_BUFFERED_CHARS) -> None:
        super().__init__()
        self.stream = stream
        self.dropped = 0              # lines dropped since the writer last reported them
        self.dropped_total = 0
        self._lines: list[str] = []
        self._chars = 0
        self._flush_seconds = flush_seconds
        self._flush_lines = flush_lines
        self._max_chars = max_chars
        self._ready = threading.Event()   # the buffer is not empty
        self._urgent = threading.Event()  # write it now
        self._stopping = False
        self._appended = 0                # lines buffered so far ...
        self._written = 0                 # ... and how many of them the writer has written
        self._progress = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="sluice-log-writer", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        # logging.Handler.handle holds self.lock around this call, so threads other than the loop's are safe
        if getattr(record, "request_id", None) is None:
            record.request_id = REQUEST_ID.get()
        try:
            line = self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return
        if self._chars + len(line) > self._max_chars:
            self.dropped += 1
            self.dropped_total += 1
            return
        self._lines.append(line)
        self._chars += len(line)
        self._appended += 1
        n = len(self._lines)
        if n == 1:
            self._ready.set()
        if n == self._flush_lines or record.levelno >= logging.WARNING:
            self._urgent.set()

    def _take(self) -> tuple[str, int, int]:
        with self.lock:  # type: ignore[union-attr]
            self._ready.clear()
            self._urgent.clear()
            text, dropped, upto = "".join(self._lines), self.dropped, self._appended
            self._lines, self._chars, self.dropped = [], 0, 0
        return text, dropped, upto

    def _run(self) -> None:
        while True:
            self._ready.wait()
            if not self._stopping:
                self._urgent.wait(self._flush_seconds)
            text, dropped, upto = self._take()
            if dropped:
                text += self._dropped_line(dropped)
            if text:
                self._write(text)
            with self._progress:
                self._written = upto
                self._progress.notify_all()
            if self._stopping and not self._lines:
                return

    def flush(self, timeout: float = 5.0) -> None:
        """Have the writer write every line buffered so far, waiting for it at most `timeout` s. The server's
        last step: a process that ends by its re-raised SIGTERM (uvicorn's way) runs no atexit, no `close()`."""
        if self._thread is threading.current_thread():
            return
        with self.lock:  # type: ignore[union-attr]
            target = self._appended
        self._urgent.set()
        self._ready.set()
        with self._progress:
            self._progress.wait_for(lambda: self._written >= target or not self._thread.is_alive(), timeout)

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except Exception:  # a closed or broken stderr: nothing better to do than what logging does
            pass

    def _dropped_line(self, n: int) -> str:
        rec = logging.LogRecord("sluice.logs", logging.WARNING, __file__, 0,
                                "%d log lines dropped: the log output was slower than the server", (n,), None)
        try:
            return self.format(rec) + "\n"
        except Exception:
            return f"{n} log lines dropped\n"

    def close(self) -> None:
        """Write what is buffered and stop the writer (idempotent)."""
        self._stopping = True
        self._ready.set()
        self._urgent.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        super().close()


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, request_id when known, the access fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {"time": _iso(record.created), "level": record.levelname.lower(),
                               "logger": record.name}
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            doc.update(access)
        else:
            doc["message"] = record.getMessage()
            rid = getattr(record, "request_id", None)
            if rid is not None:
                doc["request_id"] = rid
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message`; access lines as `key=value` pairs in a fixed order."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._stamp = (-1, "")  # (second, its text): one tuple, so that a racing thread sees a matching pair

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        # logging's own format (`2025-01-31 12:00:00,123`), the seconds part built once a second
        stamp = self._stamp
        if stamp[0] != int(record.created):
            stamp = self._stamp = (int(record.created),
                                   time.strftime(self.default_time_format, self.converter(record.created)))
        return f"{stamp[1]},{int(record.msecs):03d}"

    def format(self, record: logging.LogRecord) -> str:
        access = getattr(record, "access", None)
        if isinstance(access, dict):  # one a request: built straight, as formatMessage below would
            record.message = " ".join([f"{k}={_text(access.get(k))}" for k in FIELDS])
            return f"{self.formatTime(record)} {record.levelname} {record.name}: {record.message}"
        return super().format(record)

    def formatMessage(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", None)
        if rid is not None and rid not in record.message:
            record.message += f" [request_id={rid}]"
        return super().formatMessage(record)


def _text(v: object) -> str:
    kind = type(v)
    if kind is int or kind is float:
        return repr(v)
    if v is None:
        return "-"
    if kind is bool:
        return "yes" if v else "no"
    s = v if isinstance(v, str) else str(v)
    return s if s and " " not in s and '"' not in s else orjson.dumps(s).decode()


_iso_stamp = (-1, "")  # (second, its text), built once a second


def _iso(t: float) -> str:
    global _iso_stamp
    stamp = _iso_stamp
    if stamp[0] != int(t):
        stamp = _iso_stamp = (int(t), time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)))
    return stamp[1] + f".{int(t % 1 * 1000):03d}Z"


def setup_logging(cfg: LogConfig) -> None:
    """Route every logger through one batching handler to stderr in the configured format; idempotent."""
    global _writer
    flush_logs()
    handler = BatchHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if cfg.format == "json" else TextFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(cfg.level.upper())
    # no format shows them, and each costs every record a lookup (logging's documented optimisation)
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging.getLogger("sluice.access").disabled = not cfg.access
    _writer = handler
    atexit.register(flush_logs)


def write_buffered_logs() -> None:
    """Write the lines buffered so far (and wait for them), keeping the writer for what comes after."""
    if _writer is not None:
        _writer.flush()


def flush_logs() -> None:
    """Write what is buffered and stop the writer (at exit, so the last lines are not lost)."""
    global _writer
    if _writer is not None:
        logging.getLogger().removeHandler(_writer)
        _writer.close()
        _writer = None
