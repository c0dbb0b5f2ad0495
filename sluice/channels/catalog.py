"""Providers and models managed at runtime: stored in the database, merged over the config file, reloaded
by every instance when the catalog version changes (polled every `channels.poll_seconds`).

A database entry replaces the file's entry of the same name; a disabled entry hides it; deleting the
entry brings the file's back. Upstream keys are sealed (secrets.py) and never leave this module in clear
except inside the Settings handed to `apply`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import msgspec
import orjson

from sluice.channels.pool import mask
from sluice.channels.secrets import SecretBox
from sluice.channels.ticker import Ticker
from sluice.config import ConfigError, ModelConfig, ProviderConfig, Settings, apply_env_proxies, check
from sluice.errors import Conflict, InvalidRequest, NotFound, invalid_field
from sluice.storage.base import CatalogEntry, Store

log = logging.getLogger("sluice.channels")
KINDS = ("provider", "model")
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._:/@-]{0,99}"
_NAME = re.compile(NAME_PATTERN)
_SECRET_FIELDS = ("api_key", "api_keys", "headers")  # headers often carry credentials too: sealed alike


class Catalog:
    def __init__(self, base: Settings, store: Store, apply: Callable[[Settings], None]) -> None:
        self._base = base
        self._store = store
        self._apply = apply
        self._box = SecretBox(base.channels.secret)
        self.version = -1
        self.entries: dict[tuple[str, str], CatalogEntry] = {}
        self.current = base
        self._ticker = Ticker(base.channels.poll_seconds, self._tick, "catalog reload")

    async def start(self) -> None:
        await self.reload()
        self._ticker.start()

    def wake(self) -> None:
        """Another instance announced a change (PostgreSQL NOTIFY): look now, not at the next poll."""
        self._ticker.wake()

    async def aclose(self) -> None:
        await self._ticker.aclose()

    async def _tick(self) -> None:
        if await self._store.catalog_version() != self.version:
            await self.reload()

    async def reload(self) -> None:
        version, entries = await self._store.list_catalog()
        by_key = {(e.kind, e.name): e for e in entries}
        try:
            settings = merge(self._base, list(by_key.values()), self._box)
        except ConfigError as exc:  # cannot happen through the API (it validates); keep the last good one
            log.error("the catalog in the database is not valid, keeping the previous one: %s", exc)
            self.version = version
            return
        self.version, self.entries, self.current = version, by_key, settings
        self._apply(settings)

    # --- the admin side ---
    async def put(self, kind: str, name: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Create or replace one entry from its config table (a JSON object; `enabled` besides)."""
        _check_name(name)
        fields = dict(fields)
        enabled = fields.pop("enabled", True)
        if not isinstance(enabled, bool):
            raise InvalidRequest("'enabled' must be a boolean", param="enabled")
        if fields.pop("name", name) != name:
            raise InvalidRequest("'name', when given, must be the name in the path", param="name")
        try:   # the body's own shape first (a 400), then whether it fits with the rest (a 409)
            msgspec.convert({**fields, "name": name}, ProviderConfig if kind == "provider" else ModelConfig)
        except msgspec.ValidationError as exc:
            raise invalid_field(str(exc)) from None
        doc: dict[str, Any] = {"enabled": enabled, "fields": fields}
        if kind == "provider":
            doc["keys"] = self._sealed(name, {k: fields.pop(k) for k in _SECRET_FIELDS if k in fields})
        raw = orjson.dumps(doc).decode()
        candidate = {**self.entries, (kind, name): CatalogEntry(kind, name, raw, 0.0)}
        try:
            merge(self._base, list(candidate.values()), self._box)
        except ConfigError as exc:
            raise Conflict(f"With this {kind} the configuration would not be valid: {exc}", param=kind) from None
        await self._store.put_catalog(kind, name, raw)
        await self.reload()
        return self.describe(kind, name)

    def _sealed(self, name: str, given: dict[str, Any]) -> str | None:
        """The provider's secret fields, sealed: those given replace the stored ones, the others stay."""
        old = self.entries.get(("provider", name))
        old_sealed = orjson.loads(old.doc).get("keys") if old is not None else None
        if not given:
            return old_sealed
        plain = self._box.open(old_sealed) if old_sealed else None
        return self._box.seal(orjson.dumps({**(orjson.loads(plain) if plain else {}), **given}).decode())

    async def delete(self, kind: str, name: str) -> None:
        candidate = {k: e for k, e in self.entries.items() if k != (kind, name)}
        try:
            merge(self._base, list(candidate.values()), self._box)
        except ConfigError as exc:
            raise Conflict(f"Deleting {kind} {name!r} would leave the configuration invalid: {exc}",
                           param=kind) from None
        if not await self._store.put_catalog(kind, name, None):
            raise NotFound(f"No {kind} {name!r} in the database (entries from the config file cannot be deleted; "
                           "disable them with enabled=false).")
        await self.reload()

    def describe(self, kind: str, name: str) -> dict[str, Any]:
        entry = self.entries.get((kind, name))
        doc = orjson.loads(entry.doc) if entry is not None else None
        live: Any = next((x for x in (self.current.providers if kind == "provider" else self.current.models)
                          if x.name == name), None)
        if doc is None and live is None:
            raise NotFound(f"No {kind} {name!r}.")
        out = {"name": name, "source": "database" if doc is not None else "file",
               "enabled": doc["enabled"] if doc is not None else True, "serving": live is not None}
        if live is not None:
            out["config"] = _public(live)
        elif doc is not None:
            out["config"] = doc["fields"]
        return out

    def public(self) -> dict[str, Any]:
        names = {kind: sorted({n for k, n in self.entries if k == kind} | {x.name for x in xs})
                 for kind, xs in (("provider", self.current.providers), ("model", self.current.models))}
        return {"version": self.version,
                "providers": [self.describe("provider", n) for n in names["provider"]],
                "models": [self.describe("model", n) for n in names["model"]]}


def merge(base: Settings, entries: list[CatalogEntry], box: SecretBox) -> Settings:
    """The file's settings with the database entries laid over them; raises ConfigError when invalid."""
    providers = {p.name: p for p in base.providers}
    models = {m.name: m for m in base.models}
    hidden: set[str] = set()
    for e in entries:
        doc = orjson.loads(e.doc)
        table: dict[str, Any] = providers if e.kind == "provider" else models
        if not doc.get("enabled", True):
            table.pop(e.name, None)
            if e.kind == "provider":
                hidden.add(e.name)
            continue
        fields = {**doc["fields"], "name": e.name}
        if e.kind == "provider" and doc.get("keys"):
            plain = box.open(doc["keys"])
            if plain is None:
                raise ConfigError(f"provider {e.name!r}: its upstream keys cannot be decrypted with this "
                                  "server's channels.secret")
            fields.update(orjson.loads(plain))
        try:
            table[e.name] = msgspec.convert(fields, ProviderConfig if e.kind == "provider" else ModelConfig)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"{e.kind} {e.name!r}: {str(exc).replace('`$.', '`')}") from None
    kept = []
    for m in models.values():  # a model loses the targets of disabled providers; with none left it goes
        targets = [t for t in m.targets if t.provider not in hidden]
        if targets:
            kept.append(msgspec.structs.replace(m, targets=targets))
    merged = msgspec.structs.replace(base, providers=list(providers.values()), models=kept)
    check(merged)
    apply_env_proxies(merged)
    return merged


def _public(x: ProviderConfig | ModelConfig) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(x)
    if isinstance(x, ProviderConfig):
        out["api_key"] = mask(x.api_key) if x.api_key else None
        out["api_keys"] = [mask(k if isinstance(k, str) else k.key) for k in x.api_keys]
        out["headers"] = {k: "****" for k in x.headers}  # headers often carry credentials too
    return out


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise InvalidRequest("A name is 1 to 100 letters, digits and . _ : / @ - (starting with a letter or "
                             "digit).", param="name")
