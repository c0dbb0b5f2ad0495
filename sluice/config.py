"""One validated Settings object, loaded once from a TOML file (or the embedded default) and SLUICE_* env.

Unknown keys and bad values are rejected with a message naming the key; `${VAR}` / `${VAR:-default}`
in any string is replaced from the environment. This is the only module that reads the environment.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

ProviderKind = Literal["openai", "simulated", "anthropic", "gemini"]


class ConfigError(Exception):
    """The configuration is invalid; the message names the key."""


class _Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    max_body_bytes: int = 16 << 20
    heartbeat_seconds: float = 15.0
    cors_origins: list[str] = msgspec.field(default_factory=lambda: ["*"])
    admin_cors_origins: list[str] = msgspec.field(default_factory=list)   # /admin/*: no browser origin by default
    drain_seconds: float = 0.0            # after SIGTERM: /ready says 503 while requests are still served
    shutdown_grace_seconds: float = 30.0  # then: how long open requests and streams may go on
    key_cache_seconds: float = 2.0
    metrics_listen: str | None = None     # "host:port": /metrics there without a token (else admin token)
    ready_cache_seconds: float = 2.0      # /ready re-probes the database and Redis at most this often
    # clients (nginx's defaults): one header line / the whole head, header count, and the times to send
    # the head, each body read and the next request on a kept-alive connection
    max_header_bytes: int = 8 << 10
    max_head_bytes: int = 32 << 10
    max_headers: int = 100
    header_timeout_seconds: float = 60.0
    body_timeout_seconds: float = 60.0
    keepalive_seconds: float = 75.0
    # upstreams: a plain reply, and one line / one event of an event stream
    max_upstream_reply_bytes: int = 64 << 20
    max_upstream_line_bytes: int = 4 << 20
    max_upstream_event_bytes: int = 4 << 20


class StorageConfig(_Strict):
    url: str = "sqlite:///sluice-data/sluice.db"


class RedisConfig(_Strict):
    url: str | None = None


class AdminConfig(_Strict):
    token: str | None = None


# Integers the catalog API also takes: within 64 bits (JSON may carry more); check() sets the real ranges.
Int64 = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]


class TimeoutsConfig(_Strict):
    connect: float = 10.0
    first_byte: float = 600.0  # long-thinking models may be silent for minutes before answering
    idle: float = 300.0        # without a complete event (comments, pings and stray bytes do not count)
    total: float = 1800.0      # one request, every attempt and the whole stream included


class UpstreamKeyConfig(_Strict):
    """One key of a provider's pool; a bare string in `api_keys` is a key of weight 1."""

    key: str
    weight: Int64 = 1
    rpm: Int64 | None = None     # at most this many requests a minute on this key (all instances with Redis)


class ProviderConfig(_Strict):
    name: str
    kind: ProviderKind
    base_url: str | None = None
    api_key: str | None = None
    api_keys: list[str | UpstreamKeyConfig] = msgspec.field(default_factory=list)  # a pool, with api_key
    proxy: str | None = None         # http://[user:pass@]host:port; None: HTTPS_PROXY/HTTP_PROXY/NO_PROXY; "": none
    ca_file: str | None = None       # PEM bundle of CAs to trust for this upstream (instead of the system's)
    probe_model: str | None = None   # model of the health probe of disabled/cooling keys (None: no probe)
    probe_interval: float = 60.0     # seconds between probes of one disabled/cooling key
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    timeouts: TimeoutsConfig = msgspec.field(default_factory=TimeoutsConfig)
    stream_options: bool = True      # ask the upstream for usage with stream_options.include_usage
    max_tokens_default: Int64 = 4096   # for upstreams that require max_tokens (Anthropic)
    # Anthropic pass-through: client `anthropic-beta` values this upstream rejects (e.g. a cloud-hosted variant)
    strip_betas: list[str] = msgspec.field(default_factory=list)
    # the OpenAI APIs an OpenAI-compatible upstream has: with "responses", `/v1/responses` passes through
    apis: list[Literal["chat", "responses"]] = msgspec.field(default_factory=lambda: ["chat"])
    # simulated provider
    ttft_ms: float = 0.0
    tokens_per_second: float = 0.0   # 0: as fast as possible
    reply: str | None = None


class TargetConfig(_Strict):
    provider: str
    model: str
    weight: Int64 = 1
    priority: Int64 = 0


class PricingConfig(_Strict):
    """Prices per million tokens, as decimal strings (or numbers) in the ledger's currency."""

    input: str | int | float = "0"
    cached_input: str | int | float | None = None   # prompt-cache reads; default: 0.1 x input
    output: str | int | float = "0"
    cache_write_5m: str | int | float | None = None  # 5-minute prompt-cache writes; default: 1.25 x input
    cache_write_1h: str | int | float | None = None  # 1-hour prompt-cache writes; default: 2 x input


class ModelConfig(_Strict):
    name: str
    targets: list[TargetConfig]
    owned_by: str = "sluice"
    pricing: PricingConfig | None = None
    free: bool = False                     # no price on purpose: served without charge (else refused)
    max_output_reserve: Int64 | None = None  # tokens reserved when a request sets no max_tokens
    strip_suffixes: list[str] = msgspec.field(default_factory=list)  # e.g. ["[1m]"], removed before matching


class LimitsConfig(_Strict):
    """Gateway-wide limits (per-key limits live on the keys)."""

    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None


class BudgetsConfig(_Strict):
    max_output_reserve: int = 4096      # tokens reserved when neither request nor model sets a cap
    reservation_ttl_seconds: float = 900.0
    instance_timeout_seconds: float = 15.0  # a silent instance's reservations are released after this


class LedgerConfig(_Strict):
    durable: bool = True        # the record is committed before the response's last byte
    flush_interval: float = 0.2
    batch: int = 500
    retention_days: float | None = None      # older request-log rows become daily sums (None: keep all)
    retention_check_seconds: float = 3600.0  # how often an instance tries to do that (one at a time)


class LogConfig(_Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"
    access: bool = True         # one line per request (sluice.access)


class ChannelsConfig(_Strict):
    """Upstream key pools: how often an instance reads key states other instances wrote."""

    poll_seconds: float = 2.0
    cooldown_seconds: float = 30.0  # a key the upstream rate-limited rests this long (or its retry-after)
    secret: str | None = None       # encrypts upstream keys stored in the database (SLUICE_CHANNELS_SECRET)


class TokenizerConfig(_Strict):
    encoding_file: str | None = None  # a local tiktoken BPE file (e.g. cl100k_base.tiktoken)


class Settings(_Strict):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    storage: StorageConfig = msgspec.field(default_factory=StorageConfig)
    redis: RedisConfig = msgspec.field(default_factory=RedisConfig)
    admin: AdminConfig = msgspec.field(default_factory=AdminConfig)
    providers: list[ProviderConfig] = msgspec.field(default_factory=list)
    models: list[ModelConfig] = msgspec.field(default_factory=list)
    pricing: PricingConfig = msgspec.field(default_factory=PricingConfig)  # default for unpriced models
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    budgets: BudgetsConfig = msgspec.field(default_factory=BudgetsConfig)
    ledger: LedgerConfig = msgspec.field(default_factory=LedgerConfig)
    tokenizer: TokenizerConfig = msgspec.field(default_factory=TokenizerConfig)
    channels: ChannelsConfig = msgspec.field(default_factory=ChannelsConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)

    def provider(self, name: str) -> ProviderConfig:
        for p in self.providers:
            if p.name == name:
                return p
        raise KeyError(name)


DEFAULT_MODEL = "sluice-sim"

_DEFAULT: dict[str, Any] = {
    "providers": [{"name": "simulated", "kind": "simulated", "ttft_ms": 200, "tokens_per_second": 40}],
    "models": [{"name": DEFAULT_MODEL, "owned_by": "sluice", "pricing": {"input": "0.50", "output": "1.50"},
                "targets": [{"provider": "simulated", "model": DEFAULT_MODEL}]}],
}

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def load(path: str | os.PathLike[str] | None = None, *, data_dir: str | None = None,
         overrides: dict[str, Any] | None = None) -> Settings:
    """Load and validate. No path and no SLUICE_CONFIG: the embedded default (SQLite + simulated model)."""
    path = path or os.environ.get("SLUICE_CONFIG") or None
    data_dir = data_dir or os.environ.get("SLUICE_DATA_DIR") or None
    if path:
        try:
            raw: dict[str, Any] = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    else:
        raw = {k: list(v) for k, v in _DEFAULT.items()}
        if data_dir:
            raw["storage"] = {"url": "sqlite:///" + str(Path(data_dir) / "sluice.db")}
    raw = _substitute(raw, "")
    for dotted, value in (overrides or {}).items():
        if value is not None:
            section, _, key = dotted.partition(".")
            raw.setdefault(section, {})[key] = value
    _env_overrides(raw)
    try:
        settings = msgspec.convert(raw, Settings)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid config: {_humanize(str(exc))}") from None
    check(settings)
    apply_env_proxies(settings)
    return settings


def apply_env_proxies(s: Settings) -> None:
    """Give providers that set no `proxy` the one HTTPS_PROXY / HTTP_PROXY names, unless NO_PROXY
    exempts their host (curl's rules: `*`, a host, or a domain with or without a leading dot)."""
    for p in s.providers:
        if p.proxy is None and p.base_url:
            u = urlsplit(p.base_url)
            names = ("https_proxy", "HTTPS_PROXY") if u.scheme == "https" else ("http_proxy", "HTTP_PROXY")
            proxy = next((v for n in names if (v := os.environ.get(n))), None)
            if proxy and not _no_proxy(u.hostname or ""):
                p.proxy = proxy if "://" in proxy else "http://" + proxy


def _no_proxy(host: str) -> bool:
    raw = os.environ.get("no_proxy") or os.environ.get("NO_PROXY") or ""
    for entry in (e.strip().lower() for e in raw.split(",")):
        entry = entry.split(":")[0] if entry.count(":") == 1 else entry  # drop a port
        if entry == "*" or (entry and (host == entry.lstrip(".") or host.endswith("." + entry.lstrip(".")))):
            return True
    return False


def _env_overrides(raw: dict[str, Any]) -> None:
    token = os.environ.get("SLUICE_ADMIN_TOKEN")
    if token:
        raw.setdefault("admin", {})["token"] = token
    secret = os.environ.get("SLUICE_CHANNELS_SECRET")
    if secret:
        raw.setdefault("channels", {})["secret"] = secret
    redis_url = os.environ.get("SLUICE_REDIS_URL")
    if redis_url:
        raw.setdefault("redis", {})["url"] = redis_url
    for name in ("level", "format"):
        value = os.environ.get(f"SLUICE_LOG_{name.upper()}")
        if value:
            raw.setdefault("log", {})[name] = value.lower()


def metrics_dir() -> str | None:
    """The directory where `--workers N` processes share their metrics (set by `sluice serve`, read by the
    Prometheus client itself when it is imported); None in a single process."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def _substitute(value: Any, where: str) -> Any:
    if isinstance(value, str):
        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            got = os.environ.get(name)
            if got is None:
                if default is None:
                    raise ConfigError(f"{where or 'config'}: environment variable {name} is not set")
                return default
            return got
        return _VAR.sub(repl, value)
    if isinstance(value, dict):
        return {k: _substitute(v, f"{where}.{k}" if where else k) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _humanize(msg: str) -> str:
    # msgspec says "Object contains unknown field `x` - at `$.providers[0]`": name the key plainly
    return msg.replace("`$.", "`").replace("`$`", "the top level")


def check(s: Settings) -> None:
    """Validate settings assembled at runtime (file + database): raises ConfigError naming the key."""
    from sluice.config_checks import check_settings  # the ranges live beside, and import, these types

    check_settings(s)


def split_listen(value: str) -> tuple[str, int]:
    """`host:port` (IPv6 as `[::1]:9464`) -> (host, port); ConfigError naming server.metrics_listen."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError("server.metrics_listen: must be host:port, e.g. 127.0.0.1:9464")
    return host.strip("[]"), int(port)


def sqlite_path(url: str) -> Path:
    """`sqlite:///rel/path.db` is relative to the working directory; `sqlite:////abs/path.db` absolute."""
    return Path(url[len("sqlite:///"):])
