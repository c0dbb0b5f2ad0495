"""The static asset handler: pages and files with exact types, CSP, ETag/304, and no way out of static/."""

from __future__ import annotations

from typing import Any

import pytest

from sluice.web.assets import WebAssets, is_web_path


async def call(app: WebAssets, path: str, method: str = "GET", headers: list[tuple[bytes, bytes]] | None = None
               ) -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(msg: Any) -> None:
        sent.append(msg)

    await app({"type": "http", "method": method, "path": path, "headers": headers or []}, receive, send, [])
    return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]


@pytest.mark.parametrize(("path", "ctype"), [
    ("/", b"text/html; charset=utf-8"), ("/playground", b"text/html; charset=utf-8"),
    ("/console", b"text/html; charset=utf-8"), ("/me", b"text/html; charset=utf-8"),
    ("/static/sse.js", b"text/javascript; charset=utf-8"), ("/static/style.css", b"text/css; charset=utf-8"),
    ("/static/favicon.svg", b"image/svg+xml"),
])
async def test_serves_pages_and_files(path: str, ctype: bytes) -> None:
    status, headers, body = await call(WebAssets(), path)
    assert status == 200 and headers[b"content-type"] == ctype and body
    assert b"default-src 'self'" in headers[b"content-security-policy"]
    assert b"unsafe-inline" not in headers[b"content-security-policy"]
    assert headers[b"x-content-type-options"] == b"nosniff"
    assert headers[b"cache-control"] == b"no-cache"


async def test_etag_revalidation_and_head() -> None:
    app = WebAssets()
    _, headers, _ = await call(app, "/static/sse.js")
    status, _, body = await call(app, "/static/sse.js", headers=[(b"if-none-match", headers[b"etag"])])
    assert status == 304 and body == b""
    status, headers, body = await call(app, "/static/sse.js", method="HEAD")
    assert status == 200 and body == b"" and int(headers[b"content-length"]) > 0
    assert (await call(app, "/static/sse.js", method="POST"))[0] == 405


@pytest.mark.parametrize("path", ["/static/../assets.py", "/static/..%2fassets.py", "/static//etc/passwd",
                                  "/static/", "/static/nope.js", "/static/../../pyproject.toml"])
async def test_no_path_traversal(path: str) -> None:
    assert (await call(WebAssets(), path))[0] == 404


def test_routing_predicate() -> None:
    assert is_web_path("/") and is_web_path("/console") and is_web_path("/static/x.js")
    assert not is_web_path("/v1/models") and not is_web_path("/admin/keys")
