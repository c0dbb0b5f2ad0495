"""Fake OpenAI-compatible upstream: a raw asyncio Protocol on uvloop + httptools, built never to be the
bottleneck. Each request's shape (chunks, chunk size, time to first chunk, gaps) comes from x-bench-*
headers, defaulting to the CLI flags, so one upstream serves every scenario."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from collections import deque
from typing import Any

import httptools
import orjson

from bench.doors import CREATED, dialect_for, embeddings

_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


class Defaults:
    """Shape used when a request carries no x-bench-* header."""

    chunks = 8
    chunk_size = 4
    ttft_ms = 0.0
    gap_ms = 0.0


def _head(status: int, ctype: bytes, length: int, close: bool) -> bytes:
    reason = {200: b"OK", 400: b"Bad Request", 404: b"Not Found"}.get(status, b"Error")
    conn = b"connection: close\r\n" if close else b""
    return b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n%s\r\n" % (
        status, reason, ctype, length, conn)


def _frame(event: bytes) -> bytes:
    """One SSE event as one HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(event), event)


def _shape(headers: dict[bytes, bytes], payload: dict) -> dict[bytes, bytes]:
    """x-bench-* headers, or the same knobs in the last message ("bench x-bench-chunks=20 ..."), since
    a gateway need not forward unknown headers but always forwards the prompt."""
    try:
        text = payload["input"] if "input" in payload else payload["messages"][-1]["content"]
    except (KeyError, IndexError, TypeError):
        return headers
    if not isinstance(text, str) or not text.startswith("bench "):
        return headers
    found = dict(kv.split("=", 1) for kv in text.split()[1:] if "=" in kv)
    return {**{k.encode(): v.encode() for k, v in found.items()}, **headers}


class _Request:
    __slots__ = ("body", "close", "headers", "method", "url")

    def __init__(self, method: bytes, url: bytes, headers: dict[bytes, bytes], body: bytes, close: bool):
        self.method, self.url, self.headers, self.body, self.close = method, url, headers, body, close


class UpstreamProtocol(asyncio.Protocol):
    """One keep-alive connection; requests are answered in order (a stream blocks the next request)."""

    counter = 0

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[_Request] = deque()
        self.busy = False
        self.timer: asyncio.TimerHandle | None = None
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []

    # -- transport callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._send(400, b"text/plain", b"bad request", close=True)

    # -- parser callbacks
    def on_message_begin(self) -> None:
        self._url, self._headers, self._body = b"", {}, []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        req = _Request(self.parser.get_method(), self._url, self._headers, b"".join(self._body),
                       not self.parser.should_keep_alive())
        if self.busy:
            self.queue.append(req)
        else:
            self._handle(req)

    # -- responses
    def _send(self, status: int, ctype: bytes, body: bytes, close: bool = False) -> None:
        if self.transport is None:
            return
        self.transport.write(_head(status, ctype, len(body), close) + body)
        if close:
            self.transport.close()

    def _next(self) -> None:
        self.busy = False
        while self.queue and not self.busy and self.transport is not None:
            self._handle(self.queue.popleft())

    def _handle(self, req: _Request) -> None:
        path = req.url.split(b"?", 1)[0]
        if req.method == b"POST" and path.endswith(b"/embeddings"):
            self._embeddings(req)
        elif req.method == b"POST" and dialect_for(path) is not None:
            self._chat(req, path)
        elif path in (b"/health", b"/v1/health"):
            self._send(200, b"text/plain", b"ok", req.close)
        elif path.endswith(b"/models"):
            body = orjson.dumps({"object": "list", "data": [
                {"id": "bench-model", "object": "model", "created": CREATED, "owned_by": "bench"}]})
            self._send(200, b"application/json", body, req.close)
        else:
            err = {"error": {"message": "not found", "type": "invalid_request_error", "param": None,
                             "code": None}}
            self._send(404, b"application/json", orjson.dumps(err), req.close)

    def _embeddings(self, req: _Request) -> None:
        try:
            payload = orjson.loads(req.body)
        except orjson.JSONDecodeError:
            payload = {}
        body = orjson.dumps(embeddings(payload.get("model", "bench-model"), payload.get("input", ""),
                                       max(1, len(req.body) // 4)))
        self._send(200, b"application/json", body, req.close)

    def _chat(self, req: _Request, path: bytes) -> None:
        try:
            payload = orjson.loads(req.body)
        except orjson.JSONDecodeError:
            self._send(400, b"application/json", b'{"error":{"message":"bad json","type":'
                       b'"invalid_request_error","param":null,"code":null}}', req.close)
            return
        h = _shape(req.headers, payload)
        chunks = int(h.get(b"x-bench-chunks", Defaults.chunks))
        size = int(h.get(b"x-bench-chunk-size", Defaults.chunk_size))
        ttft = float(h.get(b"x-bench-ttft-ms", Defaults.ttft_ms)) / 1000.0
        gap = float(h.get(b"x-bench-gap-ms", Defaults.gap_ms)) / 1000.0
        UpstreamProtocol.counter += 1
        cid = f"chatcmpl-bench-{os.getpid()}-{UpstreamProtocol.counter}"
        model = payload.get("model", "bench-model")
        usage = {"prompt_tokens": max(1, len(req.body) // 4), "completion_tokens": chunks,
                 "total_tokens": max(1, len(req.body) // 4) + chunks}
        opts = payload.get("stream_options") or {}
        dialect = dialect_for(path)(cid, model, usage, bool(opts.get("include_usage")))  # type: ignore[misc]
        if payload.get("stream"):
            _Stream(self, req, dialect, chunks, "x" * size, ttft, gap).start()
            return
        body = orjson.dumps(dialect.reply("x" * (size * chunks)))
        if ttft + gap > 0:  # plain answer delayed like a whole generation
            self.busy = True
            delay = ttft + gap * max(0, chunks - 1)
            self.timer = asyncio.get_running_loop().call_later(delay, self._delayed, body, req.close)
        else:
            self._send(200, b"application/json", body, req.close)

    def _delayed(self, body: bytes, close: bool) -> None:
        self.timer = None
        self._send(200, b"application/json", body, close)
        self._next()


class _Stream:
    """Sends one SSE response on a schedule: the dialect's opening events with the headers, then
    content event i at ttft + i*gap, each stamped with its send time (bench_ts, µs since the epoch)."""

    __slots__ = ("close", "dialect", "gap", "i", "loop", "n", "piece", "proto", "t0", "ttft")

    def __init__(self, proto: UpstreamProtocol, req: _Request, dialect: Any, n: int, piece: str,
                 ttft: float, gap: float):
        self.proto, self.dialect, self.n, self.piece = proto, dialect, n, piece
        self.ttft, self.gap, self.close = ttft, gap, req.close
        self.loop = asyncio.get_running_loop()
        self.t0 = self.loop.time()
        self.i = 0

    def start(self) -> None:
        self.proto.busy = True
        assert self.proto.transport is not None
        self.proto.transport.write(_SSE_HEAD + _frame(self.dialect.first()))
        if self.ttft <= 0 and self.gap <= 0:
            while self.i < self.n and self._step(batch=True):
                pass
        else:
            self.proto.timer = self.loop.call_at(self.t0 + self.ttft, self._step)

    def _step(self, batch: bool = False) -> bool:
        t = self.proto.transport
        if t is None:
            return False
        out = self.dialect.content(self.piece, self.i)
        self.i += 1
        if self.i < self.n:
            t.write(_frame(out))
            if not batch:
                self.proto.timer = self.loop.call_at(self.t0 + self.ttft + self.i * self.gap, self._step)
            return True
        t.write(_frame(out + self.dialect.tail()) + b"0\r\n\r\n")
        self.proto.timer = None
        if self.close:
            t.close()
        else:
            self.proto._next()
        return False


def listen_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(4096)
    return sock


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(UpstreamProtocol, sock=listen_socket(host, port), backlog=4096)
    print(f"upstream ready pid={os.getpid()} http://{host}:{port}/v1", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.upstream", description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=18000)
    ap.add_argument("--procs", type=int, default=1, help="processes sharing the port (SO_REUSEPORT)")
    ap.add_argument("--chunks", type=int, default=Defaults.chunks)
    ap.add_argument("--chunk-size", type=int, default=Defaults.chunk_size)
    ap.add_argument("--ttft-ms", type=float, default=Defaults.ttft_ms)
    ap.add_argument("--gap-ms", type=float, default=Defaults.gap_ms)
    a = ap.parse_args(argv)
    Defaults.chunks, Defaults.chunk_size, Defaults.ttft_ms, Defaults.gap_ms = (
        a.chunks, a.chunk_size, a.ttft_ms, a.gap_ms)
    from bench.proc import raise_nofile
    raise_nofile()
    for _ in range(a.procs - 1):
        if os.fork() == 0:
            break
    import uvloop
    try:
        uvloop.run(serve(a.host, a.port))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
