"""The access log: one line per request, built from its settled ledger record and handed to the log
handler (`logs.py`: formatted where it is logged, written in batches by the writer thread)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sluice.storage.base import LedgerRecord

log = logging.getLogger("sluice.access")

# The order of the text format's fields, and the JSON keys.
FIELDS = ("request_id", "route", "key_id", "key_name", "account", "model", "provider", "upstream_model", "status",
          "error_code", "input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens", "usage_source",
          "cost", "ttft_ms", "duration_ms", "attempts", "stream", "disconnected")


def access_line(rec: LedgerRecord, route: str, key_name: str | None, account: str | None,
                reasoning: int | None) -> None:
    """Log the request (never a secret: the key's id and name, not the key)."""
    if not log.isEnabledFor(logging.INFO):
        return
    fields: dict[str, Any] = {
        "request_id": rec.request_id, "route": route, "key_id": rec.key_id, "key_name": key_name,
        "account": account, "model": rec.model, "provider": rec.provider,
        "upstream_model": rec.upstream_model, "status": rec.status, "error_code": rec.error_code,
        "input_tokens": rec.prompt_tokens, "output_tokens": rec.completion_tokens,
        "cached_tokens": rec.cached_tokens,
        "reasoning_tokens": reasoning,
        "usage_source": rec.usage_source, "cost": rec.cost / 1e9 if rec.cost is not None else None,
        "ttft_ms": rec.ttft_ms, "duration_ms": rec.duration_ms, "attempts": rec.attempts, "stream": rec.stream,
        "disconnected": rec.disconnected}
    # makeRecord + handle: what log.info does, less its walk up the stack for a caller no format shows
    record = log.makeRecord(log.name, logging.INFO, "", 0, "%s %s %s", (rec.request_id, rec.model, rec.status),
                            None, extra={"access": fields, "request_id": rec.request_id})
    log.handle(record)
