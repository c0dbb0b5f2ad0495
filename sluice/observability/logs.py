"""Log setup from the config: level, text or JSON, and a queue so that the event loop only enqueues a
record while a thread formats and writes it (a slow stderr never stalls requests)."""

from __future__ import annotations

import atexit
import contextvars
import logging
import logging.handlers
import queue
import sys
import time
from typing import Any

import orjson

from sluice.config import LogConfig
from sluice.observability.access_log import FIELDS

_listener: logging.handlers.QueueListener | None = None

# The request being served by the current task (the app sets it once per HTTP request), so that every
# warning and error logged while serving it carries its id without each call site passing it.
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("sluice_request_id", default=None)


class _Enqueue(logging.handlers.QueueHandler):
    """Hands the record over as it is: formatting (the costly part) happens on the listener's thread.
    The request id is read here, on the emitting task, where its context is."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        if getattr(record, "request_id", None) is None:
            record.request_id = REQUEST_ID.get()
        return record


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

    def formatMessage(self, record: logging.LogRecord) -> str:
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            record.message = " ".join(f"{k}={_text(access.get(k))}" for k in FIELDS)
        else:
            rid = getattr(record, "request_id", None)
            if rid is not None and rid not in record.message:
                record.message += f" [request_id={rid}]"
        return super().formatMessage(record)


def _text(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    s = str(v)
    return s if s and " " not in s and '"' not in s else orjson.dumps(s).decode()


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def setup_logging(cfg: LogConfig) -> None:
    """Route every logger through one queue to stderr in the configured format; idempotent."""
    global _listener
    if _listener is not None:
        _listener.stop()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if cfg.format == "json" else TextFormatter())
    q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(_Enqueue(q))
    root.setLevel(cfg.level.upper())
    logging.getLogger("sluice.access").disabled = not cfg.access
    _listener = logging.handlers.QueueListener(q, handler, respect_handler_level=False)
    _listener.start()
    atexit.register(flush_logs)


def flush_logs() -> None:
    """Write what is queued and stop the thread (at exit, so the last lines are not lost)."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None
