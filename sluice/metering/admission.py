"""Admission and settlement: rate limits, then reserve-then-settle of prepaid budgets and token quotas.

Before any upstream call, a request is admitted against the gateway-wide and the key's limits, and a
metered key reserves the most the request can cost (prompt estimate + output cap). When the request
ends, however it ends, the actual cost is computed, capped at what was reserved (so the sum settled
can never pass the budget), written with the ledger record, and the rest released.
"""

from __future__ import annotations

import asyncio
import logging
import os

from sluice.config import ModelConfig, Settings
from sluice.errors import QuotaExceeded
from sluice.metering.limits import Limiter, LimitSpec
from sluice.metering.meter import Meter
from sluice.metering.pricing import Price
from sluice.metering.reservations import ReservationBatcher
from sluice.metering.tokens import estimate_prompt
from sluice.routing.patterns import candidates, is_pattern, match
from sluice.schema.chat import ChatRequest
from sluice.storage.base import KeyRecord, LedgerRecord, Reservation, Store

log = logging.getLogger("sluice.admission")

Headers = list[tuple[bytes, bytes]]


class Admission:
    def set_models(self, models: list[ModelConfig]) -> None:
        """Prices and output reserves per model (again when the catalog changes at runtime)."""
        self._prices = {m.name: Price.from_config(m.pricing) for m in models if m.pricing is not None}
        # patterns and suffix-stripping rules price the names they match, in declaration order
        self._rules = [(m.name, m.strip_suffixes, Price.from_config(m.pricing)) for m in models
                       if m.pricing is not None and (is_pattern(m.name) or m.strip_suffixes)]
        self._out_caps = {m.name: m.max_output_reserve for m in models if m.max_output_reserve}

    def __init__(self, settings: Settings, store: Store, limiter: Limiter) -> None:
        self._store = store
        self._limiter = limiter
        self._budgets = settings.budgets
        self._default_price = Price.from_config(settings.pricing)
        self.set_models(settings.models)
        g = settings.limits
        self._global = LimitSpec(rpm=g.rpm, tpm=g.tpm, max_concurrency=g.max_concurrency)
        self.instance_id = os.urandom(8).hex()
        self._reservations = ReservationBatcher(store)
        self._task: asyncio.Task[None] | None = None

    def price(self, model: str) -> Price:
        price = self._prices.get(model)
        if price is not None:
            return price
        for pattern, strip, rule_price in self._rules:
            if any(match(pattern, c) is not None for c in candidates(model, strip)):
                return rule_price
        return self._default_price

    async def start(self) -> None:
        await self._store.reconcile(self.instance_id, self._budgets.instance_timeout_seconds,
                                    self._budgets.reservation_ttl_seconds)
        self._task = asyncio.get_running_loop().create_task(self._reconcile_loop(), name="sluice-reconcile")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._reservations.aclose()
        await self._limiter.aclose()

    async def _reconcile_loop(self) -> None:
        interval = max(0.5, self._budgets.instance_timeout_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                released = await self._store.reconcile(self.instance_id, self._budgets.instance_timeout_seconds,
                                                       self._budgets.reservation_ttl_seconds)
                if released:
                    log.warning("released %d reservations left by stopped instances or past their TTL", released)
            except Exception:
                log.exception("reconciliation failed; will retry")

    async def admit(self, key: KeyRecord, req: ChatRequest, meter: Meter) -> Headers:
        """Rate limits, then the reservation. Raises RateLimited / QuotaExceeded before any upstream call."""
        meter.price = self.price(req.model)
        out_cap = req.max_tokens or self._out_caps.get(req.model) or self._budgets.max_output_reserve
        prompt = estimate_prompt(req.messages)
        meter.prompt_estimate = prompt
        tokens = (prompt * 5 // 4 + 16 + out_cap * req.n)
        headers: Headers = []
        key_spec = LimitSpec(rpm=key.rpm, tpm=key.tpm, max_concurrency=key.max_concurrency)
        for scope, spec in (("global", self._global), ("key:" + key.id, key_spec)):
            if spec.empty:
                continue
            headers = await self._limiter.admit(scope, spec, meter.request_id, tokens)
            meter.limits.append((scope, spec, tokens))
        if key.metered:
            nanos = meter.price.cost_nanos(tokens - out_cap * req.n, out_cap * req.n)
            held = Reservation(key.id, meter.request_id, nanos, tokens, self.instance_id)
            ok = await self._reservations.reserve(held)
            if not ok:
                await self.release_limits(meter, 0)
                raise QuotaExceeded(
                    "You exceeded your current quota: this key's remaining budget does not cover the most this "
                    "request can cost. Top up the key or lower max_tokens.")
            meter.reserved = (nanos, tokens)
            meter.budgeted = (key.budget is not None, key.token_quota is not None)
        return headers

    async def release_limits(self, meter: Meter, used: int) -> None:
        limits, meter.limits = meter.limits, []
        for scope, spec, tokens in limits:
            try:
                await self._limiter.release(scope, spec, meter.request_id, tokens, used)
            except Exception:
                log.exception("releasing rate-limit state failed for %s", meter.request_id)

    def price_record(self, meter: Meter, rec: LedgerRecord) -> None:
        """Fill in the cost (capped at the reservation for budgeted keys) before the record is written."""
        if meter.price is None or rec.prompt_tokens is None:
            return
        prompt, completion = rec.prompt_tokens, rec.completion_tokens or 0
        cost = meter.price.cost_nanos(prompt, completion, rec.cached_tokens or 0)
        if meter.reserved is not None:
            nanos, tokens = meter.reserved
            money_capped, quota_capped = meter.budgeted
            if money_capped and cost > nanos:
                rec.extra["uncapped_cost_nanos"] = cost
                cost = nanos
            if quota_capped and prompt + completion > tokens:
                rec.quota_tokens = tokens
        rec.cost = cost
