"""Prometheus metrics: defined once here, updated once per request when its ledger record is settled,
plus a few cheap counters and gauges. With `--workers N` every process writes its values to a shared
per-run directory (prometheus_client's multiprocess mode) and any of them can render the totals.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from sluice.config import metrics_dir

if TYPE_CHECKING:
    from sluice.storage.base import LedgerRecord

REGISTRY = CollectorRegistry(auto_describe=True)
OTHER = "other"
MAX_ERROR_CODES = 64  # error codes can come from upstreams: past this many distinct ones, "other"

# seconds; TTFT and durations of LLM calls span 10 ms to minutes (OpenTelemetry GenAI's advice, trimmed)
_DURATION = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320)
_PER_TOKEN = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2.5)
_COMMIT = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5)

REQUESTS = Counter("sluice_requests", "Requests written to the ledger, by front door, public model, provider, "
                   "status class and error code.", ["route", "model", "provider", "status_class", "error_code"],
                   registry=REGISTRY)
REJECTED = Counter("sluice_requests_rejected", "Requests refused before authentication succeeded (no ledger "
                   "record): bad or missing key, unreadable body.", ["route", "code"], registry=REGISTRY)
DISCONNECTS = Counter("sluice_client_disconnects", "Requests whose client went away before the end.",
                      ["route", "model"], registry=REGISTRY)
DURATION = Histogram("gen_ai_server_request_duration_seconds", "Request duration, from the body read to the "
                     "settled record.", ["route", "model", "provider"], buckets=_DURATION, registry=REGISTRY)
TTFT = Histogram("gen_ai_server_time_to_first_token_seconds", "Time to the first chunk (plain requests: to the "
                 "whole answer).", ["model", "provider"], buckets=_DURATION, registry=REGISTRY)
PER_TOKEN = Histogram("gen_ai_server_time_per_output_token_seconds", "Mean time between output tokens after the "
                      "first, one observation per stream.", ["model", "provider"], buckets=_PER_TOKEN,
                      registry=REGISTRY)
TOKENS = Counter("sluice_tokens", "Tokens by type (input, output, cached, reasoning); cached and reasoning are "
                 "part of input and output.", ["model", "provider", "type"], registry=REGISTRY)
COST = Counter("sluice_cost", "Cost charged, in the ledger's currency.", ["model", "provider"], registry=REGISTRY)
ATTEMPTS = Counter("sluice_upstream_attempts", "Upstream calls opened.", ["provider"], registry=REGISTRY)
RETRIES = Counter("sluice_upstream_retries", "Upstream calls after the first of a request.", ["provider"],
                  registry=REGISTRY)
FAILOVERS = Counter("sluice_upstream_failovers", "Retries that moved to another target.", ["provider"],
                    registry=REGISTRY)
COOLDOWNS = Counter("sluice_upstream_cooldowns", "Targets put to cool down after repeated failures.",
                    ["provider"], registry=REGISTRY)
TARGET_COOLING = Gauge("sluice_upstream_target_cooling", "1 from a target's cooldown until it answers again "
                       "(any worker).", ["provider", "model"], registry=REGISTRY, multiprocess_mode="livemax")
IN_FLIGHT = Gauge("sluice_requests_in_flight", "Authenticated requests not settled yet.", registry=REGISTRY,
                  multiprocess_mode="livesum")
STREAMS = Gauge("sluice_streams_open", "Streams open to clients.", registry=REGISTRY, multiprocess_mode="livesum")
RESERVATIONS = Gauge("sluice_reservations_held", "Budget reservations held in the database (all instances).",
                     registry=REGISTRY, multiprocess_mode="max")
LEDGER_QUEUE = Gauge("sluice_ledger_queue_depth", "Ledger records waiting to be written.", registry=REGISTRY,
                     multiprocess_mode="livesum")
LEDGER_COMMIT = Histogram("sluice_ledger_commit_seconds", "Time to write one ledger batch.", buckets=_COMMIT,
                          registry=REGISTRY)
LOOP_LAG = Gauge("sluice_event_loop_lag_seconds", "How late the event loop ran a timer, last sample.",
                 registry=REGISTRY, multiprocess_mode="livemax")


class Labels:
    """Bounds label values: models and providers are the configured ones, error codes a capped set."""

    def __init__(self, models: list[str], providers: list[str]) -> None:
        self.models = frozenset(models)
        self.providers = frozenset(providers)
        self._codes: set[str] = set()

    def model(self, name: str) -> str:
        return name if name in self.models else OTHER

    def provider(self, name: str | None) -> str:
        if name is None:
            return "none"
        return name if name in self.providers else OTHER

    def error_code(self, code: str | None) -> str:
        if code is None:
            return ""
        if code in self._codes:
            return code
        if len(self._codes) < MAX_ERROR_CODES and len(code) <= 64:
            self._codes.add(code)
            return code
        return OTHER


def request_started() -> None:
    IN_FLIGHT.inc()


def stream_opened() -> None:
    STREAMS.inc()


class _Series:
    """The children of one (route, model, provider), looked up once: `.labels()` costs a lock and a dict."""

    __slots__ = ("attempts", "cost", "duration", "failovers", "per_token", "retries", "tokens", "ttft")

    def __init__(self, route: str, model: str, provider: str) -> None:
        self.duration = DURATION.labels(route, model, provider)
        self.ttft = TTFT.labels(model, provider)
        self.per_token = PER_TOKEN.labels(model, provider)
        self.tokens = [TOKENS.labels(model, provider, t) for t in ("input", "output", "cached", "reasoning")]
        self.cost = COST.labels(model, provider)
        self.attempts = ATTEMPTS.labels(provider)
        self.retries = RETRIES.labels(provider)
        self.failovers = FAILOVERS.labels(provider)


_series: dict[tuple[str, str, str], _Series] = {}
_requests: dict[tuple[str, str, str, int, str], Any] = {}


def settled(labels: Labels, rec: LedgerRecord, route: str, reasoning: int | None, failovers: int) -> None:
    """Everything a finished request adds, once, from its ledger record (and what the record does not keep:
    its front door, reasoning tokens and failovers)."""
    IN_FLIGHT.dec()
    model, provider = labels.model(rec.model), labels.provider(rec.provider)
    if rec.stream and rec.status == 200:  # a stream was opened (its scope says 200 only then)
        STREAMS.dec()
    code = labels.error_code(rec.error_code)
    counter = _requests.get((route, model, provider, rec.status, code))
    if counter is None:
        counter = REQUESTS.labels(route, model, provider, f"{rec.status // 100}xx", code)
        _requests[(route, model, provider, rec.status, code)] = counter
    counter.inc()
    if rec.disconnected:
        DISCONNECTS.labels(route, model).inc()
    series = _series.get((route, model, provider))
    if series is None:
        series = _series[(route, model, provider)] = _Series(route, model, provider)
    series.duration.observe(rec.duration_ms / 1000)
    if rec.provider is None:
        return  # refused before any upstream was chosen: no tokens, no attempts
    if rec.ttft_ms is not None:
        series.ttft.observe(rec.ttft_ms / 1000)
        out = rec.completion_tokens or 0
        if rec.stream and out > 1:
            series.per_token.observe((rec.duration_ms - rec.ttft_ms) / 1000 / (out - 1))
    for child, n in zip(series.tokens, (rec.prompt_tokens, rec.completion_tokens, rec.cached_tokens, reasoning),
                        strict=True):
        if n:
            child.inc(n)
    if rec.cost:
        series.cost.inc(rec.cost / 1e9)
    if rec.attempts:
        series.attempts.inc(rec.attempts)
        if rec.attempts > 1:
            series.retries.inc(rec.attempts - 1)
    if failovers:
        series.failovers.inc(failovers)


def rejected(route: str, code: str | None) -> None:
    """Our own refusals (a fixed set of codes), counted without a record: scanners leave a trace here."""
    REJECTED.labels(route, code or "unknown").inc()


def target_state(provider: str, model: str, cooling: bool) -> None:
    """Cooldowns' callback: count a cooldown, and keep each target's state (labels: configured targets)."""
    if cooling:
        COOLDOWNS.labels(provider).inc()
    TARGET_COOLING.labels(provider, model).set(1 if cooling else 0)


def render() -> bytes:
    """The exposition text: this process's registry, or every worker's values when they share a directory."""
    path = metrics_dir()
    if path is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def process_exiting(pid: int) -> None:
    """Drop a stopped worker's live gauges (in-flight, open streams) from the shared directory."""
    path = metrics_dir()
    if path is not None:
        mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
