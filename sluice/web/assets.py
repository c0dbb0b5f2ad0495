"""Serves the browser pages (playground, admin console, key owner page) and their static files.

Pure ASGI, read-only: files come from `static/` next to this module, are read once and kept in memory,
go out with an exact content type, an ETag (answered with 304), `cache-control: no-cache` (always
revalidate, so an upgrade is picked up at once) and a strict content-security-policy: no inline
script or style, nothing but this origin. Paths are matched against the files that exist, so `..`,
encoded separators or absolute paths can never leave the directory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

STATIC_DIR = Path(__file__).parent / "static"

PAGES: dict[str, str] = {
    "/": "playground.html",
    "/playground": "playground.html",
    "/console": "console.html",
    "/me": "me.html",
}

CONTENT_TYPES: dict[str, bytes] = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".png": b"image/png",
    ".ico": b"image/x-icon",
    ".json": b"application/json",
    ".txt": b"text/plain; charset=utf-8",
}

CSP = (b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       b"connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       b"frame-ancestors 'none'")

SECURITY_HEADERS: Headers = [
    (b"content-security-policy", CSP),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: bytes
    etag: bytes


def is_web_path(path: str) -> bool:
    """True for the paths this module answers (the router asks before falling through to 404)."""
    return path in PAGES or path.startswith("/static/")


class WebAssets:
    """The ASGI handler for pages and `/static/<file>`; `headers` are the app's base response headers."""

    def __init__(self, root: Path = STATIC_DIR) -> None:
        self._files: dict[str, Asset] = {}
        if root.is_dir():
            for f in sorted(root.rglob("*")):
                ctype = CONTENT_TYPES.get(f.suffix.lower())
                if f.is_file() and ctype is not None and not f.name.startswith("."):
                    body = f.read_bytes()
                    tag = b'"' + hashlib.sha256(body).hexdigest()[:20].encode() + b'"'
                    self._files[f.relative_to(root).as_posix()] = Asset(body, ctype, tag)

    def lookup(self, path: str) -> Asset | None:
        page = PAGES.get(path)
        if page is not None:
            return self._files.get(page)
        if path.startswith("/static/"):
            # only names that exist in the table: no filesystem access, so no traversal
            return self._files.get(path[len("/static/"):])
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send, headers: Headers) -> None:
        method = scope["method"]
        asset = self.lookup(scope["path"])
        if asset is None:
            await _plain(send, 404, b"Not found\n", headers)
            return
        if method not in ("GET", "HEAD"):
            await _plain(send, 405, b"Method not allowed\n", [*headers, (b"allow", b"GET, HEAD")])
            return
        common: Headers = [*headers, *SECURITY_HEADERS, (b"etag", asset.etag), (b"cache-control", b"no-cache")]
        if _etag_matches(scope, asset.etag):
            await send({"type": "http.response.start", "status": 304, "headers": common})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        out: Headers = [(b"content-type", asset.content_type), (b"content-length", str(len(asset.body)).encode()),
                        *common]
        await send({"type": "http.response.start", "status": 200, "headers": out})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else asset.body,
                    "more_body": False})


def _etag_matches(scope: Scope, etag: bytes) -> bool:
    for k, v in scope["headers"]:
        if k == b"if-none-match":
            tags = [t.strip().removeprefix(b"W/") for t in v.split(b",")]
            return etag in tags or b"*" in tags
    return False


async def _plain(send: Send, status: int, body: bytes, headers: Headers) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        *headers, (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
        *SECURITY_HEADERS]})
    await send({"type": "http.response.body", "body": body, "more_body": False})
