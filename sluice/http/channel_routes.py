"""Admin routes for channels: key pools under /admin/channels (list, disable/enable a key, test on demand)
and the runtime catalog under /admin/catalog (providers and models: list, get, put, delete).

Keys are shown masked with their fingerprint id; a test shows status, latency and the upstream's answer
with our keys scrubbed from it.
"""

from __future__ import annotations

from typing import Any

import msgspec

from sluice.channels.catalog import Catalog
from sluice.channels.hub import ChannelHub
from sluice.errors import InvalidRequest, NotFound


class ProbeRequest(msgspec.Struct, forbid_unknown_fields=True):
    key_id: str | None = None
    model: str | None = None


async def channel_route(hub: ChannelHub | None, method: str, parts: list[str], body: bytes) -> tuple[int, Any]:
    """`parts` is the path after /admin/channels."""
    if hub is None:
        raise NotFound("Channels are not available on this server.")
    if not parts and method == "GET":
        return 200, {"data": hub.public()}
    if len(parts) == 2 and parts[1] == "test" and method == "POST":
        req = _probe_request(body)
        return 200, await hub.test(parts[0], req.key_id, req.model)
    if len(parts) == 4 and parts[1] == "keys" and parts[3] in ("enable", "disable") and method == "POST":
        return 200, await hub.set_enabled(parts[0], parts[2], parts[3] == "enable")
    raise NotFound(f"Unknown admin route: {method} /admin/channels/{'/'.join(parts)}", code="unknown_url")


_KINDS = {"providers": "provider", "models": "model"}


async def catalog_route(catalog: Catalog | None, method: str, parts: list[str], body: bytes) -> tuple[int, Any]:
    """`parts` is the path after /admin/catalog; a model's name may hold slashes (`openrouter/x`)."""
    if catalog is None:
        raise NotFound("The runtime catalog is not available on this server.")
    if not parts and method == "GET":
        return 200, catalog.public()
    if len(parts) >= 2 and parts[0] in _KINDS:
        kind, name = _KINDS[parts[0]], "/".join(parts[1:])
        if method == "GET":
            return 200, catalog.describe(kind, name)
        if method == "PUT":
            return 200, await catalog.put(kind, name, body)
        if method == "DELETE":
            await catalog.delete(kind, name)
            return 200, {"name": name, "deleted": True}
    raise NotFound(f"Unknown admin route: {method} /admin/catalog/{'/'.join(parts)}", code="unknown_url")


def _probe_request(body: bytes) -> ProbeRequest:
    if not body.strip():
        return ProbeRequest()
    try:
        req = msgspec.json.decode(body, type=ProbeRequest)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"Invalid probe request: {exc}") from None
    except msgspec.DecodeError:
        raise InvalidRequest("The body must be a JSON object.") from None
    for name in ("key_id", "model"):
        v = getattr(req, name)
        if v is not None and not 0 < len(v) <= 200:
            raise InvalidRequest(f"'{name}' must be 1 to 200 characters", param=name)
    return req
