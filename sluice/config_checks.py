"""The ranges and cross-references of a Settings object, checked once it is built (file, env and database):
each failure is a ConfigError naming the key. Split from config.py, which defines the shapes."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from pathlib import Path
from urllib.parse import urlsplit

from sluice.config import ConfigError, PricingConfig, ServerConfig, Settings, UpstreamKeyConfig, split_listen


def check_settings(s: Settings) -> None:
    _check_server(s)
    if not (s.storage.url.startswith("sqlite:///") or s.storage.url.startswith(("postgresql://",
                                                                                  "postgres://"))):
        raise ConfigError("storage.url: must start with sqlite:/// or postgresql://")
    names = _check_providers(s)
    if s.ledger.retention_days is not None and not 1 <= s.ledger.retention_days <= 36500:
        raise ConfigError("ledger.retention_days: must be between 1 and 36500 (or absent to keep every row)")
    if not 1 <= s.ledger.retention_check_seconds <= 86400:
        raise ConfigError("ledger.retention_check_seconds: must be between 1 and 86400")
    if not 0.1 <= s.channels.poll_seconds <= 3600.0:
        raise ConfigError("channels.poll_seconds: must be between 0.1 and 3600")
    if not 0.0 <= s.channels.cooldown_seconds <= 86400.0:
        raise ConfigError("channels.cooldown_seconds: must be between 0 and 86400")
    _check_price("pricing", s.pricing)
    _check_models(s, names)


def _check_server(s: Settings) -> None:
    if not 0 < s.server.port < 65536:
        raise ConfigError("server.port: must be between 1 and 65535")
    if s.server.workers < 1:
        raise ConfigError("server.workers: must be at least 1")
    if s.server.max_body_bytes < 1024:
        raise ConfigError("server.max_body_bytes: must be at least 1024")
    if s.server.metrics_listen is not None:
        split_listen(s.server.metrics_listen)
    if not 0 <= s.server.ready_cache_seconds <= 3600:
        raise ConfigError("server.ready_cache_seconds: must be between 0 and 3600")
    if s.server.heartbeat_seconds <= 0:
        raise ConfigError("server.heartbeat_seconds: must be positive")
    for name in ("drain_seconds", "shutdown_grace_seconds"):
        if getattr(s.server, name) < 0:
            raise ConfigError(f"server.{name}: must not be negative")
    _check_server_limits(s.server)


def _check_providers(s: Settings) -> set[str]:
    """Each provider's fields; returns the provider names, which model targets must name."""
    names: set[str] = set()
    for i, p in enumerate(s.providers):
        if p.name in names:
            raise ConfigError(f"providers[{i}].name: duplicate provider name {p.name!r}")
        names.add(p.name)
        if p.kind in ("openai", "anthropic", "gemini") and not p.base_url:
            raise ConfigError(f"providers[{i}].base_url: required for kind {p.kind!r}")
        if p.base_url and not p.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"providers[{i}].base_url: must be an http:// or https:// URL")
        if p.proxy and (not p.proxy.startswith("http://") or not urlsplit(p.proxy).hostname):
            raise ConfigError(f"providers[{i}].proxy: must be an http://host:port URL")
        if p.ca_file is not None and not Path(p.ca_file).is_file():
            raise ConfigError(f"providers[{i}].ca_file: no such file: {p.ca_file}")
        for j, k in enumerate(p.api_keys):
            if isinstance(k, UpstreamKeyConfig) and not 0 <= k.weight <= 1000:
                raise ConfigError(f"providers[{i}].api_keys[{j}].weight: must be between 0 and 1000")
            if isinstance(k, UpstreamKeyConfig) and k.rpm is not None and not 1 <= k.rpm <= 1_000_000:
                raise ConfigError(f"providers[{i}].api_keys[{j}].rpm: must be between 1 and 1000000")
        if not 1.0 <= p.probe_interval <= 86400.0:
            raise ConfigError(f"providers[{i}].probe_interval: must be between 1 and 86400 seconds")
        if "responses" in p.apis and p.kind != "openai":
            raise ConfigError(f"providers[{i}].apis: only kind 'openai' passes the Responses API through")
        to = p.timeouts
        if min(to.connect, to.first_byte, to.idle, to.total) <= 0:
            raise ConfigError(f"providers[{i}].timeouts: must be positive")
    return names


def _check_models(s: Settings, names: set[str]) -> None:
    models = set()
    for i, m in enumerate(s.models):
        if m.pricing is not None:
            _check_price(f"models[{i}].pricing", m.pricing)
            if m.free:
                raise ConfigError(f"models[{i}].free: a model with a pricing is not free; set one or the other")
        if m.max_output_reserve is not None and not 1 <= m.max_output_reserve <= 10_000_000:
            raise ConfigError(f"models[{i}].max_output_reserve: must be between 1 and 10000000")
        if m.name in models:
            raise ConfigError(f"models[{i}].name: duplicate model name {m.name!r}")
        models.add(m.name)
        if not m.targets:
            raise ConfigError(f"models[{i}].targets: at least one target is required")
        if m.name.count("*") > 1 or not 0 < len(m.name) <= 200:
            raise ConfigError(f"models[{i}].name: 1 to 200 characters with at most one '*'")
        if any(not 0 < len(x) <= 50 for x in m.strip_suffixes):
            raise ConfigError(f"models[{i}].strip_suffixes: each suffix must be 1 to 50 characters")
        for j, t in enumerate(m.targets):
            if t.provider not in names:
                raise ConfigError(f"models[{i}].targets[{j}].provider: unknown provider {t.provider!r}")
            if "*" in t.model and "*" not in m.name:
                raise ConfigError(f"models[{i}].targets[{j}].model: '*' only in the targets of a pattern")
            if t.weight < 0:
                raise ConfigError(f"models[{i}].targets[{j}].weight: must not be negative")


_SERVER_RANGES: dict[str, tuple[float, float]] = {
    "max_header_bytes": (1024, 1 << 20), "max_head_bytes": (1024, 16 << 20), "max_headers": (8, 10_000),
    "header_timeout_seconds": (0.01, 3600), "body_timeout_seconds": (0.01, 3600),
    "keepalive_seconds": (0.01, 3600), "max_upstream_reply_bytes": (1024, 1 << 30),
    "max_upstream_line_bytes": (1024, 256 << 20), "max_upstream_event_bytes": (1024, 256 << 20),
}


def _check_server_limits(srv: ServerConfig) -> None:
    for name, (lo, hi) in _SERVER_RANGES.items():
        if not lo <= getattr(srv, name) <= hi:
            raise ConfigError(f"server.{name}: must be between {lo:g} and {hi:g}")
    if srv.max_head_bytes < srv.max_header_bytes:
        raise ConfigError("server.max_head_bytes: must be at least server.max_header_bytes")


def _check_price(where: str, p: PricingConfig) -> None:
    for name in ("input", "cached_input", "output", "cache_write_5m", "cache_write_1h"):
        v = getattr(p, name)
        if v is None:
            continue
        try:
            d = Decimal(str(v))
        except InvalidOperation:
            raise ConfigError(f"{where}.{name}: not a decimal number: {v!r}") from None
        if not d.is_finite() or d < 0:
            raise ConfigError(f"{where}.{name}: must be a non-negative number")


