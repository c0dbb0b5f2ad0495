"""Instructions per request at one front door, for callgrind (repeatable on a loaded machine): the ASGI app
driven in process (no sockets) against a MockTransport, N requests after a warm-up, then the body
messages per request printed. The figure is the difference of two runs:

    for n in 100 500; do PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python -m bench.instructions --door chat --kind plain -n $n 2>&1 | grep -o 'Collected : [0-9]*'; done

(count at 500 minus count at 100) / 400. `--root` runs another checkout's `sluice` (A/B in one run).
Doors: chat, chat_from_claude, messages_pass, messages_tr, responses_pass, responses_tr; `--shape one`
sends a stream's 20 chunks in one upstream read, `split` one a read. `--server` feeds each request's bytes
to Sluice's own protocol (`sluice/server/`) on one kept-alive fake transport, so the count includes the
server and the request runs as served (the disconnect callback, no watcher task); without it the ASGI app
is called directly. `--wire` uses the real upstream client against `bench.upstream` in a child process
(callgrind does not follow children) instead of a MockTransport. `--uvloop` runs on uvloop's loop, as
`sluice serve` does (else the default loop's Python code for tasks, callbacks and timers is counted).
All three together count a request as served: `--server --wire --uvloop`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from typing import Any

import orjson

MSG = [{"role": "user", "content": "hi there"}]
DOORS: dict[str, tuple[str, str, dict[str, Any]]] = {  # door -> path, model, body
    "chat": ("/v1/chat/completions", "m", {"messages": MSG}),
    "chat_from_claude": ("/v1/chat/completions", "mc", {"messages": MSG}),
    "messages_pass": ("/v1/messages", "mc", {"messages": MSG, "max_tokens": 100}),
    "messages_tr": ("/v1/messages", "m", {"messages": MSG, "max_tokens": 100}),
    "responses_pass": ("/v1/responses", "mr", {"input": "hi there"}),
    "responses_tr": ("/v1/responses", "m", {"input": "hi there"}),
}
CONFIG = """[storage]
url = "sqlite:///{tmp}/s.db"
[[providers]]
name = "o"
kind = "openai"
base_url = "http://o.test/v1"
api_key = "sk-x"
[[providers]]
name = "r"
kind = "openai"
base_url = "http://r.test/v1"
api_key = "sk-x"
apis = ["chat", "responses"]
[[providers]]
name = "c"
kind = "anthropic"
base_url = "http://c.test/v1"
api_key = "sk-x"
[[models]]
name = "m"
pricing = {{ input = "1", output = "2" }}
targets = [{{ provider = "o", model = "up" }}]
[[models]]
name = "mr"
pricing = {{ input = "1", output = "2" }}
targets = [{{ provider = "r", model = "up" }}]
[[models]]
name = "mc"
pricing = {{ input = "1", output = "2" }}
targets = [{{ provider = "c", model = "up" }}]
"""


def _replies() -> dict[str, tuple[list[bytes], bytes]]:
    """Per upstream API: a 20-chunk stream's frames and a plain reply."""
    from sluice.sse import DONE_FRAME, encode_data, encode_event

    def ev(name: str, **fields: Any) -> bytes:
        return encode_event(name, orjson.dumps({"type": name, **fields}))

    def chunk(choices: list[Any], **extra: Any) -> bytes:
        return encode_data(orjson.dumps({"id": "c", "object": "chat.completion.chunk", "created": 1,
                                         "model": "up", "choices": choices, **extra}))

    usage = {"prompt_tokens": 11, "completion_tokens": 20, "total_tokens": 31}
    chat = [chunk([{"index": 0, "delta": {"content": f"tok{i} "}, "finish_reason": None}]) for i in range(20)]
    chat += [chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]), chunk([], usage=usage), DONE_FRAME]
    plain = orjson.dumps({"id": "c", "object": "chat.completion", "created": 1, "model": "up", "usage": usage,
                          "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"},
                                       "finish_reason": "stop"}]})
    text = {"type": "text", "text": ""}
    claude = [ev("message_start", message={"id": "msg_1", "type": "message", "role": "assistant", "model": "up",
                                           "content": [], "usage": {"input_tokens": 11, "output_tokens": 1}}),
              ev("content_block_start", index=0, content_block=text)]
    claude += [ev("content_block_delta", index=0, delta={"type": "text_delta", "text": f"tok{i} "})
               for i in range(20)]
    claude += [ev("content_block_stop", index=0),
               ev("message_delta", delta={"stop_reason": "end_turn"}, usage={"output_tokens": 20}),
               ev("message_stop")]
    claude_plain = orjson.dumps({"id": "msg_1", "type": "message", "role": "assistant", "model": "up",
                                 "content": [{"type": "text", "text": "hello"}], "stop_reason": "end_turn",
                                 "usage": {"input_tokens": 11, "output_tokens": 20}})
    resp: dict[str, Any] = {"id": "resp_1", "object": "response", "model": "up", "status": "in_progress",
                            "output": []}
    done = {**resp, "status": "completed", "usage": {"input_tokens": 11, "output_tokens": 20}}
    responses = [ev("response.created", response=resp)]
    responses += [ev("response.output_text.delta", item_id="m", output_index=0, content_index=0, delta=f"tok{i} ")
                  for i in range(20)]
    responses.append(ev("response.completed", response=done))
    return {"chat": (chat, plain), "messages": (claude, claude_plain), "responses": (responses, orjson.dumps(done))}


class _Transport:
    """The part of an asyncio transport the server protocol uses: writes kept, nothing sent."""

    def __init__(self) -> None:
        self.out: list[bytes] = []

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 2) if name in ("peername", "sockname") else default

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        raise AssertionError("the kept-alive connection was closed")

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


def _served(app: Any, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> Any:
    """`one()` through the own server protocol: the request's bytes in, the task awaited, the status read."""
    from types import SimpleNamespace

    from sluice.server.protocol import HttpProtocol

    state = SimpleNamespace(connections=set(), tasks=set(), default_headers=[(b"server", b"b")], total_requests=0)
    config = SimpleNamespace(loaded=True, loaded_app=app, timeout_keep_alive=5.0)
    conn = HttpProtocol(config, state)  # type: ignore[arg-type]
    transport = _Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    head = b"".join(b"%s: %s\r\n" % kv for kv in [*headers, (b"content-length", b"%d" % len(body))])
    wire = b"POST %s HTTP/1.1\r\nhost: t\r\n%s\r\n%s" % (path.encode(), head, body)

    async def one() -> int:
        transport.out.clear()
        conn.data_received(wire)
        await asyncio.gather(*state.tasks)
        await asyncio.sleep(0)  # the write the exchange flushes at the end of the step
        reply = b"".join(transport.out)
        assert reply.startswith(b"HTTP/1.1 200"), reply[:300]
        return len(transport.out)
    return one


def receiver(body: bytes, never: asyncio.Future[None]) -> Any:
    """An ASGI `receive` that gives `body` in one message, then waits on `never` (the client stays)."""
    asked = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if asked:
            return asked.pop()
        await asyncio.shield(never)
        raise AssertionError("unreachable")
    return receive


def _upstream() -> tuple[Any, str]:
    """`bench.upstream` in a child process: (the process, its base URL) once it answers."""
    import subprocess
    import time
    import urllib.request

    from bench.proc import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.upstream", "--port", str(port), "--chunks", "20"],
                            stdout=subprocess.DEVNULL)
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).close()
            return proc, f"http://127.0.0.1:{port}/v1"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("bench.upstream did not start")


async def _run(tmp: str, cfg: str, door: str, kind: str, shape: str, n: int, warm: int, server: bool,
               wire: bool) -> None:
    from sluice.auth.keys import hash_key, new_key
    from sluice.config import load
    from sluice.http.app import create_app, tune_gc
    from sluice.storage.base import KeyRecord
    from sluice.storage.sqlite import SQLiteStore
    from sluice.upstream.mock import MockReply, MockRequest, MockTransport

    replies = _replies()

    def upstream(req: MockRequest) -> MockReply:
        api = req.url.rsplit("/", 1)[-1]
        frames, plain = replies[api if api in replies else "chat"]
        if b'"stream":true' not in (req.body or b""):
            return MockReply.json(plain)
        return MockReply(200, {"content-type": "text/event-stream"}, [b"".join(frames)] if shape == "one"
                         else list(frames))

    store = SQLiteStore(f"sqlite:///{tmp}/s.db")
    app = create_app(load(cfg), store=store, transport=None if wire else MockTransport(upstream))
    await app.startup()
    tune_gc()  # as `sluice serve` does
    kid, secret = new_key()
    await store.create_key(KeyRecord(kid, "b", hash_key(secret)))
    headers = [(b"authorization", f"Bearer {secret}".encode()), (b"content-type", b"application/json"),
               (b"anthropic-version", b"2023-06-01")]
    path, model, extra = DOORS[door]
    body = orjson.dumps({"model": model, **extra, **({"stream": True} if kind == "stream" else {})})
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers, "query_string": b"",
             "scheme": "http", "http_version": "1.1", "server": ("t", 1), "client": ("c", 2)}

    async def one() -> int:
        sent: list[dict[str, Any]] = []
        receive = receiver(body, never)

        async def send(msg: dict[str, Any]) -> None:
            sent.append(msg)

        await app(dict(scope), receive, send)
        assert sent[0]["status"] == 200, sent
        return len(sent) - 1

    if server:
        one = _served(app, path, headers, body)

    for _ in range(warm):
        await one()
    messages = sum([await one() for _ in range(n)])
    await app.shutdown()
    what = "writes" if server else "body messages"
    print(f"{door} {kind} {shape}: {messages / n:.1f} {what} per request")


def prepare(root: str | None, base: str | None = None) -> tuple[str, str]:
    """Run `root`'s `sluice` when given (A/B); a temporary directory and the config written in it (its
    upstreams at `base` when given), as (directory, config path)."""
    if root:
        sys.path.insert(0, root)
    tmp = tempfile.mkdtemp()
    text = CONFIG.format(tmp=tmp)
    if base is not None:
        for name in ("o", "r", "c"):
            text = text.replace(f"http://{name}.test/v1", base)
    cfg = os.path.join(tmp, "s.toml")
    with open(cfg, "w") as f:
        f.write(text)
    return tmp, cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--door", choices=sorted(DOORS), default="chat")
    ap.add_argument("--kind", choices=("plain", "stream"), default="plain")
    ap.add_argument("--shape", choices=("one", "split"), default="one")
    ap.add_argument("-n", type=int, default=100)
    ap.add_argument("--warm", type=int, default=30)
    ap.add_argument("--server", action="store_true", help="through the own server protocol on a fake transport")
    ap.add_argument("--wire", action="store_true", help="the real upstream client against bench.upstream")
    ap.add_argument("--uvloop", action="store_true", help="on uvloop's event loop, as `sluice serve` runs")
    ap.add_argument("--root", help="a checkout whose `sluice` to run instead of this one")
    args = ap.parse_args()
    child, base = _upstream() if args.wire else (None, None)
    tmp, cfg = prepare(args.root, base)
    if args.uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        asyncio.run(_run(tmp, cfg, args.door, args.kind, args.shape, args.n, args.warm, args.server, args.wire))
    finally:
        if child is not None:
            child.kill()


if __name__ == "__main__":
    main()
