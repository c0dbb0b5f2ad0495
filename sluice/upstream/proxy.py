"""Outbound proxies: a CONNECT tunnel through an HTTP forward proxy, handed back as a plain socket on
which the client then speaks TLS (https upstreams) or plain HTTP, exactly as on a direct connection."""

from __future__ import annotations

import asyncio
import base64
import socket
from urllib.parse import unquote, urlsplit

from sluice.errors import UpstreamTimeout, UpstreamUnavailable

_MAX_REPLY = 16 << 10  # bytes of the proxy's reply head we will read


async def tunnel(proxy: str, host: str, port: int, seconds: float) -> socket.socket:
    """A connected socket to `host:port` through `proxy` (http://[user:pass@]host:port), within `seconds`."""
    p = urlsplit(proxy)
    loop = asyncio.get_running_loop()
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    head = f"CONNECT {target} HTTP/1.1\r\nhost: {target}\r\n"
    if p.username is not None:
        cred = f"{unquote(p.username)}:{unquote(p.password or '')}".encode()
        head += f"proxy-authorization: Basic {base64.b64encode(cred).decode()}\r\n"
    sock: socket.socket | None = None
    try:
        async with asyncio.timeout(seconds):
            infos = await loop.getaddrinfo(p.hostname, p.port or 8080, type=socket.SOCK_STREAM)
            family, kind, proto, _, addr = infos[0]
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            await loop.sock_connect(sock, addr)
            await loop.sock_sendall(sock, (head + "\r\n").encode("latin-1"))
            reply = b""
            while b"\r\n\r\n" not in reply:
                got = await loop.sock_recv(sock, 4096)
                if not got or len(reply) + len(got) > _MAX_REPLY:
                    raise UpstreamUnavailable("the outbound proxy closed the tunnel before answering")
                reply += got
    except TimeoutError:
        _close(sock)
        raise UpstreamTimeout(f"connecting through the outbound proxy took longer than {seconds:g}s") from None
    except OSError as exc:
        _close(sock)
        raise UpstreamUnavailable(f"the outbound proxy could not be reached: {str(exc)[:200]}") from None
    except UpstreamUnavailable:
        _close(sock)
        raise
    status_line = reply.split(b"\r\n", 1)[0].decode("latin-1", "replace")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or parts[1] != "200":
        _close(sock)
        raise UpstreamUnavailable(f"the outbound proxy refused the tunnel: {status_line[:200]}")
    assert sock is not None
    return sock


def _close(sock: socket.socket | None) -> None:
    if sock is not None:
        sock.close()
