"""Store protocol and the records it keeps: keys (hash only) and the usage ledger."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(slots=True)
class KeyRecord:
    id: str
    name: str
    key_hash: str
    models: list[str] | None = None   # None: every model
    enabled: bool = True
    revoked: bool = False
    created_at: float = 0.0

    @property
    def active(self) -> bool:
        return self.enabled and not self.revoked

    def may_use(self, model: str) -> bool:
        return self.models is None or model in self.models

    def public(self) -> dict[str, Any]:
        """Everything but the hash: what listings show."""
        return {"id": self.id, "name": self.name, "models": self.models, "enabled": self.enabled,
                "revoked": self.revoked, "created_at": self.created_at}


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


@dataclass(slots=True)
class UsageRow:
    key_id: str | None
    key_name: str | None
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    errors: int


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def create_key(self, rec: KeyRecord) -> None: ...

    async def get_key(self, key_id: str) -> KeyRecord | None: ...

    async def list_keys(self) -> list[KeyRecord]: ...

    async def revoke_key(self, key_id: str) -> bool: ...

    async def count_keys(self) -> int: ...

    async def write_ledger(self, records: list[LedgerRecord]) -> None:
        """Idempotent on request_id: writing a record twice keeps the first."""
        ...

    async def get_ledger(self, request_id: str) -> LedgerRecord | None: ...

    async def usage_summary(self) -> list[UsageRow]: ...
