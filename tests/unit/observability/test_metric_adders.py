"""The per-request metric updates (`adder`, `Observer`) add exactly what prometheus_client's own `inc` and
`observe` add, bucket for bucket, and take the short way with the installed library."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from sluice.observability.metrics import Observer, adder

BOUNDS = (0.01, 0.05, 0.1, 1, 10)
AMOUNTS = (0.0, 0.01, 0.010000001, 0.05, 0.07, 1, 9.99, 10, 10.5, 1e9, float("nan"))


def _text(reg: CollectorRegistry) -> bytes:
    """The exposition without the `_created` times (two metrics are never created in the same instant)."""
    return b"\n".join(line for line in generate_latest(reg).splitlines() if b"_created" not in line)


def _histograms() -> tuple[CollectorRegistry, Histogram, CollectorRegistry, Histogram]:
    regs = CollectorRegistry(), CollectorRegistry()
    a, b = (Histogram("h", "h", ["m"], buckets=BOUNDS, registry=r).labels("x") for r in regs)
    return regs[0], a, regs[1], b


def test_an_observer_fills_the_buckets_and_the_sum_as_observe_does() -> None:
    reg_a, public, reg_b, fast = _histograms()
    observe = Observer(fast)
    assert observe._public is None  # the installed prometheus_client has the inside the short way needs
    for amount in AMOUNTS:
        public.observe(amount)
        observe(amount)
    text = _text(reg_b)
    assert text == _text(reg_a)
    assert b'h_bucket{le="0.01",m="x"} 2.0' in text  # an amount on a bound counts in that bound's bucket


def test_an_observer_falls_back_to_observe_when_the_inside_differs() -> None:
    reg_a, public, reg_b, fast = _histograms()
    observe = Observer(SimpleNamespace(observe=fast.observe))  # type: ignore[arg-type]  # another inside

    assert observe._public is not None
    for amount in AMOUNTS[:-1]:
        public.observe(amount)
        observe(amount)
    assert _text(reg_b) == _text(reg_a)


def test_an_adder_adds_to_counters_and_gauges_as_inc_does() -> None:
    regs = CollectorRegistry(), CollectorRegistry()
    counters = [Counter("c", "c", ["m"], registry=r).labels("x") for r in regs]
    gauges = [Gauge("g", "g", registry=r) for r in regs]
    counters[0].inc(3)
    counters[0].inc(0.5)
    gauges[0].inc()
    gauges[0].dec()
    gauges[0].inc()
    add_c, add_g = adder(counters[1]), adder(gauges[1])
    assert add_c != counters[1].inc
    add_c(3)
    add_c(0.5)
    add_g(1)
    add_g(-1)
    add_g(1)
    assert _text(regs[1]) == _text(regs[0])
