"""Model discovery in Anthropic's shape (`GET /v1/models` with `anthropic-version`): a page of
`{type: "model", id, display_name, created_at}` with `has_more`, `first_id`, `last_id`, cursor-paged
by `limit` (1-1000, default 20), `after_id` and `before_id` as Anthropic's API does.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sluice.errors import InvalidRequest

MAX_LIMIT = 1000


def model_info(model_id: str, created: int) -> dict[str, Any]:
    stamp = datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"type": "model", "id": model_id, "display_name": model_id, "created_at": stamp}


def models_page(ids: list[str], query: Mapping[str, str], created: int) -> dict[str, Any]:
    """One page of `ids` (in the gateway's order) for the query's cursor; InvalidRequest on a bad limit."""
    raw = query.get("limit", "20")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidRequest(f"limit: must be an integer between 1 and {MAX_LIMIT}", param="limit")
    limit = int(raw)
    before, after = query.get("before_id"), query.get("after_id")
    if before is not None:
        end = ids.index(before) if before in ids else 0
        start = max(0, end - limit)
        has_more = start > 0
    else:
        start = 0 if after is None else ids.index(after) + 1 if after in ids else len(ids)
        end = min(len(ids), start + limit)
        has_more = end < len(ids)
    page = ids[start:end]
    return {"data": [model_info(i, created) for i in page], "has_more": has_more,
            "first_id": page[0] if page else None, "last_id": page[-1] if page else None}
