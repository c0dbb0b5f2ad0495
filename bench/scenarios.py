"""The scenarios. Each runs the same workload against every target in turn (direct first, then Sluice,
then peers), so every figure has a direct measurement taken side by side, and stores raw figures."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench import load, wrk
from bench.httpclient import build_request
from bench.proc import cpu_seconds, machine_busy_seconds, reset_peak, status_kb
from bench.targets import CHAT_PATH, HOST, RESPONSES_PATH, Target, start_sluice

PLAIN_BODY = orjson.dumps({"model": "bench-model", "max_tokens": 32,
                           "messages": [{"role": "user", "content": "Say hello to the benchmark."}]})
STREAM_BODY = orjson.dumps({"model": "bench-model", "max_tokens": 32, "stream": True,
                            "stream_options": {"include_usage": True},
                            "messages": [{"role": "user", "content": "Say hello to the benchmark."}]})
RESPONSES_BODY = orjson.dumps({"model": "bench-model", "max_output_tokens": 32, "stream": True,
                               "input": "Say hello to the benchmark."})
DEFAULT_BUDGETS_TOML = """
# Budgets and limits on: the model is priced, the gateway has a global RPM limit, and the bench key
# (created with BUDGET_KEY_ARGS) has a prepaid budget, a token quota and per-key RPM/TPM/concurrency.
[pricing]
input = "2.50"
output = "10.00"

[limits]
rpm = 100000000
"""
BUDGET_KEY_ARGS = ("--budget", "1000000", "--token-quota", "100000000000", "--rpm", "100000000",
                   "--tpm", "1000000000", "--max-concurrency", "100000")


@dataclass
class Bench:
    """Everything a scenario needs: options, the upstream, the targets, and the results so far."""

    opts: Any
    out: Path
    upstream: Target
    targets: list[Target]
    sluice_root: Path
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def quick(self) -> bool:
        return bool(self.opts.quick)

    def gateway(self) -> Target | None:
        return next((t for t in self.targets if t.name == "sluice"), None)


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return float(s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))])


def say(msg: str) -> None:
    print(msg, flush=True)


def _req(t: Target, body: bytes, shape: dict[str, str] | None = None, path: str = CHAT_PATH,
         extra: dict[str, str] | None = None) -> bytes:
    """The request for a target; the stream shape goes both in x-bench-* headers and in the prompt."""
    if shape:
        obj = orjson.loads(body)
        prompt = "bench " + " ".join(f"{k}={v}" for k, v in shape.items())
        if "input" in obj:
            obj["input"] = prompt
        else:
            obj["messages"][-1]["content"] = prompt
        body = orjson.dumps(obj)
    return build_request(HOST, t.port, path, body, {**t.headers, **(extra or {}), **(shape or {})})


def saturate(b: Bench, t: Target, duration: float) -> dict[str, Any]:
    """Max-rate plain requests; also the gateway's and the upstream's CPU seconds per request."""
    gw0, up0 = cpu_seconds(t.gw_pids()), cpu_seconds(b.upstream.pids())
    if wrk.available() and not b.opts.python_load:
        r = wrk.saturate(t.url, PLAIN_BODY, t.headers, b.opts.conns, duration, 1, b.out)
    else:
        r = load.run(load.closed_loop, HOST, t.port, _req(t, PLAIN_BODY), b.opts.conns, duration)
        r = {"tool": "python", "requests": r["requests"], "errors": r["errors"], "elapsed": r["elapsed"],
             "p50_us": pct(r["lat_us"], 50), "p99_us": pct(r["lat_us"], 99)}
    r.pop("raw", None)
    n = max(1, r["requests"])
    r["rps"] = r["requests"] / r["elapsed"]
    r["gw_cpu_ms"] = (cpu_seconds(t.gw_pids()) - gw0) * 1e3 / n if t.gw_pids() else None
    r["up_cpu_ms"] = (cpu_seconds(b.upstream.pids()) - up0) * 1e3 / n
    return r


def _merge_sat(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out = {"rps": statistics.median(r["rps"] for r in runs), "rounds": [round(r["rps"]) for r in runs],
           "errors": sum(r["errors"] for r in runs), "tool": runs[0]["tool"]}
    for k in ("p50_us", "p99_us", "gw_cpu_ms", "up_cpu_ms"):
        vals = [r[k] for r in runs if r.get(k) is not None]
        out[k] = statistics.median(vals) if vals else None
    return out


def _alternate(targets: list[Target], rounds: int, fn: Callable[[Target], dict[str, Any]],
               label: str) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
    for i in range(rounds):
        for t in targets:
            r = fn(t)
            runs[t.name].append(r)
            say(f"  [{label} round {i + 1}] {t.name:8s} {r.get('rps', 0):10.0f} req/s  "
                f"p50 {_ms(r.get('p50_us'))}  p99 {_ms(r.get('p99_us'))}  errors {r.get('errors')}")
    return runs


def _ms(us: float | None) -> str:
    return "   n/a  " if us is None else f"{us / 1000:7.3f}ms"


def plain_saturation(b: Bench) -> None:
    rounds = 1 if b.quick else 2
    runs = _alternate(b.targets, rounds, lambda t: saturate(b, t, b.opts.duration), "saturation")
    res = {name: _merge_sat(r) for name, r in runs.items()}
    d = res["direct"]
    up_cpu = d.get("up_cpu_ms") or 0
    res["upstream_ceiling"] = {"direct_rps": d["rps"], "upstream_cpu_ms": up_cpu,
                               "one_core_rps": 1000 / up_cpu if up_cpu else None}
    say(f"  upstream ceiling: {d['rps']:.0f} req/s measured direct (load generator on the same 2 cores); "
        f"upstream CPU {up_cpu * 1000:.1f} us/request => ~{res['upstream_ceiling']['one_core_rps'] or 0:.0f}"
        f" req/s per core")
    b.results["plain-saturation"] = res


def plain_latency(b: Bench) -> None:
    rates = b.opts.rates or ([100, 500] if b.quick else [100, 500, 1000, 2000])
    dur = 1.0 if b.quick else b.opts.duration
    res: dict[str, dict[str, Any]] = {t.name: {} for t in b.targets}
    for rate in rates:
        for t in b.targets:
            r = load.run(load.open_loop, HOST, t.port, _req(t, PLAIN_BODY), float(rate), dur)
            lat, sched = r.pop("lat_us"), r.pop("sched_lat_us")
            r.update(p50_us=pct(lat, 50), p99_us=pct(lat, 99), achieved=len(lat) / r["elapsed"],
                     sched_p50_us=pct(sched, 50), sched_p99_us=pct(sched, 99))
            res[t.name][str(rate)] = r
            say(f"  [latency {rate}/s] {t.name:8s} p50 {_ms(r['p50_us'])}  p99 {_ms(r['p99_us'])}  "
                f"errors {r['errors']}")
    b.results["plain-latency"] = res


def stream_latency(b: Bench) -> None:
    chunks, ttft, gap = (10, 20, 10) if b.quick else (20, 20, 10)
    n, conc = (40, 10) if b.quick else (300, 20)
    shape = {"x-bench-chunks": str(chunks), "x-bench-ttft-ms": str(ttft), "x-bench-gap-ms": str(gap)}
    res: dict[str, Any] = {"shape": {"streams": n, "concurrency": conc, "chunks": chunks, "ttft_ms": ttft,
                                     "gap_ms": gap}}
    for t in b.targets:
        recs = load.run(load.streams, HOST, t.port, _req(t, STREAM_BODY, shape), n, conc, chunks)

        def pool(key: str, recs: list[dict[str, Any]] = recs) -> list[float]:
            out: list[float] = []
            for r in recs:
                v = r.get(key)
                if isinstance(v, list):
                    out.extend(v)
                elif v is not None:
                    out.append(v)
            return out

        first_delay = [r["delay_us"][0] for r in recs if r.get("delay_us")]
        row = {"intact": sum(1 for r in recs if r.get("intact")), "n": n,
               "stamped": any("delay_us" in r for r in recs)}
        for key, vals in (("ttfb", pool("ttfb_us")), ("ttfc", pool("ttfc_us")), ("gap", pool("gaps_us")),
                          ("delay", pool("delay_us")), ("first_delay", first_delay),
                          ("gap_dev", pool("gap_dev_us"))):
            row[f"{key}_p50_us"], row[f"{key}_p99_us"] = pct(vals, 50), pct(vals, 99)
        res[t.name] = row
        say(f"  [streams] {t.name:8s} intact {row['intact']}/{n}  TTFB p99 {_ms(row['ttfb_p99_us'])}  "
            f"TTFC p50 {_ms(row['ttfc_p50_us'])} p99 {_ms(row['ttfc_p99_us'])}  "
            f"chunk delay p99 {_ms(row['delay_p99_us'])}  gap dev p99 {_ms(row['gap_dev_p99_us'])}")
    b.results["stream-latency"] = res


def held_streams(b: Bench) -> None:
    sizes = b.opts.held or ([200] if b.quick else [1000, 5000])
    chunks, gap = (5, 200) if b.quick else (20, 200)
    ideal_us = gap * chunks * 1000  # first content chunk at `gap`, then one every `gap`
    shape = {"x-bench-chunks": str(chunks), "x-bench-ttft-ms": str(gap), "x-bench-gap-ms": str(gap),
             "x-bench-chunk-size": "8"}
    res: dict[str, Any] = {"shape": {"chunks": chunks, "gap_ms": gap, "ideal_ms": ideal_us / 1000}}
    # memory per stream counts from the gateway's RSS when it became ready, so heap kept from earlier
    # scenarios or sizes is charged to the streams (an upper bound); the increment over the RSS just
    # before the size (a lower bound) is kept as kb_per_stream_increment
    base = {t.name: t.rss_idle_kb or status_kb(t.gw_pids(), "VmRSS") for t in b.targets}
    for n in sizes:
        row: dict[str, Any] = {}
        for t in b.targets:
            procs = 2 if n >= 2000 else 1
            pids = t.gw_pids()
            reset_ok = reset_peak(pids)
            rss0 = status_kb(pids, "VmRSS")
            cpu0, up0, box0 = cpu_seconds(pids), cpu_seconds(b.upstream.pids()), machine_busy_seconds()
            req = _req(t, STREAM_BODY, shape)
            timeout = ideal_us / 1e6 * 3 + 30
            parts = load.parallel(load.held, [(HOST, t.port, req, n // procs + (i < n % procs), chunks,
                                               timeout) for i in range(procs)])
            durs = [d for p in parts for d in p["durations_us"]]
            errors: dict[str, int] = {}
            for p in parts:
                for k, v in p["errors"].items():
                    errors[k] = errors.get(k, 0) + v
            hwm = status_kb(pids, "VmHWM")
            # who used the two cores meanwhile: a target is measured the same way as the others only if
            # the client, the upstream and other sessions left it the same share
            box = machine_busy_seconds() - box0
            client, up = sum(p["cpu_s"] for p in parts), cpu_seconds(b.upstream.pids()) - up0
            gw = cpu_seconds(pids) - cpu0 if pids else 0.0
            cores = {"client_cpu_s": client, "upstream_cpu_s": up, "machine_busy_s": box,
                     "others_cpu_s": box - client - up - gw}
            r = {"n": n, "intact": sum(p["intact"] for p in parts), "errors": errors, "cores": cores,
                 "p50_ms": (pct(durs, 50) or 0) / 1000, "p99_ms": (pct(durs, 99) or 0) / 1000,
                 "ideal_ms": ideal_us / 1000, "elapsed_s": max(p["elapsed"] for p in parts)}
            r["p99_vs_ideal"] = r["p99_ms"] / r["ideal_ms"] if durs else None
            if pids:
                r.update(peak_kb=hwm, rss_before_kb=rss0, rss_idle_kb=base[t.name], peak_reset=reset_ok,
                         kb_per_stream=(hwm - base[t.name]) / n, kb_per_stream_increment=(hwm - rss0) / n,
                         cpu_s=gw)
            row[t.name] = r
            mem = f"  peak {hwm / 1024:.1f} MB, {r['kb_per_stream']:.1f} KB/stream" if pids else ""
            say(f"  [held {n}] {t.name:8s} intact {r['intact']}/{n}  p99 {r['p99_ms']:.0f} ms "
                f"(ideal {r['ideal_ms']:.0f}){mem}  errors {errors or 0}")
            cap = (os.cpu_count() or 1) * r["elapsed_s"]
            say(f"    CPU s over {r['elapsed_s']:.1f} s: gateway {gw:.2f}, client {client:.2f}, upstream {up:.2f}, "
                f"others {cores['others_cpu_s']:.2f} (machine busy {box:.2f} of {cap:.1f})")
            time.sleep(0.5)
        res[str(n)] = row
    b.results["held-streams"] = res


def responses_stream(b: Bench) -> None:
    """Sluice's CPU per stream for the same upstream stream sent as chat completions (bytes pass through)
    and as a translated `/v1/responses` stream (chunks parsed, the Responses lifecycle written)."""
    t = b.gateway()
    if t is None:
        b.results["responses-stream"] = {"skipped": "Sluice is not running in this bench run"}
        say("  [responses-stream] skipped: Sluice not running")
        return
    chunks = 20
    n, conc = (300, 20) if b.quick else (600, 20)  # CPU is read in 10 ms ticks: enough streams to see it
    shape = {"x-bench-chunks": str(chunks), "x-bench-ttft-ms": "0", "x-bench-gap-ms": "0"}
    res: dict[str, Any] = {"shape": {"streams": n, "concurrency": conc, "chunks": chunks}}
    rounds = 1 if b.quick else 2
    for i in range(rounds):
        for label, body, path in (("chat", STREAM_BODY, CHAT_PATH), ("responses", RESPONSES_BODY, RESPONSES_PATH)):
            pids = t.gw_pids()
            cpu0 = cpu_seconds(pids)
            recs = load.run(load.streams, HOST, t.port, _req(t, body, shape, path), n, conc, chunks)
            cpu_us = (cpu_seconds(pids) - cpu0) / n * 1e6
            row = res.setdefault(label, {"cpu_us": [], "intact": 0, "n": 0})
            row["cpu_us"].append(cpu_us)
            row["intact"] += sum(1 for r in recs if r.get("intact"))
            row["n"] += n
            say(f"  [responses-stream round {i + 1}] {label:9s} {cpu_us:8.0f} us CPU/stream  "
                f"intact {sum(1 for r in recs if r.get('intact'))}/{n}")
    for label in ("chat", "responses"):
        res[label]["cpu_us_per_stream"] = statistics.median(res[label]["cpu_us"])
    res["added_cpu_us"] = res["responses"]["cpu_us_per_stream"] - res["chat"]["cpu_us_per_stream"]
    say(f"  [responses-stream] translated Responses adds {res['added_cpu_us']:.0f} us CPU per stream "
        f"of {chunks} chunks over chat pass-through")
    b.results["responses-stream"] = res


def _second_sluice(b: Bench, key: str, **kw: Any) -> Target | None:
    if b.gateway() is None:
        b.results[key] = {"skipped": "Sluice is not running in this bench run"}
        say(f"  [{key}] skipped: Sluice not running")
        return None
    try:
        return start_sluice(b.sluice_root, b.out, b.upstream.port, **kw)
    except (RuntimeError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()
        b.results[key] = {"skipped": f"could not start Sluice ({kw.get('tag')}): "
                                     f"{first[-1] if first else e}"}
        say(f"  [{key}] skipped: {b.results[key]['skipped']}")
        return None


def _pairwise(b: Bench, key: str, base: Target, other: Target) -> None:
    rounds = 1 if b.quick else 2
    try:
        runs = _alternate([base, other], rounds, lambda t: saturate(b, t, b.opts.duration), key)
    finally:
        other.stop()
    a, o = _merge_sat(runs[base.name]), _merge_sat(runs[other.name])
    b.results[key] = {base.name: a, other.name: o, "ratio": o["rps"] / a["rps"] if a["rps"] else None}
    say(f"  [{key}] {other.name} / {base.name} = {b.results[key]['ratio']:.2f}x")


def _fresh_pair(b: Bench, key: str, base_kw: dict[str, Any], other_kw: dict[str, Any]) -> None:
    """Two fresh Sluice processes (so earlier scenarios' heap and ledger do not weigh on either side),
    saturated alternately; skipped cleanly if either does not start."""
    other = _second_sluice(b, key, **other_kw)
    if other is None:
        return
    base = _second_sluice(b, key, **base_kw)
    if base is None:
        other.stop()
        return
    try:
        _pairwise(b, key, base, other)
    finally:
        base.stop()


def workers(b: Bench) -> None:
    n = b.opts.workers
    _fresh_pair(b, "workers", {"workers": 1, "tag": "workers1", "name": "sluice-1w"},
                {"workers": n, "tag": f"workers{n}", "name": f"sluice-{n}w"})
    if "ratio" in b.results.get("workers", {}):
        b.results["workers"]["workers"] = n


def budgets(b: Bench) -> None:
    path = b.opts.budgets_config
    extra = Path(path).read_text() if path else DEFAULT_BUDGETS_TOML
    _fresh_pair(b, "budgets", {"tag": "budgets-off", "name": "sluice-off"},
                {"tag": "budgets", "extra_toml": extra, "name": "sluice-budgets", "key_args": BUDGET_KEY_ARGS})


SCENARIOS: dict[str, Callable[[Bench], None]] = {
    "plain-saturation": plain_saturation,
    "plain-latency": plain_latency,
    "stream-latency": stream_latency,
    "held-streams": held_streams,
    "responses-stream": responses_stream,
    "workers": workers,
    "budgets": budgets,
}
