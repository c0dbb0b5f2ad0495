"""Prometheus metrics: defined once here, updated once per request when its ledger record is settled,
plus a few cheap counters and gauges. With `--workers N` every process writes its values to a shared
per-run directory (prometheus_client's multiprocess mode) and any of them can render the totals.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from typing import TYPE_CHECKING

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


Add = Callable[[float], None]


def adder(metric: Counter | Gauge) -> Add:
    """`inc` of a bound child (or an unlabelled metric) without prometheus_client's checks on the way (that
    the metric has its label values, that a counter's amount is not negative), which a child bound once and
    given non-negative amounts never needs: its value's own `inc` (a lock and an addition, in either the
    one-process or the multiprocess value class). The public `inc` if the library's inside ever differs."""
    inc = getattr(getattr(metric, "_value", None), "inc", None)
    return inc if callable(inc) else metric.inc


class Observer:
    """`observe` of a bound histogram child as its value objects: the sum, then the first bucket whose bound
    is not below the amount (found by bisection instead of a loop over the bounds). The public `observe` if
    the library's inside differs."""

    __slots__ = ("_bounds", "_buckets", "_public", "_sum")

    def __init__(self, child: Histogram) -> None:
        bounds = getattr(child, "_upper_bounds", None)
        buckets = getattr(child, "_buckets", None)
        total = getattr(getattr(child, "_sum", None), "inc", None)
        ok = (isinstance(bounds, list) and isinstance(buckets, list) and len(bounds) == len(buckets)
              and bool(bounds) and bounds[-1] == float("inf") and callable(total)
              and all(callable(getattr(b, "inc", None)) for b in buckets))
        self._public: Add | None = None if ok else child.observe
        self._bounds: list[float] = list(bounds) if ok else []  # type: ignore[arg-type]
        self._buckets: list[Add] = [b.inc for b in buckets] if ok else []  # type: ignore[union-attr]
        self._sum: Add = total if ok else child.observe  # type: ignore[assignment]

    def __call__(self, amount: float) -> None:
        if self._public is not None or amount != amount:  # (NaN: counted in no bucket, as the library does)
            (self._public or self._sum)(amount)
            return
        self._sum(amount)
        self._buckets[bisect_left(self._bounds, amount)](1)


_in_flight = adder(IN_FLIGHT)
_streams = adder(STREAMS)


def request_started() -> None:
    _in_flight(1)


def stream_opened() -> None:
    _streams(1)


class _Series:
    """The children of one (route, model, provider), looked up once (`.labels()` costs a lock and a dict),
    each as the call that adds to it."""

    __slots__ = ("attempts", "cost", "duration", "failovers", "per_token", "retries", "tokens", "ttft")

    def __init__(self, route: str, model: str, provider: str) -> None:
        self.duration = Observer(DURATION.labels(route, model, provider))
        self.ttft = Observer(TTFT.labels(model, provider))
        self.per_token = Observer(PER_TOKEN.labels(model, provider))
        self.tokens = [adder(TOKENS.labels(model, provider, t)) for t in ("input", "output", "cached", "reasoning")]
        self.cost = adder(COST.labels(model, provider))
        self.attempts = adder(ATTEMPTS.labels(provider))
        self.retries = adder(RETRIES.labels(provider))
        self.failovers = adder(FAILOVERS.labels(provider))


_series: dict[tuple[str, str, str], _Series] = {}
_requests: dict[tuple[str, str, str, int, str], Add] = {}


def settled(labels: Labels, rec: LedgerRecord, route: str, reasoning: int | None, failovers: int) -> None:
    """Everything a finished request adds, once, from its ledger record (and what the record does not keep:
    its front door, reasoning tokens and failovers)."""
    _in_flight(-1)
    model, provider = labels.model(rec.model), labels.provider(rec.provider)
    if rec.stream and rec.status == 200:  # a stream was opened (its scope says 200 only then)
        _streams(-1)
    code = labels.error_code(rec.error_code)
    count = _requests.get((route, model, provider, rec.status, code))
    if count is None:
        count = adder(REQUESTS.labels(route, model, provider, f"{rec.status // 100}xx", code))
        _requests[(route, model, provider, rec.status, code)] = count
    count(1)
    if rec.disconnected:
        DISCONNECTS.labels(route, model).inc()
    series = _series.get((route, model, provider))
    if series is None:
        series = _series[(route, model, provider)] = _Series(route, model, provider)
    series.duration(rec.duration_ms / 1000)
    if rec.provider is None:
        return  # refused before any upstream was chosen: no tokens, no attempts
    if rec.ttft_ms is not None:
        series.ttft(rec.ttft_ms / 1000)
        out = rec.completion_tokens or 0
        if rec.stream and out > 1:
            series.per_token((rec.duration_ms - rec.ttft_ms) / 1000 / (out - 1))
    tokens = series.tokens
    if rec.prompt_tokens:
        tokens[0](rec.prompt_tokens)
    if rec.completion_tokens:
        tokens[1](rec.completion_tokens)
    if rec.cached_tokens:
        tokens[2](rec.cached_tokens)
    if reasoning:
        tokens[3](reasoning)
    if rec.cost:
        series.cost(rec.cost / 1e9)
    if rec.attempts:
        series.attempts(rec.attempts)
        if rec.attempts > 1:
            series.retries(rec.attempts - 1)
    if failovers:
        series.failovers(failovers)


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
