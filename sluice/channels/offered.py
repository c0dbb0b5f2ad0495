"""What the upstreams say they offer (`GET {base_url}/models`), for listing the models a pattern such as
`openrouter/*` makes available. Fetched in the background and cached; a failure keeps the last list."""

from __future__ import annotations

import logging

import orjson

from sluice.config import ProviderConfig, UpstreamKeyConfig
from sluice.errors import SluiceError
from sluice.upstream import Timeouts, Transport

log = logging.getLogger("sluice.channels")
_TIMEOUTS = Timeouts(connect=5.0, first_byte=15.0, idle=15.0, total=30.0)
_MAX_MODELS = 5000  # an upstream's list is data from outside: bounded


def _auth(cfg: ProviderConfig) -> dict[str, str]:
    first = cfg.api_keys[0] if cfg.api_keys else None
    key = cfg.api_key or (first.key if isinstance(first, UpstreamKeyConfig) else first)
    if cfg.kind == "anthropic":
        return {"anthropic-version": "2023-06-01", **({"x-api-key": key} if key else {})}
    if cfg.kind == "gemini":
        return {"x-goog-api-key": key} if key else {}
    return {"authorization": f"Bearer {key}"} if key else {}


def _ids(cfg: ProviderConfig, doc: object) -> list[str]:
    if not isinstance(doc, dict):
        return []
    items = doc.get("models") if cfg.kind == "gemini" else doc.get("data")
    out = []
    for item in items if isinstance(items, list) else ():
        raw = item.get("name" if cfg.kind == "gemini" else "id") if isinstance(item, dict) else None
        if isinstance(raw, str) and 0 < len(raw) <= 200:
            out.append(raw.removeprefix("models/"))
    return out[:_MAX_MODELS]


async def fetch_models(client: Transport, cfg: ProviderConfig) -> list[str] | None:
    """The upstream's model ids, or None when it cannot say (no list endpoint, an error)."""
    if cfg.kind == "simulated" or not cfg.base_url:
        return None
    url = cfg.base_url.rstrip("/") + "/models"
    try:
        resp = await client.request("GET", url, headers={"accept": "application/json", **_auth(cfg),
                                                         **cfg.headers}, body=None, timeouts=_TIMEOUTS)
        try:
            raw = await resp.read(8 << 20)
        finally:
            resp.close()
    except SluiceError as exc:
        log.warning("listing the models of provider %s failed: %s", cfg.name, exc.message)
        return None
    if resp.status != 200:
        log.warning("listing the models of provider %s failed: HTTP %d", cfg.name, resp.status)
        return None
    try:
        return _ids(cfg, orjson.loads(raw))
    except orjson.JSONDecodeError:
        return None
