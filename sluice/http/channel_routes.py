"""Admin routes for channels: key pools under /admin/channels (list, disable/enable a key, test on demand)
and the runtime catalog under /admin/catalog (providers and models: list, get, put, delete).

Keys are shown masked with their fingerprint id; a test shows status, latency and the upstream's answer
with our keys scrubbed from it.
"""

from __future__ import annotations

from typing import Any

from sluice.channels.catalog import Catalog
from sluice.channels.hub import ChannelHub
from sluice.errors import NotFound
from sluice.http.admin_schema import ProbeRequest, decode, json_object


async def channel_route(hub: ChannelHub | None, method: str, parts: list[str], body: bytes) -> tuple[int, Any]:
    """`parts` is the path after /admin/channels."""
    if hub is None:
        raise NotFound("Channels are not available on this server.")
    if not parts and method == "GET":
        return 200, {"data": hub.public()}
    if len(parts) == 2 and parts[1] == "test" and method == "POST":
        req = decode(body, ProbeRequest)
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
            return 200, await catalog.put(kind, name, json_object(body))
        if method == "DELETE":
            await catalog.delete(kind, name)
            return 200, {"name": name, "deleted": True}
    raise NotFound(f"Unknown admin route: {method} /admin/catalog/{'/'.join(parts)}", code="unknown_url")

