"""The key pools of every provider, their shared states, and the background loop that keeps them true.

`call(provider, fn, session)` runs one attempt with the next usable key (a session's own key first),
moving on to the pool's other keys when an upstream refuses a key (disabled, shared through the database)
or rate-limits it (cooled locally). Per-key `rpm` is counted by `rates` (through Redis when configured).
The loop reads the shared states every `channels.poll_seconds` and probes disabled or cooling keys;
a probe that succeeds re-enables its key for every instance.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sluice.channels.health import classify
from sluice.channels.offered import fetch_models
from sluice.channels.pool import ACTIVE, COOLING, DISABLED_AUTO, DISABLED_MANUAL, KeyPool, UpstreamKey
from sluice.channels.probe import ProbeResult, probe
from sluice.channels.rates import key_rates
from sluice.channels.ticker import Ticker
from sluice.clock import SYSTEM_CLOCK, Clock
from sluice.config import ProviderConfig, Settings, UpstreamKeyConfig
from sluice.errors import Conflict, NotFound, UpstreamError, UpstreamUnavailable
from sluice.providers.base import Provider
from sluice.storage.base import Store, UpstreamKeyState
from sluice.upstream import Transport

T = TypeVar("T")
LIST_MODELS_SECONDS = 300.0  # how often the upstreams behind pattern models are asked for their lists
log = logging.getLogger("sluice.channels")


class ChannelHub:
    def __init__(self, settings: Settings, providers: dict[str, Provider], store: Store,
                 client: Transport | None = None, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock  # cool-downs, per-key rpm, probe schedules and state timestamps
        self._providers = providers
        self._store = store
        self._client = client
        self.offered: dict[str, list[str]] = {}  # provider -> the model ids its upstream lists
        self._list_for: list[ProviderConfig] = []
        self._lister = Ticker(LIST_MODELS_SECONDS, self.refresh_offered, "listing upstream models")
        self._cooldown = settings.channels.cooldown_seconds
        self._rates = key_rates(settings.redis.url, clock)
        self.pools: dict[str, KeyPool] = {}
        self._probe_model: dict[str, str] = {}
        self._probe_interval: dict[str, float] = {}
        self.configure(settings, providers)
        self._ticker = Ticker(settings.channels.poll_seconds, self._tick, "channel state sync")
        self._writes: set[asyncio.Task[None]] = set()   # state writes: awaited at close
        self._listing: set[asyncio.Task[None]] = set()  # model listings: cancelled at close

    def configure(self, settings: Settings, providers: dict[str, Provider]) -> None:
        """(Re)build the pools from settings; keys that stay keep their state and counters."""
        old = {(name, k.id): k for name, pool in self.pools.items() for k in pool.keys}
        pools: dict[str, KeyPool] = {}
        probe_model: dict[str, str] = {}
        for p in settings.providers:
            model = p.probe_model or next((t.model for m in settings.models for t in m.targets
                                           if t.provider == p.name and "*" not in t.model), None)
            if model:
                probe_model[p.name] = model  # also for providers without a pool: the test button uses it
            if not p.api_keys:
                continue  # a single `api_key` keeps the plain failover (cool-downs, no auto-disable)
            keys = [UpstreamKey(p.api_key)] if p.api_key else []
            keys += [UpstreamKey(k.key, k.weight, rpm=k.rpm) if isinstance(k, UpstreamKeyConfig) else UpstreamKey(k)
                     for k in p.api_keys]
            for i, k in enumerate(keys):
                kept = old.get((p.name, k.id))
                if kept is not None:
                    kept.weight, kept.rpm = k.weight, k.rpm
                    keys[i] = kept
            pools[p.name] = KeyPool(p.name, keys, self._clock)
            self._probe_interval[p.name] = p.probe_interval
        self._providers, self.pools, self._probe_model = providers, pools, probe_model
        targeted = {t.provider for m in settings.models if "*" in m.name for t in m.targets}
        self._list_for = [p for p in settings.providers if p.name in targeted]

    # --- the request path ---
    async def call(self, provider: str, fn: Callable[[str | None], Awaitable[T]], session: str | None = None) -> T:
        """`fn(key)` with the pool's keys in rotation, or in the session's own order; a provider without a
        pool gets `fn(None)`. Only keys with an `rpm` are counted (no Redis round trip for the others)."""
        pool = self.pools.get(provider)
        if pool is None:
            return await fn(None)
        last: UpstreamError | None = None
        for key in pool.order(session):
            if key.rpm is not None and not await self._rates.take(key):
                continue  # at its per-key rate: full since the order was drawn, or full on another instance
            try:
                result = await fn(key.secret)
            except UpstreamError as exc:
                pool.failed(key, exc.message)
                verdict = classify(exc)
                if verdict is None:
                    raise  # about the request or the upstream, not the key: the route's failover decides
                if verdict.action == "disable":
                    self._disable(pool, key, verdict.reason)
                else:
                    pool.cool(key, verdict.seconds or self._cooldown, verdict.reason)
                last = exc
                continue
            pool.succeeded(key)
            return result
        if last is not None:
            raise last
        raise UpstreamUnavailable(f"Every upstream key of provider {provider!r} is disabled, cooling down or at "
                                  "its rate limit.",
                                  code="no_upstream_key")

    def _disable(self, pool: KeyPool, key: UpstreamKey, reason: str) -> None:
        now = self._clock.time()
        reason = pool.scrub(reason)[:500]
        pool.set_state(key, DISABLED_AUTO, reason, now)
        key.next_probe = self._clock.monotonic() + self._probe_interval.get(pool.provider, 60.0)
        log.warning("upstream key %s of provider %s disabled: %s", key.id, pool.provider, reason)
        # not awaited: the request goes on with the next key while the state is shared
        self._track(asyncio.get_running_loop().create_task(
            self._store.put_upstream_key_state(UpstreamKeyState(pool.provider, key.id, DISABLED_AUTO, reason, now))),
            self._writes)

    # --- the admin side ---
    def public(self) -> list[dict[str, Any]]:
        """The pools (providers with `api_keys`) and their keys, masked."""
        return [{"provider": name, "probe_model": self._probe_model.get(name),
                 "keys": [k.public() for k in pool.keys]} for name, pool in self.pools.items()]

    def _key(self, provider: str, key_id: str) -> tuple[KeyPool, UpstreamKey]:
        pool = self.pools.get(provider)
        key = pool.get(key_id) if pool is not None else None
        if pool is None or key is None:
            raise NotFound(f"No upstream key {key_id!r} in provider {provider!r}'s pool.")
        return pool, key

    async def set_enabled(self, provider: str, key_id: str, enabled: bool) -> dict[str, Any]:
        """Disable by hand (the probe leaves it alone) or enable; shared with every instance at once."""
        pool, key = self._key(provider, key_id)
        st = UpstreamKeyState(provider, key_id, ACTIVE if enabled else DISABLED_MANUAL,
                              None if enabled else "disabled by an admin", self._clock.time())
        await self._store.put_upstream_key_state(st)
        pool.set_state(key, st.state, st.reason, st.changed_at)
        return key.public()

    async def test(self, provider: str, key_id: str | None, model: str | None) -> dict[str, Any]:
        """One probe on demand, whatever the key's state; a success re-enables an auto-disabled key."""
        prov = self._providers.get(provider)
        if prov is None:
            raise NotFound(f"No provider {provider!r}.")
        pool = self.pools.get(provider)
        key = self._key(provider, key_id)[1] if key_id else (pool.order() or pool.keys)[0] if pool else None
        model = model or self._probe_model.get(provider)
        if not model:
            raise Conflict("No model to probe with: pass 'model' or set the provider's probe_model.",
                           param="model")
        res = await probe(prov, model, key.secret if key else None, self._secrets(pool), self._clock)
        if pool is not None and key is not None:
            await self._after_probe(pool, key, res)
        return res.public(provider, key.id if key else None, model)

    def _secrets(self, pool: KeyPool | None) -> list[str]:
        return [k.secret for k in pool.keys] if pool is not None else []

    # --- the background loop ---
    async def start(self) -> None:
        if self.pools:
            await self.sync()
        self._ticker.start()
        if self._client is not None:
            self._lister.start()
            self.relist()

    def relist(self) -> None:
        """Refresh the upstreams' model lists soon, in the background (after a start or a catalog change)."""
        if self._client is not None and self._list_for:
            self._track(asyncio.get_running_loop().create_task(self.refresh_offered()), self._listing)

    @staticmethod
    def _track(task: asyncio.Task[None], into: set[asyncio.Task[None]]) -> None:
        into.add(task)
        task.add_done_callback(into.discard)

    async def refresh_offered(self) -> None:
        """Ask the upstreams behind pattern models what they offer (for /v1/models)."""
        if self._client is None:
            return
        for cfg in list(self._list_for):
            got = await fetch_models(self._client, cfg)
            if got is not None:
                self.offered[cfg.name] = got

    def wake(self) -> None:
        """Another instance announced a change (PostgreSQL NOTIFY): look now, not at the next poll."""
        self._ticker.wake()

    async def aclose(self) -> None:
        await self._ticker.aclose()
        await self._lister.aclose()
        for task in self._listing:
            task.cancel()
        await asyncio.gather(*self._listing, return_exceptions=True)
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        await self._rates.aclose()

    async def _tick(self) -> None:
        if self.pools:  # none yet: the catalog may add some
            await self.sync()
            await self._probe_due()

    async def sync(self) -> None:
        """Adopt the states other instances (or admins) wrote."""
        for st in await self._store.list_upstream_key_states():
            pool = self.pools.get(st.provider)
            key = pool.get(st.key_id) if pool is not None else None
            if pool is not None and key is not None and pool.set_state(key, st.state, st.reason, st.changed_at):
                if st.state == DISABLED_AUTO:
                    key.next_probe = self._clock.monotonic() + self._probe_interval.get(st.provider, 60.0)

    async def _probe_due(self) -> None:
        now = self._clock.monotonic()
        due = [(pool, key) for pool in self.pools.values() if pool.provider in self._probe_model
               for key in pool.keys if key.state in (DISABLED_AUTO, COOLING) and key.next_probe <= now]
        if due:
            await asyncio.gather(*(self._probe_one(pool, key) for pool, key in due))

    async def _probe_one(self, pool: KeyPool, key: UpstreamKey) -> None:
        key.next_probe = self._clock.monotonic() + self._probe_interval[pool.provider]
        res = await probe(self._providers[pool.provider], self._probe_model[pool.provider], key.secret,
                          self._secrets(pool), self._clock)
        await self._after_probe(pool, key, res)

    async def _after_probe(self, pool: KeyPool, key: UpstreamKey, res: ProbeResult) -> None:
        if not res.ok:
            pool.failed(key, res.answer)
            return
        pool.succeeded(key)
        if key.state == DISABLED_AUTO:
            st = UpstreamKeyState(pool.provider, key.id, ACTIVE, None, self._clock.time())
            await self._store.put_upstream_key_state(st)
            pool.set_state(key, ACTIVE, None, st.changed_at)
            log.warning("upstream key %s of provider %s re-enabled by a probe", key.id, pool.provider)
        elif key.state == COOLING:
            pool.set_state(key, ACTIVE, None, self._clock.time())


__all__ = ["DISABLED_MANUAL", "ChannelHub"]
