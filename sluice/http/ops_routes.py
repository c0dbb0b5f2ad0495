"""Operator endpoints: `/ready` (honest readiness) and `/metrics` (Prometheus, behind the admin token;
`server.metrics_listen` serves it without one on a separate address, see observability/exporter.py)."""

from __future__ import annotations

import asyncio

from sluice.auth.admin_token import AdminToken
from sluice.config import Settings
from sluice.errors import AuthenticationFailed
from sluice.http.asgi import Headers, Scope, Send, header, send_bytes, send_error, send_json
from sluice.http.readiness import Probe, Readiness
from sluice.observability import metrics


class OpsRoutes:
    def __init__(self, settings: Settings, token: AdminToken, probes: dict[str, Probe]) -> None:
        self._token = token
        self.readiness = Readiness(probes, ttl=settings.server.ready_cache_seconds)

    async def ready(self, send: Send, headers: Headers, *, draining: bool) -> None:
        if draining:
            await send_json(send, 503, {"status": "draining"}, headers)
            return
        down = await self.readiness.down()
        if down:
            await send_json(send, 503, {"status": "unavailable", "down": down}, headers)
        else:
            await send_json(send, 200, {"status": "ready"}, headers)

    async def metrics(self, scope: Scope, send: Send, headers: Headers) -> None:
        if not self._token.enabled or not self._token.check(header(scope, b"authorization")):
            await send_error(send, AuthenticationFailed(
                "Metrics need the admin token (Authorization: Bearer <admin token>), or scrape "
                "server.metrics_listen.", code="invalid_admin_token"), headers)
            return
        body = await asyncio.to_thread(metrics.render)  # reading every worker's file is not for the loop
        await send_bytes(send, 200, body, [(b"content-type", metrics.CONTENT_TYPE.encode()), *headers])
