"""`server.metrics_listen`: /metrics on its own address without a token (for a private network), served by a
thread in the supervising process, which reads every worker's values from the shared directory."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sluice.config import split_listen
from sluice.observability.metrics import CONTENT_TYPE, render


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != "/metrics":
            self.send_error(404)
            return
        body = render()
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # a scrape every few seconds is not worth a log line


def start_exporter(listen: str) -> ThreadingHTTPServer:
    """Serve /metrics on `host:port` from a daemon thread; returns the server (for `shutdown()`)."""
    host, port = split_listen(listen)
    server = ThreadingHTTPServer((host, port), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="sluice-metrics", daemon=True).start()
    return server
