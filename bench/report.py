"""Turns the raw results into the Markdown report (every figure beside its direct measurement, the
ratio and the target) and a PNG plot of latency against offered load."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

Row = tuple[str, dict[str, str], str, str, str]  # figure, value per target, vs direct, target, verdict


def _f(v: float | None, unit: str = "", nd: int = 3) -> str:
    return "—" if v is None else f"{v:,.{nd}f}{unit}"


def _ms(us: float | None) -> str:
    return "—" if us is None else f"{us / 1000:.3f} ms"


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def _sat_rows(res: dict[str, Any], names: list[str]) -> list[Row]:
    sat = res.get("plain-saturation")
    if not sat:
        return []
    d, s, ng = sat.get("direct", {}), sat.get("sluice"), sat.get("nginx")
    rows: list[Row] = []
    ratio = s["rps"] / d["rps"] if s and d else None
    ok = None
    if s and ng:
        ok = s["rps"] >= 0.25 * ng["rps"]
    elif ratio is not None:
        ok = ratio >= 0.20
    vs_ng = f"; {s['rps'] / ng['rps']:.0%} of nginx" if s and ng else ""
    rows.append(("plain throughput at saturation (req/s)",
                 {n: _f(sat[n]["rps"], nd=0) for n in names if n in sat},
                 (f"{ratio:.0%}" if ratio is not None else "—") + vs_ng,
                 ">= 25% of nginx's (or >= 20% of direct)", _verdict(ok)))
    rows.append(("plain latency at saturation p50 / p99",
                 {n: f"{_ms(sat[n]['p50_us'])} / {_ms(sat[n]['p99_us'])}" for n in names if n in sat},
                 "", "", ""))
    cpu = s.get("gw_cpu_ms") if s else None
    rows.append(("gateway CPU per plain request",
                 {n: _f(sat[n].get("gw_cpu_ms"), " ms") for n in names if n in sat}, "",
                 "<= 0.15 ms", _verdict(None if cpu is None else cpu <= 0.15)))
    return rows


def _lat_rows(res: dict[str, Any], names: list[str]) -> list[Row]:
    lat = res.get("plain-latency")
    if not lat or "direct" not in lat:
        return []
    rows: list[Row] = []
    for i, rate in enumerate(lat["direct"]):
        d, s = lat["direct"][rate], lat.get("sluice", {}).get(rate)
        for p, lim in (("p50", 0.3), ("p99", 1.0)):
            added = (s[f"{p}_us"] - d[f"{p}_us"]) / 1000 if s and s[f"{p}_us"] is not None else None
            light = i == 0
            rows.append((f"plain latency {p} @ {rate}/s" + (" (light load)" if light else ""),
                         {n: _ms(lat[n][rate][f"{p}_us"]) for n in names if rate in lat.get(n, {})},
                         f"+{added:.3f} ms" if added is not None else "—",
                         f"added {p} <= {lim} ms" if light else "",
                         _verdict(None if added is None else added <= lim) if light else ""))
    return rows


def _stream_rows(res: dict[str, Any], names: list[str]) -> list[Row]:
    st = res.get("stream-latency")
    if not st or "direct" not in st:
        return []
    d, s = st["direct"], st.get("sluice")
    rows: list[Row] = []
    specs = [("intact streams", "intact", None, None), ("TTFB p99", "ttfb_p99_us", None, None),
             ("time to first content chunk p50", "ttfc_p50_us", None, None),
             ("time to first content chunk p99", "ttfc_p99_us", 1.0, "added p99 <= 1.0 ms"),
             ("chunk delivery delay (recv - upstream bench_ts) p99", "delay_p99_us", None, None),
             ("inter-chunk gap deviation (client gap - upstream gap) p99", "gap_dev_p99_us", 0.5,
              "added p99 <= 0.5 ms")]
    for label, key, lim, target in specs:
        if key == "intact":
            rows.append((label, {n: f"{st[n]['intact']}/{st[n]['n']}" for n in names if n in st}, "", "",
                         ""))
            continue
        added = None
        if s and s.get(key) is not None and d.get(key) is not None:
            added = (s[key] - d[key]) / 1000
        if key == "gap_dev_p99_us" and added is None and s and s.get("gap_p99_us") is not None:
            added = (s["gap_p99_us"] - d["gap_p99_us"]) / 1000  # no stamps came through: raw gaps
        rows.append((label, {n: _ms(st[n].get(key)) for n in names if n in st},
                     f"+{added:.3f} ms" if added is not None else "—", target or "",
                     _verdict(None if added is None or lim is None else added <= lim) if lim else ""))
    return rows


def _held_rows(res: dict[str, Any], names: list[str]) -> list[Row]:
    held = res.get("held-streams")
    if not held:
        return []
    rows: list[Row] = []
    shape = held["shape"]
    for n, row in held.items():
        if n == "shape":
            continue
        s = row.get("sluice")
        tag = f"{int(n):,} slow streams ({shape['chunks']} chunks, {shape['gap_ms']} ms apart)"
        rows.append((f"{tag}: intact", {k: f"{row[k]['intact']}/{n}" for k in names if k in row}, "",
                     "all intact", _verdict(None if not s else s["intact"] == int(n))))
        rows.append((f"{tag}: p99 duration / ideal",
                     {k: f"{row[k]['p99_ms']:.0f} ms ({_f(row[k]['p99_vs_ideal'], 'x', 2)})"
                      for k in names if k in row}, "", "<= 1.2x ideal",
                     _verdict(None if not s or s["p99_vs_ideal"] is None else s["p99_vs_ideal"] <= 1.2)))
        rows.append((f"{tag}: gateway peak memory (VmHWM) / per stream",
                     {k: f"{row[k]['peak_kb'] / 1024:.1f} MB / {row[k]['kb_per_stream']:.1f} KB"
                      for k in names if k in row and "peak_kb" in row[k]}, "", "<= 20 KB per stream",
                     _verdict(None if not s or "kb_per_stream" not in s else s["kb_per_stream"] <= 20)))
    return rows


def _pair_rows(res: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    w = res.get("workers")
    if w:
        if "skipped" in w:
            rows.append(("`--workers N` plain throughput", {}, "", ">= 1.6x one worker",
                         f"skipped: {w['skipped']}"))
        else:
            vals = {k: _f(v["rps"], " req/s", 0) for k, v in w.items() if isinstance(v, dict)}
            rows.append((f"`--workers {w['workers']}` plain throughput", vals,
                         f"{w['ratio']:.2f}x one worker", ">= 1.6x one worker", _verdict(w["ratio"] >= 1.6)))
    bu = res.get("budgets")
    if bu:
        if "skipped" in bu:
            rows.append(("budgets+limits on vs off throughput", {}, "", "(informational)",
                         f"skipped: {bu['skipped']}"))
        else:
            vals = {k: _f(v["rps"], " req/s", 0) for k, v in bu.items() if isinstance(v, dict)}
            rows.append(("budgets+limits on vs off throughput", vals, f"{bu['ratio']:.2f}x off",
                         "(informational)", ""))
    return rows


def _responses_rows(res: dict[str, Any]) -> list[Row]:
    rs = res.get("responses-stream")
    if not rs:
        return []
    if "skipped" in rs:
        return [("translated Responses stream, Sluice CPU", {}, "", "(informational)", f"skipped: {rs['skipped']}")]
    n = rs["shape"]["chunks"]
    vals = {"sluice": f"chat {rs['chat']['cpu_us_per_stream']:.0f} µs, responses "
                      f"{rs['responses']['cpu_us_per_stream']:.0f} µs"}
    intact = rs["responses"]["intact"] == rs["responses"]["n"] and rs["chat"]["intact"] == rs["chat"]["n"]
    return [(f"translated Responses stream ({n} chunks), Sluice CPU per stream", vals,
             f"+{rs['added_cpu_us']:.0f} µs vs chat pass-through", "(informational)",
             "" if intact else "streams not intact")]


def _c1_rows(res: dict[str, Any], names: list[str]) -> list[Row]:
    c1 = res.get("latency-c1")
    if not c1 or "direct" not in c1:
        return []
    rows: list[Row] = []
    for p, label in (("p50", "p50"), ("p99", "p99"), ("p999", "p99.9")):
        def med(n: str, p: str = p) -> float:
            return statistics.median(r[f"{p}_us"] for r in c1[n])
        added = {n: med(n) - med("direct") for n in names if n in c1}
        others = "; ".join(f"{n} {added[n] / 1000:+.3f} ms" for n in names
                           if n in added and n not in ("sluice", "direct"))
        rows.append((f"concurrency 1, {c1['n']:,} sequential plain requests, {label} (median of "
                     f"{c1['rounds']} rounds)", {n: _ms(med(n)) for n in names if n in c1},
                     (f"+{added['sluice'] / 1000:.3f} ms" if "sluice" in added else "—")
                     + (f" ({others})" if others else ""), "(informational)", ""))
    return rows


def _door_rows(res: dict[str, Any], names: list[str]) -> list[Row]:
    fd = res.get("front-doors")
    if not fd:
        return []
    rows: list[Row] = []
    for door, row in fd.items():
        if door == "shape":
            continue
        d = row.get("direct", {})

        def added(n: str, key: str, d: dict[str, Any] = d, row: dict[str, Any] = row) -> str:
            v, base = row.get(n, {}).get(key), d.get(key)
            return "—" if v is None or base is None else f"{(v - base) / 1000:+.3f} ms"

        cpu = {n: f"{row[n]['cpu_med_us']:.0f} µs" for n in names if row.get(n, {}).get("cpu_med_us")}
        intact = all(r["intact"] == r["n"] for r in row.values())
        rows.append((f"{door}: gateway CPU per request", cpu, "", "(informational)",
                     "" if intact else "not all intact"))
        rps = {n: f"{row[n]['rps_med']:,.0f}/s" for n in names if row.get(n, {}).get("rps_med")}
        s, ng = row.get("sluice", {}).get("rps_med"), row.get("nginx", {}).get("rps_med")
        rows.append((f"{door}: requests/s, 20 in flight, Python client", rps,
                     f"{s / ng:.2f}x nginx" if s and ng else "", "(informational)", ""))
        ttfc = {n: f"p50 {added(n, 'ttfc_p50_med_us')}, p99 {added(n, 'ttfc_p99_med_us')}"
                for n in names if n in row and n != "direct"}
        rows.append((f"{door}: added time to first content{' (whole reply)' if 'plain' in door else ''}",
                     ttfc, ttfc.get("sluice", ""), "(informational)", ""))
    return rows


def markdown(res: dict[str, Any], names: list[str]) -> str:
    rows = (_sat_rows(res, names) + _lat_rows(res, names) + _c1_rows(res, names) + _stream_rows(res, names)
            + _door_rows(res, names) + _held_rows(res, names) + _pair_rows(res) + _responses_rows(res))
    meta = res.get("meta", {})
    lines = ["# Sluice benchmark", "",
             f"Run {meta.get('started', '')}, {meta.get('cpus', '?')} CPUs, mode "
             f"{'quick' if meta.get('quick') else 'full'}, load generator for saturation: "
             f"{meta.get('saturation_tool', '?')}. Sluice: {meta.get('sluice', '?')}.", ""]
    ceil = (res.get("plain-saturation") or {}).get("upstream_ceiling")
    if ceil:
        lines += [f"Fake upstream ceiling: {ceil['direct_rps']:,.0f} req/s measured direct (client and "
                  f"upstream share the cores); upstream CPU {ceil['upstream_cpu_ms'] * 1000:.1f} µs/request, "
                  f"i.e. ~{(ceil['one_core_rps'] or 0):,.0f} req/s per core.", ""]
    for note in meta.get("notes", []):
        lines.append(f"- {note}")
    if meta.get("notes"):
        lines.append("")
    extra = [k for k in {k for r in rows for k in r[1]} if k not in names]
    cols = names + sorted(extra)
    lines.append("| figure | " + " | ".join(cols) + " | Sluice vs direct | target | verdict |")
    lines.append("|---|" + "---|" * len(cols) + "---|---|---|")
    for fig, vals, ratio, target, verdict in rows:
        lines.append(f"| {fig} | " + " | ".join(vals.get(c, "") for c in cols)
                     + f" | {ratio} | {target} | {verdict} |")
    lines += ["", "Added = Sluice minus direct, measured in the same run, alternating targets. "
              "See bench/README.md for definitions.", ""]
    return "\n".join(lines)


def plot(res: dict[str, Any], path: Path) -> bool:
    """p50 and p99 latency against offered load, one colour per target; False if matplotlib is missing."""
    lat = res.get("plain-latency")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    if not lat:
        return False
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (name, by_rate) in enumerate(lat.items()):
        rates = sorted(by_rate, key=float)
        xs = [float(r) for r in rates]
        color = f"C{i}"
        ax.plot(xs, [by_rate[r]["p50_us"] / 1000 for r in rates], "o-", color=color, label=f"{name} p50")
        ax.plot(xs, [by_rate[r]["p99_us"] / 1000 for r in rates], "s--", color=color, label=f"{name} p99")
    ax.set_xlabel("offered load (requests/s, open loop)")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.set_title("Plain chat completion latency vs offered load")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
