"""The smallest own HTTP/1.1 server on asyncio + httptools (keep-alive, pipelined requests answered in
order): the floor of the "own server protocol" candidate in bench/servers.py, also compiled by mypyc."""

from __future__ import annotations

import asyncio
import sys

import httptools
import uvloop

REPLY = b'{"object":"hello","ok":true}'
HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(REPLY)


class HelloProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    # the request's url and headers are kept as a relay route would need them (uvicorn builds them too)
    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.url, self.headers, self.body = b"", [], []
        if self.transport is not None:
            self.transport.write(HEAD + REPLY)
            if not self.parser.should_keep_alive():
                self.transport.close()


async def serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(HelloProtocol, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


def main(port: int) -> None:
    uvloop.run(serve(port))


if __name__ == "__main__":
    main(int(sys.argv[1]))
