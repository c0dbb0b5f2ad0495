"""Store protocol and the records it keeps: keys (hash only, budgets, limits), reservations, the ledger.

Money is integer nano-units (see metering/pricing.py). A key's prepaid balance is `budget - spent`;
`reserved` is what in-flight requests hold. Admission reserves atomically; settlement (with the ledger
insert, in one transaction, idempotent on request_id) charges and releases.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

Stmt = tuple[str, Sequence[Any]]   # a statement with qmark placeholders and its parameters

PERIODS = {"day": 86400.0, "week": 7 * 86400.0, "month": 30 * 86400.0}


@dataclass(slots=True)
class KeyRecord:
    id: str
    name: str
    key_hash: str
    models: list[str] | None = None   # None: every model
    enabled: bool = True
    revoked: bool = False
    created_at: float = 0.0
    owner: str | None = None
    expires_at: float | None = None
    budget: int | None = None         # nano-units; None: no money limit
    spent: int = 0
    reserved: int = 0
    token_quota: int | None = None
    tokens_used: int = 0
    tokens_reserved: int = 0
    period: str | None = None         # budget/quota reset period: day | week | month
    period_start: float = 0.0
    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    account_id: str | None = None     # the account it spends from (None: the key's own budget only)

    @property
    def active(self) -> bool:
        return self.enabled and not self.revoked and (self.expires_at is None or self.expires_at > time.time())

    @property
    def metered(self) -> bool:
        """Whether admission must reserve (the key has a money budget or a token quota)."""
        return self.budget is not None or self.token_quota is not None or self.account_id is not None

    def may_use(self, model: str) -> bool:
        return self.models is None or model in self.models

    def public(self) -> dict[str, Any]:
        """Everything but the hash: what listings show."""
        from sluice.metering.pricing import fmt_money

        return {
            "id": self.id, "name": self.name, "owner": self.owner, "models": self.models,
            "enabled": self.enabled, "revoked": self.revoked, "created_at": self.created_at,
            "expires_at": self.expires_at, "budget": fmt_money(self.budget), "spent": fmt_money(self.spent),
            "reserved": fmt_money(self.reserved),
            "balance": fmt_money(self.budget - self.spent) if self.budget is not None else None,
            "token_quota": self.token_quota, "tokens_used": self.tokens_used, "period": self.period,
            "period_start": self.period_start or None, "rpm": self.rpm, "tpm": self.tpm,
            "max_concurrency": self.max_concurrency, "metadata": self.metadata, "account_id": self.account_id,
        }


KEY_FIELDS = ("name", "owner", "models", "enabled", "expires_at", "budget", "token_quota", "period", "rpm",
              "tpm", "max_concurrency", "metadata", "account_id")


@dataclass(slots=True)
class LedgerRecord:
    request_id: str
    key_id: str | None
    model: str
    provider: str | None
    upstream_model: str | None
    stream: bool
    status: int
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    usage_source: str = "none"          # reported | estimated | none
    ttft_ms: float | None = None
    duration_ms: float = 0.0
    disconnected: bool = False
    error_code: str | None = None
    attempts: int = 0
    created_at: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    cached_tokens: int | None = None    # prompt-cache reads (None: not reported)
    cache_write_5m_tokens: int | None = None
    cache_write_1h_tokens: int | None = None
    session_id: str | None = None       # the client's session (prompt-cache affinity), as sent
    cost: int | None = None             # nano-units charged
    quota_tokens: int | None = None     # tokens charged to a quota when capped (not stored; None: all)
    account_id: str | None = None       # the account charged with `cost` as well as the key

    def public(self) -> dict[str, Any]:
        from sluice.metering.pricing import fmt_money

        return {
            "request_id": self.request_id, "key_id": self.key_id, "model": self.model,
            "provider": self.provider, "upstream_model": self.upstream_model, "stream": self.stream,
            "status": self.status, "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens, "cached_tokens": self.cached_tokens,
            "cache_write_5m_tokens": self.cache_write_5m_tokens, "cache_write_1h_tokens": self.cache_write_1h_tokens,
            "session_id": self.session_id,
            "usage_source": self.usage_source, "cost": fmt_money(self.cost), "ttft_ms": self.ttft_ms,
            "duration_ms": self.duration_ms, "disconnected": self.disconnected, "error_code": self.error_code,
            "attempts": self.attempts, "created_at": self.created_at, "extra": self.extra,
            "account_id": self.account_id,
        }


@dataclass(slots=True)
class Reservation:
    """What one metered request holds on its key until it settles (nano-units and tokens)."""

    key_id: str
    request_id: str
    nanos: int
    tokens: int
    instance_id: str
    account_id: str | None = None   # also held on this account (same nano-units), or refused whole


@dataclass(slots=True)
class UsageRow:
    key_id: str | None
    key_name: str | None
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    errors: int
    cost: int = 0
    bucket: float | None = None
    cached_tokens: int = 0              # prompt-cache reads, then writes (part of prompt_tokens)
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0

    def public(self) -> dict[str, Any]:
        from sluice.metering.pricing import fmt_money

        return {"bucket": self.bucket, "key_id": self.key_id, "key_name": self.key_name, "model": self.model,
                "requests": self.requests, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "cached_tokens": self.cached_tokens,
                "cache_write_5m_tokens": self.cache_write_5m_tokens,
                "cache_write_1h_tokens": self.cache_write_1h_tokens,
                "errors": self.errors, "cost": fmt_money(self.cost)}


@dataclass(slots=True)
class UpstreamKeyState:
    """What every instance must agree on about one upstream key: active, or disabled and why."""

    provider: str
    key_id: str            # a fingerprint of the key (sluice/channels/pool.py), never the key itself
    state: str             # active | disabled_auto | disabled_manual
    reason: str | None
    changed_at: float


@dataclass(slots=True)
class CatalogEntry:
    """A provider or model managed through the admin API; `doc` is its JSON (secrets encrypted inside)."""

    kind: str              # provider | model
    name: str
    doc: str
    updated_at: float


@dataclass(slots=True)
class LedgerQuery:
    key_id: str | None = None
    model: str | None = None
    status: int | None = None       # exact status; 0 means "any error" (>= 400)
    since: float | None = None
    until: float | None = None
    limit: int = 100


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def create_key(self, rec: KeyRecord) -> None: ...

    async def get_key(self, key_id: str) -> KeyRecord | None: ...

    async def list_keys(self) -> list[KeyRecord]: ...

    async def revoke_key(self, key_id: str) -> bool: ...

    async def count_keys(self) -> int: ...

    async def create_first_key(self, rec: KeyRecord) -> bool:
        """Insert `rec` only if the store holds no key at all (revoked ones count); True if it did. Atomic
        across processes: of several instances starting at once on an empty database, exactly one wins."""
        ...

    async def update_key(self, key_id: str, changes: dict[str, Any]) -> KeyRecord | None:
        """Set the given KEY_FIELDS; None when the key does not exist."""
        ...

    async def top_up(self, key_id: str, nanos: int) -> KeyRecord | None:
        """Add to the budget (a key without one gets `spent + nanos`)."""
        ...

    async def reserve(self, key_id: str, request_id: str, nanos: int, tokens: int, instance_id: str) -> bool:
        """Atomically hold `nanos` and `tokens` if they fit the key's budget and quota; False if not."""
        ...

    async def reserve_many(self, batch: Sequence[Reservation]) -> list[bool]:
        """`reserve` for each, in one transaction, one answer each in order. Every reservation is checked
        by its own conditional update, in order per key, so the batch grants exactly what the same calls
        made one by one would. A request_id that already holds a reservation (or comes twice) is refused."""
        ...

    async def write_ledger(self, records: list[LedgerRecord]) -> None:
        """Insert and settle in one transaction, idempotent on request_id: a record written twice (in one
        batch or in several, from any process) is charged once. A new record with a key takes its
        reservation and charges the key: cost and tokens to spent, the reservation back from reserved."""
        ...

    async def quarantine(self, rec: LedgerRecord, error: str) -> None:
        """Set aside a record that cannot be written (see storage/poison.py), whole, with the error; nothing
        is charged or released (its reservation goes back at reconciliation, after its TTL)."""
        ...

    async def reconcile(self, instance_id: str, instance_timeout: float, reservation_ttl: float, *,
                        now: float | None = None) -> int:
        """Heartbeat this instance; release reservations of silent instances or older than the TTL; reset
        budget periods that ended, all as of `now` (epoch seconds, the caller's clock; default the real time).
        Returns how many reservations were released."""
        ...

    async def get_ledger(self, request_id: str) -> LedgerRecord | None: ...

    async def list_ledger(self, q: LedgerQuery) -> list[LedgerRecord]: ...

    async def usage_summary(self) -> list[UsageRow]: ...

    async def usage(self, q: LedgerQuery, group: str | None) -> list[UsageRow]:
        """Per key and model, optionally per hour/day bucket, over the query's filters."""
        ...

    async def count_reservations(self) -> int: ...

    async def fetch_rows(self, text: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement (qmark placeholders) and return its rows: for modules with their own SQL
        (sluice/accounts), so they need no dialect of their own."""
        ...

    async def guarded(self, first: Stmt, then: Callable[[tuple[Any, ...]], Sequence[Stmt]]) -> tuple[Any, ...] | None:
        """In one transaction: run `first` (a conditional write with RETURNING); if it returned a row, run
        the statements `then(row)` makes. The row, or None (nothing written) when `first` matched nothing."""
        ...

    async def list_upstream_key_states(self) -> list[UpstreamKeyState]: ...

    async def put_upstream_key_state(self, st: UpstreamKeyState) -> None:
        """Insert or replace the state of (provider, key_id)."""
        ...

    async def watch_channels(self, on_change: Callable[[], None]) -> bool:
        """Call `on_change` whenever any process changes the catalog or a key state (PostgreSQL:
        LISTEN/NOTIFY). False when the store cannot tell (SQLite): the readers poll."""
        ...

    async def catalog_version(self) -> int:
        """Bumped by every catalog change: cheap to poll."""
        ...

    async def list_catalog(self) -> tuple[int, list[CatalogEntry]]:
        """The version and every entry; the entries are at least as new as the version."""
        ...

    async def put_catalog(self, kind: str, name: str, doc: str | None) -> bool:
        """Insert or replace (doc) or delete (None) one entry and bump the version, in one transaction.
        False when a delete found nothing."""
        ...
