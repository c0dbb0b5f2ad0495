"""A hand-written HTTP/1.1 client over asyncio streams: sees status lines, headers and chunk framing as sent."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

TIMEOUT = 10.0


@dataclass
class Head:
    status: int
    headers: list[tuple[str, str]]
    raw: bytes
    at: float = field(default_factory=time.monotonic)  # when the head was complete

    def get(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name.lower():
                return v
        return None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name.lower()]


class RawConn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> RawConn:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        return cls(r, w)

    async def send(self, method: str, path: str, *, body: bytes | None = None,
                   headers: dict[str, str] | None = None) -> None:
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
        for k, v in (headers or {}).items():
            lines.append(f"{k}: {v}")
        if body is not None and not any(k.lower() == "content-length" for k in headers or {}):
            lines.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))
        await self.writer.drain()

    async def head(self) -> Head:
        raw = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        at = time.monotonic()
        status_line, *rest = raw.decode("latin-1").split("\r\n")
        version, status, *_ = status_line.split(" ")
        assert version == "HTTP/1.1", status_line
        headers = []
        for line in rest:
            if line:
                k, _, v = line.partition(":")
                headers.append((k.strip().lower(), v.strip()))
        return Head(int(status), headers, raw, at)

    async def chunk(self) -> bytes | None:
        """One chunk of a chunked body; None for the terminating zero-length chunk (trailers consumed)."""
        size_line = await asyncio.wait_for(self.reader.readuntil(b"\r\n"), TIMEOUT)
        size = int(size_line.split(b";")[0].strip(), 16)
        if size == 0:
            trailer = await asyncio.wait_for(self.reader.readuntil(b"\r\n"), TIMEOUT)
            assert trailer == b"\r\n", trailer
            return None
        data = await asyncio.wait_for(self.reader.readexactly(size + 2), TIMEOUT)
        assert data.endswith(b"\r\n")
        return data[:-2]

    async def chunks(self) -> list[bytes]:
        out = []
        while (c := await self.chunk()) is not None:
            out.append(c)
        return out

    async def body(self, head: Head) -> bytes:
        if head.get("transfer-encoding") == "chunked":
            return b"".join(await self.chunks())
        n = int(head.get("content-length") or 0)
        return await asyncio.wait_for(self.reader.readexactly(n), TIMEOUT)

    async def eof(self, within: float = 0.3) -> bool:
        """True when the server has nothing more to send (closed, or at least silent: no stray bytes)."""
        try:
            extra = await asyncio.wait_for(self.reader.read(1), within)
        except TimeoutError:
            return True
        return extra == b""

    def close(self) -> None:
        self.writer.close()

    def abort(self) -> None:
        """Drop the connection at once, as a client that goes away does."""
        self.writer.transport.abort()


def chat_body(model: str = "gpt-4o", *, stream: bool = True, include_usage: bool | None = None,
              **extra: Any) -> bytes:
    doc: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "Say hello"}], **extra}
    if stream:
        doc["stream"] = True
    if include_usage is not None:
        doc["stream_options"] = {"include_usage": include_usage}
    return json.dumps(doc).encode()


async def post_chat(port: int, key: str, body: bytes, **headers: str) -> tuple[RawConn, Head]:
    conn = await RawConn.open(port)
    await conn.send("POST", "/v1/chat/completions", body=body,
                    headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json", **headers})
    return conn, await conn.head()


def frames(body: bytes) -> list[bytes]:
    """The SSE frames of a body, each with its terminating blank line; asserts nothing is left over."""
    out = []
    pos = 0
    while pos < len(body):
        end = body.index(b"\n\n", pos) + 2
        out.append(body[pos:end])
        pos = end
    return out


def data_payloads(body: bytes) -> list[bytes]:
    return [f[len(b"data: "):-2] for f in frames(body) if f.startswith(b"data: ")]
