"""The ASGI app factory: resources owned by the lifespan, a small router, CORS, x-request-id everywhere."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from sluice.accounts.retention import Retention
from sluice.auth.principal import Authenticator
from sluice.channels.catalog import Catalog
from sluice.channels.hub import ChannelHub
from sluice.clock import SYSTEM_CLOCK, Clock
from sluice.config import Settings
from sluice.dialects.anthropic_messages.reply import error_body as anthropic_error_body
from sluice.errors import InvalidRequest, NotFound, SluiceError
from sluice.http.admin_routes import AdminRoutes, DashboardRoutes
from sluice.http.asgi import (
    JSON_CT,
    Headers,
    Message,
    Receive,
    Scope,
    Send,
    header,
    send_bytes,
    send_error,
    send_json,
)
from sluice.http.cors import CorsPolicy
from sluice.http.drain import Drain
from sluice.http.lifecycle import Answered, Lifecycle
from sluice.http.messages_route import MessagesRoute
from sluice.http.openai_routes import OpenAIRoutes
from sluice.http.ops_routes import OpsRoutes
from sluice.http.readiness import Probe
from sluice.http.responses_route import ResponsesRoute
from sluice.metering.admission import Admission
from sluice.metering.ledger import LedgerWriter
from sluice.metering.limits import Limiter, MemoryLimiter
from sluice.metering.tokenizer import make_counter_factory
from sluice.observability import metrics
from sluice.observability.logs import REQUEST_ID, write_buffered_logs
from sluice.observability.sampler import Sampler
from sluice.providers.base import Provider
from sluice.providers.registry import build_providers
from sluice.relay import Relay, new_request_id
from sluice.routing.table import ModelTable
from sluice.storage import open_store
from sluice.storage.base import Store
from sluice.upstream import Transport, UpstreamClient, UpstreamLimits
from sluice.web import WebAssets, is_web_path

log = logging.getLogger("sluice")

_ALLOW_HEADERS = (b"authorization, content-type, openai-organization, openai-project, x-api-key, "
                  b"anthropic-version, anthropic-beta, x-stainless-lang, x-stainless-package-version, "
                  b"x-stainless-os, x-stainless-arch, x-stainless-runtime, x-stainless-runtime-version, "
                  b"x-stainless-retry-count, x-stainless-read-timeout, x-stainless-timeout, "
                  b"x-stainless-helper-method, x-stainless-async")
_EXPOSE = b"x-request-id, retry-after, x-ratelimit-limit-requests, x-ratelimit-remaining-requests"


@dataclass(slots=True)
class Resources:
    """What the lifespan opens and closes; reached through `App.resources`, never a bare global."""

    store: Store
    client: Transport
    providers: dict[str, Provider]
    ledger: LedgerWriter
    relay: Relay
    routes: OpenAIRoutes
    admin: AdminRoutes
    dashboard: DashboardRoutes
    messages: MessagesRoute
    ops: OpsRoutes
    sampler: Sampler
    responses: ResponsesRoute


def _apply_catalog(merged: Settings, relay: Relay, client: Transport) -> None:
    """Swap in the providers and models the catalog now says; requests in flight keep the objects they
    hold (their provider, their stream), new ones see the new table."""
    providers = build_providers(merged.providers, client)
    relay.providers = providers
    relay.table = ModelTable(merged.models, merged.providers)
    relay.admission.set_models(merged.models)
    relay.labels = metrics.Labels(relay.table.names(), list(providers))
    if relay.channels is not None:
        relay.channels.configure(merged, providers)
        relay.channels.relist()


class App:
    """The ASGI application. Tests inject the seams: `store` (by default the lifespan opens the one
    `settings.storage` names), `transport` (by default the real upstream client pool) and `clock`."""

    def __init__(self, settings: Settings, *, store: Store | None = None, transport: Transport | None = None,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.settings = settings
        self._injected_store = store
        self._injected_transport = transport
        self.clock = clock
        self._res: Resources | None = None
        self.drain = Drain()
        # run once the app has started, in the serving process (cli/serve.py installs its signal handling
        # and the GC tuning there: an app served inside a test process leaves that process's GC alone)
        self.on_started: list[Callable[[], None]] = []
        self._cors = CorsPolicy(settings.server.cors_origins)
        self._admin_cors = CorsPolicy(settings.server.admin_cors_origins)
        self.web = WebAssets()
        self._retention: Retention | None = None

    @property
    def resources(self) -> Resources:
        if self._res is None:
            raise RuntimeError("the app has not started (lifespan not run)")
        return self._res

    async def startup(self) -> None:
        s = self.settings
        store = self._injected_store or open_store(s)
        await store.open()
        srv = s.server
        client = self._injected_transport or UpstreamClient(limits=UpstreamLimits(
            srv.max_upstream_reply_bytes, srv.max_upstream_line_bytes, srv.max_upstream_event_bytes))
        providers = build_providers(s.providers, client)
        ledger = LedgerWriter(store, interval=s.ledger.flush_interval, batch=s.ledger.batch)
        ledger.start()
        auth = Authenticator(store, ttl=s.server.key_cache_seconds, clock=self.clock)
        limiter = make_limiter(s, self.clock)
        admission = Admission(s, store, limiter, clock=self.clock)
        await admission.start()
        self._retention = Retention(store, s.ledger.retention_days, s.ledger.retention_check_seconds)
        self._retention.start()
        channels = ChannelHub(s, providers, store, client, clock=self.clock)
        await channels.start()
        relay = Relay(store=store, providers=providers, table=ModelTable(s.models, s.providers),
                      ledger=ledger, auth=auth, admission=admission, durable=s.ledger.durable,
                      counter_factory=make_counter_factory(s.tokenizer.encoding_file), channels=channels,
                      clock=self.clock)
        catalog = Catalog(s, store, lambda merged: _apply_catalog(merged, relay, client))
        await catalog.start()

        def changed() -> None:
            catalog.wake()
            channels.wake()
        await store.watch_channels(changed)
        life = Lifecycle(relay, max_body=s.server.max_body_bytes, inflight=self.drain.inflight)
        beat = s.server.heartbeat_seconds
        routes = OpenAIRoutes(life, heartbeat=beat)
        admin = AdminRoutes(s, relay, catalog)
        probes: dict[str, Probe] = {"database": store.count_reservations}
        if s.redis.url:
            probes["redis"] = limiter.ping  # type: ignore[attr-defined]  # the RedisLimiter
        sampler = Sampler(lambda: ledger.depth, store.count_reservations)
        sampler.start()
        self._res = Resources(store, client, providers, ledger, relay, routes, admin, DashboardRoutes(relay),
                              MessagesRoute(life, heartbeat=beat), OpsRoutes(s, admin.token, probes), sampler,
                              ResponsesRoute(life, heartbeat=beat))
        for hook in self.on_started:
            hook()

    async def shutdown(self) -> None:
        res, self._res = self._res, None
        if res is None:
            return
        await res.sampler.aclose()
        if self._retention is not None:
            await self._retention.aclose()
        if res.admin.catalog is not None:
            await res.admin.catalog.aclose()
        if res.relay.channels is not None:
            await res.relay.channels.aclose()
        await res.relay.admission.aclose()
        await res.ledger.close()
        for p in res.relay.providers.values():
            await p.aclose()
        await res.client.aclose()
        await res.store.close()
        metrics.process_exiting(os.getpid())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            rid = new_request_id()
            REQUEST_ID.set(rid)  # this request's task: its log lines carry the id
            try:
                await self._http(scope, receive, send, rid)
            except Answered:  # the request's scope already ended it
                pass
            except Exception:  # the outermost boundary: nothing escapes to the server's plain-text 500
                await self._internal_error(scope, send, rid)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                self.drain.begin()
                await self.shutdown()
                # every request has been logged by now; a worker ended by its re-raised SIGTERM runs no atexit
                await asyncio.to_thread(write_buffered_logs)
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _base_headers(self, scope: Scope, rid: str) -> Headers:
        headers: Headers = [(b"x-request-id", rid.encode())]
        if self.drain.draining:  # a kept-alive connection (a balancer's pool) closes after this response
            headers.append((b"connection", b"close"))
        policy = self._admin_cors if scope["path"].startswith("/admin/") else self._cors
        allowed = policy.allow(header(scope, b"origin"))
        if allowed is not None:
            headers.append((b"access-control-allow-origin", allowed))
            headers.append((b"access-control-expose-headers", _EXPOSE))
        return headers

    async def _internal_error(self, scope: Scope, send: Send, rid: str) -> None:
        """Answer an exception no route caught with the OpenAI envelope and x-request-id. If the response had
        already started, the send fails and the server closes the connection: the client sees a cut, not a
        fake end."""
        log.exception("unhandled error in %s %s (%s)", scope.get("method"), scope.get("path"), rid)
        err = SluiceError("The server had an error processing your request.")
        headers = self._base_headers(scope, rid)
        try:
            if scope.get("path", "").startswith(("/v1/messages", "/messages")):
                await send_bytes(send, err.status, anthropic_error_body(err), [JSON_CT, *headers])
            else:
                await send_error(send, err, headers)
        except Exception:
            log.debug("could not send the error response for %s", rid, exc_info=True)

    async def _http(self, scope: Scope, receive: Receive, send: Send, rid: str) -> None:
        headers = self._base_headers(scope, rid)
        path: str = scope["path"]
        method: str = scope["method"]
        res = self.resources
        if method == "OPTIONS":  # before any path match: browsers preflight the chat path itself
            await self._preflight(scope, send, headers)
            return
        if path == "/v1/chat/completions" or path == "/chat/completions":
            if method == "POST":
                await res.routes.chat_completions(scope, receive, send, rid, headers)
                return
        elif path in ("/v1/embeddings", "/embeddings") and method == "POST":
            await res.routes.embeddings(scope, receive, send, rid, headers)
            return
        elif path in ("/v1/completions", "/completions") and method == "POST":
            await res.routes.completions(scope, receive, send, rid, headers)
            return
        elif path in ("/v1/messages", "/messages") and method == "POST":
            await res.messages.handle(scope, receive, send, rid, headers)
            return
        elif path in ("/v1/messages/count_tokens", "/messages/count_tokens") and method == "POST":
            await res.messages.count_tokens(scope, receive, send, rid, headers)
            return
        elif path in ("/v1/responses", "/responses") and method == "POST":
            await res.responses.create(scope, receive, send, rid, headers)
            return
        elif path.startswith(("/v1/responses/", "/responses/")) and method in ("GET", "DELETE", "POST"):
            await res.responses.stored(scope, receive, send, rid, headers, path.split("/responses/", 1)[1])
            return
        elif path in ("/v1/models", "/models") and method == "GET":
            await res.routes.list_models(scope, receive, send, rid, headers)
            return
        elif path.startswith(("/v1/models/", "/models/")) and method == "GET":
            model_id = path.split("/models/", 1)[1]
            await res.routes.get_model(scope, receive, send, rid, headers, model_id)
            return
        elif path.startswith("/admin/"):
            await res.admin.handle(scope, receive, send, headers)
            return
        elif path.startswith("/v1/dashboard/"):
            await res.dashboard.handle(scope, receive, send, headers)
            return
        elif path in ("/health", "/healthz", "/livez"):
            await send_json(send, 200, {"status": "ok"}, headers)
            return
        elif is_web_path(path):
            await _drain(receive)
            await self.web(scope, receive, send, headers)
            return
        elif path in ("/ready", "/readyz"):
            await res.ops.ready(send, headers, draining=self.drain.draining)
            return
        elif path == "/metrics" and method == "GET":
            await res.ops.metrics(scope, send, headers)
            return
        await self._not_found(scope, receive, send, headers)

    async def _preflight(self, scope: Scope, send: Send, headers: Headers) -> None:
        req_headers = header(scope, b"access-control-request-headers")
        await send({"type": "http.response.start", "status": 204, "headers": [
            *headers,
            (b"access-control-allow-methods", b"GET, POST, PATCH, DELETE, OPTIONS"),
            (b"access-control-allow-headers", req_headers or _ALLOW_HEADERS),
            (b"access-control-max-age", b"86400")]})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _not_found(self, scope: Scope, receive: Receive, send: Send, headers: Headers) -> None:
        await _drain(receive)
        path, method = scope["path"], scope["method"]
        known = ("/v1/chat/completions", "/v1/messages", "/v1/messages/count_tokens", "/v1/models", "/health",
                 "/ready", "/v1/responses", "/v1/embeddings", "/v1/completions")
        err: SluiceError
        if path in known:
            err = InvalidRequest(f"Method {method} is not allowed on {path}.", code="method_not_allowed",
                                 status=405)
        else:
            err = NotFound(f"Unknown request URL: {method} {path}. Please check the URL and method.",
                           code="unknown_url")
        await send_error(send, err, headers)


async def _drain(receive: Receive) -> None:
    msg: Message = {"more_body": True}
    try:
        async with asyncio.timeout(5):
            while msg.get("more_body"):
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    return
    except TimeoutError:
        return


def tune_gc() -> None:
    """Move what startup built out of the collector's sight, and keep young collections small.

    Measured (docs/decisions.md): the default thresholds spent ~10% of the CPU in collections, most of it
    re-scanning long-lived startup objects in full collections (hence the freeze); a young generation of
    20,000 objects then cost 20-30 ms of CPU a collection (cache-cold), the tail at concurrency 1, where
    1,500 costs ~1 ms and less CPU in all.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(1_500, 20, 20)


def make_limiter(s: Settings, clock: Clock = SYSTEM_CLOCK) -> Limiter:
    """Redis when configured (limits shared by every instance, on the Redis server's clock), else this
    process's memory (on `clock`)."""
    if s.redis.url:
        from sluice.metering.redis_limits import RedisLimiter

        return RedisLimiter(s.redis.url)
    return MemoryLimiter(clock=clock)


def create_app(settings: Settings, *, store: Store | None = None, transport: Transport | None = None,
               clock: Clock = SYSTEM_CLOCK) -> App:
    """The app, with the seams tests inject: a store, an upstream transport (`sluice.upstream.mock`), a clock."""
    return App(settings, store=store, transport=transport, clock=clock)
