"""Log setup and formats: level and format from config or SLUICE_LOG_*, access lines as JSON or key=value,
the request id on warnings, and the first-start admin token file (created once, hash only)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import threading
import urllib.request
from pathlib import Path
from threading import Barrier, Thread

import pytest

from sluice.auth.admin_token import AdminToken, create_first_admin_token, token_file
from sluice.config import ConfigError, load
from sluice.observability.access_log import FIELDS
from sluice.observability.exporter import start_exporter
from sluice.observability.logs import REQUEST_ID, BatchHandler, JsonFormatter, TextFormatter
from tests.e2e.conftest import free_port

ACCESS = {"request_id": "req_1", "route": "chat_completions", "key_id": "abc", "key_name": "my key",
          "account": None, "model": "m", "provider": "p", "upstream_model": "u", "status": 200, "error_code": None,
          "input_tokens": 3, "output_tokens": 4, "cached_tokens": 0, "reasoning_tokens": 0,
          "usage_source": "reported", "cost": 1.5e-05, "ttft_ms": 12.5, "duration_ms": 40.0, "attempts": 1,
          "stream": True, "disconnected": False}


def _record(msg: str, level: int = logging.INFO, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("sluice.access" if "access" in extra else "sluice.http", level, __file__, 1, msg, (),
                            None)
    rec.__dict__.update(extra)
    return rec


def test_access_line_as_json_and_text() -> None:
    doc = json.loads(JsonFormatter().format(_record("x", access=ACCESS, request_id="req_1")))
    assert {k: doc[k] for k in FIELDS} == ACCESS and doc["level"] == "info" and doc["logger"] == "sluice.access"
    text = TextFormatter().format(_record("x", access=ACCESS))
    assert text.endswith('request_id=req_1 route=chat_completions key_id=abc key_name="my key" account=- model=m '
                         'provider=p upstream_model=u status=200 error_code=- input_tokens=3 output_tokens=4 '
                         'cached_tokens=0 reasoning_tokens=0 usage_source=reported cost=1.5e-05 ttft_ms=12.5 '
                         'duration_ms=40.0 attempts=1 stream=yes disconnected=no')
    assert set(ACCESS) == set(FIELDS)


def test_warnings_carry_the_request_id_in_json() -> None:
    doc = json.loads(JsonFormatter().format(_record("upstream failed for %s", logging.WARNING, request_id="req_9")))
    assert (doc["level"], doc["request_id"]) == ("warning", "req_9")


def test_level_and_format_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert (load(data_dir=str(tmp_path)).log.level, load(data_dir=str(tmp_path)).log.format) == ("info", "text")
    monkeypatch.setenv("SLUICE_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("SLUICE_LOG_FORMAT", "json")
    s = load(data_dir=str(tmp_path))
    assert (s.log.level, s.log.format) == ("debug", "json")
    monkeypatch.setenv("SLUICE_LOG_FORMAT", "xml")
    with pytest.raises(ConfigError, match=r"log\.format"):
        load(data_dir=str(tmp_path))


def test_metrics_listen_is_validated(tmp_path: Path) -> None:
    for bad in ("9464", "host:", ":9464", "h:70000", "h:x"):
        with pytest.raises(ConfigError, match=r"server\.metrics_listen"):
            load(data_dir=str(tmp_path), overrides={"server.metrics_listen": bad})


def test_first_admin_token_is_created_once_and_stored_hashed(tmp_path: Path) -> None:
    settings = load(data_dir=str(tmp_path))
    barrier = Barrier(8)
    made: list[str | None] = []

    def race() -> None:
        barrier.wait()
        made.append(create_first_admin_token(settings))

    threads = [Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    secrets = [m for m in made if m]
    assert len(secrets) == 1 and len(made) == 8
    path = token_file(settings)
    assert path is not None and path.read_text().strip() == hashlib.sha256(secrets[0].encode()).hexdigest()
    token = AdminToken.from_settings(settings)
    assert token.check(f"Bearer {secrets[0]}".encode()) and not token.check(b"Bearer " + secrets[0][:-1].encode())
    assert not token.check(None) and not token.check(f"Basic {secrets[0]}".encode())
    configured = load(data_dir=str(tmp_path), overrides={"admin.token": "t0ken"})
    assert create_first_admin_token(configured) is None  # a configured token: nothing generated


def test_metrics_listen_serves_metrics_without_a_token() -> None:
    port = free_port()
    server = start_exporter(f"127.0.0.1:{port}")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            assert r.status == 200 and b"sluice_requests_in_flight" in r.read()
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/keys", timeout=5)
        err.value.close()
        assert err.value.code == 404
    finally:
        server.shutdown()
        server.server_close()


async def test_a_warning_logged_while_serving_a_request_carries_its_id() -> None:
    """The app sets the request id per request task; the handler reads it on the emitting task."""
    out = io.StringIO()
    handler = BatchHandler(out)
    handler.setFormatter(TextFormatter())
    json_handler = BatchHandler(out_json := io.StringIO())
    json_handler.setFormatter(JsonFormatter())

    async def serve(rid: str) -> None:
        REQUEST_ID.set(rid)
        await asyncio.sleep(0)
        for h in (handler, json_handler):
            h.handle(_record("upstream said no", logging.WARNING))

    await asyncio.gather(serve("req_a"), serve("req_b"))
    handler.handle(_record("between requests", logging.WARNING))
    handler.close()
    json_handler.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and "request_id" not in lines[2]
    assert lines[0].endswith("upstream said no [request_id=req_a]")
    assert lines[1].endswith("upstream said no [request_id=req_b]")
    assert [json.loads(ln)["request_id"] for ln in out_json.getvalue().splitlines()] == ["req_a", "req_b"]


class _StuckSink(io.StringIO):
    """A log output that blocks every write until released (a full pipe nobody reads)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Event()

    def write(self, s: str) -> int:
        self.entered.set()
        assert self.release.wait(10)
        return super().write(s)


def test_a_stuck_log_output_drops_and_counts_lines_but_never_blocks_the_logger() -> None:
    sink = _StuckSink()
    handler = BatchHandler(sink, flush_seconds=0.001, max_chars=2_000)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.handle(_record("first"))
    assert sink.entered.wait(10)  # the writer is now stuck in its write
    for i in range(500):  # ~4.4 KB of lines against a 2 KB bound: returns at once, the excess counted
        handler.handle(_record(f"line {i:03d}"))
    assert handler.dropped_total > 0
    kept = 500 - handler.dropped_total
    sink.release.set()
    handler.close()
    lines = sink.getvalue().splitlines()
    assert lines[:2] == ["first", "line 000"] and len(lines) == 1 + kept + 1
    assert lines[-1] == f"{handler.dropped_total} log lines dropped: the log output was slower than the server"


def test_lines_are_batched_and_all_written_at_close() -> None:
    out = io.StringIO()
    handler = BatchHandler(out, flush_seconds=60, flush_lines=10_000)  # nothing but close() writes them
    handler.setFormatter(logging.Formatter("%(message)s"))
    for i in range(1000):
        handler.handle(_record(f"r{i}"))
    assert out.getvalue() == ""
    handler.close()
    assert out.getvalue().splitlines() == [f"r{i}" for i in range(1000)]


def test_flush_writes_what_is_buffered_and_the_writer_goes_on() -> None:
    out = io.StringIO()
    handler = BatchHandler(out, flush_seconds=60, flush_lines=10_000)  # only flush() and close() write
    handler.setFormatter(logging.Formatter("%(message)s"))
    for i in range(100):
        handler.handle(_record(f"r{i}"))
    handler.flush()  # what a server does last: a process ended by its re-raised SIGTERM runs no atexit
    assert out.getvalue().splitlines() == [f"r{i}" for i in range(100)]
    handler.handle(_record("after"))
    handler.flush()
    assert out.getvalue().splitlines()[-1] == "after"
    handler.close()
    handler.flush()  # after close: returns at once
