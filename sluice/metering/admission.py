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
from dataclasses import dataclass
from decimal import Decimal

from sluice.accounts.records import AccountRecord
from sluice.accounts.store import AccountStore
from sluice.accounts.view import AccountView, multiplier
from sluice.clock import SYSTEM_CLOCK, Clock
from sluice.config import ModelConfig, Settings
from sluice.errors import PermissionDenied, QuotaExceeded
from sluice.metering.fit import MIN_ADAPTED_OUTPUT, affordable_output
from sluice.metering.limits import Limiter, LimitSpec
from sluice.metering.pricing import Price, fmt_money
from sluice.metering.reservations import ReservationBatcher
from sluice.metering.ticket import Ticket
from sluice.metering.tokens import estimate_prompt
from sluice.routing.patterns import candidates, is_pattern, match
from sluice.schema.chat import ChatRequest
from sluice.storage.base import KeyRecord, LedgerRecord, Reservation, Store

log = logging.getLogger("sluice.admission")

_FREE = Price(Decimal(0), Decimal(0), Decimal(0))

Headers = list[tuple[bytes, bytes]]


@dataclass(slots=True)
class UnderBilling:
    """Charges capped at their reservation since start: money the upstream's usage says was not billed.
    An in-process counter for the metrics endpoint to export."""

    count: int = 0
    nanos: int = 0


class Admission:
    def set_models(self, models: list[ModelConfig]) -> None:
        """Prices and output reserves per model (again when the catalog changes at runtime)."""
        self._prices = {m.name: Price.from_config(m.pricing) for m in models if m.pricing is not None}
        self._prices.update((m.name, _FREE) for m in models if m.free)
        # patterns and suffix-stripping rules price the names they match, in declaration order
        self._rules = [(m.name, m.strip_suffixes, _FREE if m.pricing is None else Price.from_config(m.pricing), m.free)
                       for m in models if (m.pricing is not None or m.free)
                       and (is_pattern(m.name) or m.strip_suffixes)]
        self._out_caps = {m.name: m.max_output_reserve for m in models if m.max_output_reserve}
        self._free = {m.name for m in models if m.free}

    def __init__(self, settings: Settings, store: Store, limiter: Limiter, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._store = store
        self._clock = clock  # reconciliation's "now": reservations and heartbeats age on it
        self._limiter = limiter
        self._budgets = settings.budgets
        self._default_price = Price.from_config(settings.pricing)
        self.set_models(settings.models)
        g = settings.limits
        self._global = LimitSpec(rpm=g.rpm, tpm=g.tpm, max_concurrency=g.max_concurrency)
        self.instance_id = os.urandom(8).hex()
        self._reservations = ReservationBatcher(store)
        self.accounts = AccountView(AccountStore(store), ttl=settings.server.key_cache_seconds)
        self.underbilled = UnderBilling()
        self._task: asyncio.Task[None] | None = None

    def price(self, model: str) -> Price:
        price = self._prices.get(model)
        if price is not None:
            return price
        rule = self._rule(model)
        return rule[2] if rule is not None else self._default_price

    def _rule(self, model: str) -> tuple[str, list[str], Price, bool] | None:
        for rule in self._rules:
            if any(match(rule[0], c) is not None for c in candidates(model, rule[1])):
                return rule
        return None

    def _marked_free(self, model: str) -> bool:
        """The operator said `free = true` for this name, or for the pattern that prices it."""
        if model in self._prices:
            return model in self._free
        rule = self._rule(model)
        return rule is not None and rule[3]

    async def start(self) -> None:
        await self.reconcile()
        self._task = asyncio.get_running_loop().create_task(self._reconcile_loop(), name="sluice-reconcile")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._reservations.aclose()
        await self._limiter.aclose()

    async def reconcile(self) -> int:
        """Heartbeat this instance and release what stopped instances or expired reservations hold."""
        return await self._store.reconcile(self.instance_id, self._budgets.instance_timeout_seconds,
                                           self._budgets.reservation_ttl_seconds, now=self._clock.time())

    async def _reconcile_loop(self) -> None:
        interval = max(0.5, self._budgets.instance_timeout_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                released = await self.reconcile()
                if released:
                    log.warning("released %d reservations left by stopped instances or past their TTL", released)
            except Exception:
                log.exception("reconciliation failed; will retry")

    async def admit(self, key: KeyRecord, req: ChatRequest, ticket: Ticket) -> Ticket:
        """The price, the reservation, then the rate limits, each written to `ticket` as granted; raises
        before any upstream call.

        Money comes first so that a refusal for money uses none of the rate limits' allowance; a request
        then refused by a rate limit gives its reservation back when it settles (uncharged)."""
        ticket.price = self.priced(req.model)
        account: AccountRecord | None = None
        if key.account_id is not None:   # the account pays, at its group's prices
            account, group = await self.accounts.payer(key.account_id)
            ticket.account_id = account.id
            mult = multiplier(group, req.model)
            ticket.list_price, ticket.price = ticket.price, ticket.price.scaled(mult)
            ticket.notes["multiplier"] = str(mult)
        # embeddings generate nothing: a max_tokens of 0 reserves no output
        out_cap = req.max_tokens if req.max_tokens is not None else (
            self._out_caps.get(req.model) or self._budgets.max_output_reserve)
        prompt = estimate_prompt(req.messages)
        ticket.prompt_estimate = prompt
        headers: Headers = []
        if key.metered:
            out_cap = await self._reserve(key, account, req, ticket, prompt * 5 // 4 + 16, out_cap)
            if "capped_max_tokens" in ticket.notes:  # tell the caller why the reply may stop early
                headers.append((b"x-sluice-max-tokens", str(out_cap).encode()))
        tokens = (prompt * 5 // 4 + 16 + out_cap * req.n)
        limit_headers: Headers = []
        if not self._global.empty:
            limit_headers = await self._limiter.admit("global", self._global, ticket.request_id, tokens)
            ticket.limits.append(("global", self._global, tokens))
        if key.rpm is not None or key.tpm is not None or key.max_concurrency is not None:
            key_spec = LimitSpec(rpm=key.rpm, tpm=key.tpm, max_concurrency=key.max_concurrency)
            scope = "key:" + key.id
            limit_headers = await self._limiter.admit(scope, key_spec, ticket.request_id, tokens)  # the key's win
            ticket.limits.append((scope, key_spec, tokens))
        ticket.headers = [*headers, *limit_headers] if headers else limit_headers
        return ticket

    def priced(self, model: str) -> Price:
        """The model's price; a model without one is refused unless the operator marked it free."""
        price = self.price(model)
        if price.free and not self._marked_free(model):
            raise PermissionDenied(
                f"The model `{model}` has no price set, so this gateway cannot bill it. The operator must give "
                "it a pricing (or mark it `free = true`).", param="model", code="model_not_priced")
        return price

    async def _reserve(self, key: KeyRecord, account: AccountRecord | None, req: ChatRequest, ticket: Ticket,
                       base: int, out_cap: int) -> int:
        """Hold the most the request can cost; returns the output cap held for. Without `max_tokens` the
        cap shrinks to what the balance still allows (re-read once if the cached key proves stale) and
        the upstream request gets that cap as its `max_tokens`."""
        adapt = req.max_tokens is None
        for attempt in range(2 if adapt else 1):
            cap = out_cap
            if adapt:
                cap = affordable_output(ticket.price or self._default_price, base, req.n, out_cap,
                                        _money_left(key, account), _tokens_left(key))
            if cap >= min(out_cap, MIN_ADAPTED_OUTPUT) and await self._hold(key, ticket, base, cap, req.n):
                if cap < out_cap:
                    req.max_tokens = cap
                    req.body["max_tokens"] = cap
                    ticket.notes["capped_max_tokens"] = cap
                return cap
            if attempt == 0 and adapt:
                key = await self._store.get_key(key.id) or key
                if account is not None:
                    account = (await self.accounts.payer(account.id, fresh=True))[0]
        raise QuotaExceeded(
            "You exceeded your current quota: the remaining balance does not cover the most this request can "
            "cost. Top up (or redeem a code) or lower max_tokens.")

    async def _hold(self, key: KeyRecord, ticket: Ticket, base: int, cap: int, n: int) -> bool:
        price = ticket.price or self._default_price
        tokens = base + cap * n
        nanos = price.cost_nanos(base, cap * n)
        if not await self._reservations.reserve(Reservation(key.id, ticket.request_id, nanos, tokens,
                                                            self.instance_id, ticket.account_id)):
            return False
        ticket.reserved = (nanos, tokens)
        ticket.budgeted = (key.budget is not None or ticket.account_id is not None, key.token_quota is not None)
        return True

    async def release_limits(self, ticket: Ticket, used: int) -> None:
        limits, ticket.limits = ticket.limits, []
        for scope, spec, tokens in limits:
            try:
                await self._limiter.release(scope, spec, ticket.request_id, tokens, used)
            except Exception:
                log.exception("releasing rate-limit state failed for %s", ticket.request_id)

    def price_record(self, ticket: Ticket, rec: LedgerRecord) -> None:
        """Fill in the cost (capped at the reservation for budgeted keys) before the record is written."""
        if ticket.price is None:
            return
        if rec.prompt_tokens is None:  # nothing came from an upstream: nothing to charge
            rec.cost = 0
            return
        prompt, completion = rec.prompt_tokens, rec.completion_tokens or 0
        cost = ticket.price.cost_nanos(prompt, completion, rec.cached_tokens or 0, rec.cache_write_5m_tokens or 0,
                                      rec.cache_write_1h_tokens or 0)
        if ticket.reserved is not None:
            nanos, tokens = ticket.reserved
            money_capped, quota_capped = ticket.budgeted
            if money_capped and cost > nanos:
                self._underbilled(rec, cost, nanos)
                cost = nanos
            if quota_capped and prompt + completion > tokens:
                rec.quota_tokens = tokens
        rec.cost = cost
        if ticket.list_price is not None:   # an account's price: say what the list price was
            rec.extra["list_cost"] = fmt_money(ticket.list_price.cost_nanos(
                prompt, completion, rec.cached_tokens or 0, rec.cache_write_5m_tokens or 0,
                rec.cache_write_1h_tokens or 0))

    def _underbilled(self, rec: LedgerRecord, cost: int, nanos: int) -> None:
        """The settled cost is capped at the reservation so the budget holds; say so rather than drop the rest
        silently (a wrong price, an upstream that ignores max_tokens, or a bad token estimate)."""
        rec.extra["uncapped_cost_nanos"] = cost
        rec.extra["underbilled"] = True
        self.underbilled.count += 1
        self.underbilled.nanos += cost - nanos
        log.warning("under-billed %s: cost %d nano-units capped at its reservation %d (key %s, model %s)",
                    rec.request_id, cost, nanos, rec.key_id, rec.model)


def _money_left(key: KeyRecord, account: AccountRecord | None) -> int | None:
    left = [v for v in (None if key.budget is None else key.budget - key.spent - key.reserved,
                        None if account is None else account.available) if v is not None]
    return min(left) if left else None


def _tokens_left(key: KeyRecord) -> int | None:
    return None if key.token_quota is None else key.token_quota - key.tokens_used - key.tokens_reserved
