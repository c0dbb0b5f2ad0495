"""`sluice serve`: prepare storage (migrations, a first key on an empty store), then run uvicorn's server
(sockets, workers, lifespan) with Sluice's own HTTP protocol (`sluice/server/`), and a graceful stop in front
of uvicorn's own signal handling (`GracefulStop`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import os
import signal
import tempfile
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.supervisors.multiprocess import Multiprocess

from sluice.auth.admin_token import create_first_admin_token
from sluice.config import DEFAULT_MODEL, Settings, load
from sluice.http.app import App, create_app, tune_gc
from sluice.http.drain import Drain
from sluice.observability.exporter import start_exporter
from sluice.observability.logs import setup_logging
from sluice.relay import new_request_id
from sluice.server.protocol import HttpProtocol
from sluice.storage import open_store

log = logging.getLogger("sluice")

# After the grace, the requests cut with `server_shutdown` get this long to send their last event and
# settle before uvicorn cancels whatever is still running.
CUT_MARGIN_SECONDS = 5

SignalHandler = Callable[[int, FrameType | None], Any]


class GracefulStop:
    """SIGTERM or SIGINT to one serving process (each worker gets its own):

    1. at once, `/ready` answers 503 (`{"status": "draining"}`); everything is still served, new
       requests too, for `drain_seconds`, so that a balancer polling `/ready` takes the instance out;
    2. then the signal goes on to uvicorn: it stops listening, closes idle connections and waits for the
       open requests and streams;
    3. `grace_seconds` later, the relay requests still open are ended with a `server_shutdown` error
       (`Drain.cut`) and settled; then the app shuts down (ledger flushed) and the process exits.

    A second signal skips what is left of the drain delay; once uvicorn has the signal, another SIGINT
    makes it quit at once (its own force-exit).
    uvicorn's multiprocess supervisor builds its workers' servers itself, so this chains in front of the
    handlers uvicorn installed rather than subclassing its Server: `install()` runs once the app has
    started, in the serving process, where those handlers are in place.
    """

    def __init__(self, drain: Drain, *, drain_seconds: float, grace_seconds: float) -> None:
        self.drain = drain
        self.drain_seconds = drain_seconds
        self.grace_seconds = grace_seconds
        self._loop: asyncio.AbstractEventLoop | None = None
        self._delayed = False
        self._stopping = False

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            log.warning("graceful stop not installed: not on the main thread")
            return
        self._loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            prev = signal.getsignal(sig)
            if not callable(prev):
                log.warning("graceful stop not installed for %s: no server handler to pass it on to", sig.name)
                continue
            signal.signal(sig, functools.partial(self._on_signal, prev))
        log.info("ready (pid %d); on SIGTERM: /ready 503 for %gs, then open requests get %gs", os.getpid(),
                 self.drain_seconds, self.grace_seconds)

    def _on_signal(self, prev: SignalHandler, sig: int, frame: FrameType | None) -> None:
        # a signal handler: flip a flag, and leave the rest to the loop (call_soon_threadsafe is signal-safe)
        assert self._loop is not None
        if self.drain.begin():
            self._loop.call_soon_threadsafe(log.info, "draining: /ready now answers 503; stopping in %gs, "
                                            "open requests then get %gs", self.drain_seconds, self.grace_seconds)
        if self._stopping or self._delayed or self.drain_seconds <= 0:
            self._stop(prev, sig, frame)
            return
        self._delayed = True
        self._loop.call_soon_threadsafe(self._loop.call_later, self.drain_seconds, self._drained, prev, sig)

    def _drained(self, prev: SignalHandler, sig: int) -> None:
        if not self._stopping:
            self._stop(prev, sig, None)

    def _stop(self, prev: SignalHandler, sig: int, frame: FrameType | None) -> None:
        first = not self._stopping
        self._stopping = True
        prev(sig, frame)  # uvicorn's handler: stop accepting, then wait for what is open
        if first and self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.call_later, self.grace_seconds, self.drain.cut)


class Supervisor(Multiprocess):
    """uvicorn's multiprocess supervisor, except that it lets go of the listening socket once it has told
    the workers to stop. The workers' copies keep it open through their drain delay; after that new
    connections are refused, as with one process, instead of waiting unanswered in the backlog (where a
    proxy would have sent them a request it cannot retry) until the supervisor exits."""

    def terminate_all(self) -> None:
        super().terminate_all()
        for sock in self.sockets:
            sock.close()


def serving_app(settings: Settings) -> App:
    """The app with its graceful stop and client limits, as each serving process runs it."""
    HttpProtocol.configure(settings.server, new_request_id)
    app = create_app(settings)
    stop = GracefulStop(app.drain, drain_seconds=settings.server.drain_seconds,
                        grace_seconds=settings.server.shutdown_grace_seconds)
    app.on_started.append(tune_gc)
    app.on_started.append(stop.install)
    return app


def app_from_env() -> App:
    """The factory each worker process calls (`--workers N`); config comes from the environment."""
    settings = load()
    setup_logging(settings.log)
    return serving_app(settings)


async def _prepare(settings: Settings) -> str | None:
    """Run migrations; on a first start (no key at all), create one and return its secret. Atomic, so
    of several instances starting at once on an empty database exactly one creates it."""
    from sluice.cli.main import create_first_key

    store = open_store(settings)
    await store.open()
    try:
        return await create_first_key(store)
    finally:
        await store.close()


def serve(settings: Settings, *, config_path: str | None, data_dir: str | None) -> int:
    setup_logging(settings.log)
    secret = asyncio.run(_prepare(settings))
    admin_secret = create_first_admin_token(settings)
    host, port, workers = settings.server.host, settings.server.port, settings.server.workers
    base = f"http://{host if host not in ('0.0.0.0', '::') else '127.0.0.1'}:{port}/v1"
    if secret:
        model = settings.models[0].name if settings.models else DEFAULT_MODEL
        print(_first_key_banner(secret, base, model), flush=True)
    if admin_secret:
        print(_admin_banner(admin_secret, base.removesuffix("/v1")), flush=True)
    print(f"Sluice listening on {base} ({workers} worker{'s' if workers > 1 else ''}, "
          f"storage {settings.storage.url.split('://')[0]})", flush=True)
    # uvicorn's own deadline is a backstop: GracefulStop ends open requests at the grace itself
    backstop = math.ceil(settings.server.shutdown_grace_seconds) + CUT_MARGIN_SECONDS
    # log_config=None: uvicorn's loggers go through ours (level, format, the batched writer)
    common = dict(host=host, port=port, loop="uvloop", http=HttpProtocol, lifespan="on", access_log=False,
                  log_config=None, log_level="warning", timeout_keep_alive=settings.server.keepalive_seconds,
                  backlog=4096, server_header=False, proxy_headers=False,
                  timeout_graceful_shutdown=backstop)
    if workers > 1:
        # each worker process builds its own app from the same configuration
        if config_path:
            os.environ["SLUICE_CONFIG"] = os.path.abspath(config_path)
        if data_dir:
            os.environ["SLUICE_DATA_DIR"] = os.path.abspath(data_dir)
        config = uvicorn.Config("sluice.cli.serve:app_from_env", factory=True, workers=workers,
                                **common)  # type: ignore[arg-type]
        # the workers share their metrics through files in a directory of this run (never a previous run's)
        with tempfile.TemporaryDirectory(prefix="sluice-metrics-") as shared:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = shared
            _exporter(settings)
            Supervisor(config, sockets=[config.bind_socket()]).run()
    else:
        _exporter(settings)
        uvicorn.run(serving_app(settings), **common)  # type: ignore[arg-type]
    return 0


def _exporter(settings: Settings) -> None:
    if settings.server.metrics_listen:
        start_exporter(settings.server.metrics_listen)
        print(f"Metrics on http://{settings.server.metrics_listen}/metrics", flush=True)


def _admin_banner(secret: str, origin: str) -> str:
    return f"""
First start: created an admin token (only its hash is stored). It is shown only this once.

    {secret}

Open the console at {origin}/console and paste it there; scripts send it as
Authorization: Bearer <admin token> to {origin}/admin/ and {origin}/metrics.
"""


def _first_key_banner(secret: str, base: str, model: str) -> str:
    return f"""
First start: created an API key. It is shown only this once; keep it somewhere safe.

    {secret}

Try it:

    curl {base}/chat/completions \\
      -H "Authorization: Bearer {secret}" \\
      -H "Content-Type: application/json" \\
      -d '{{"model": "{model}", "stream": true, "messages": [{{"role": "user", "content": "Hello"}}]}}'
"""
