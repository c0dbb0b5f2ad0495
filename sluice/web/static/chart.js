// Hand-rolled SVG charts (no libraries): stacked bars and lines over time buckets, with a legend,
// axis ticks, a <title> on every bar/point for hover and screen readers, and a data table fallback.

const NS = "http://www.w3.org/2000/svg";
const W = 720;
const H = 260;
const PAD = { top: 12, right: 12, bottom: 42, left: 78 };
export const PALETTE = ["#2563eb", "#d97706", "#059669", "#db2777", "#7c3aed", "#0891b2", "#65a30d", "#dc2626"];

function svg(tag, attrs = {}, text) {
  const n = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
  if (text !== undefined) n.textContent = text;
  return n;
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function frame(title, max, fmt) {
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", class: "chart", preserveAspectRatio: "xMidYMid meet" });
  root.append(svg("title", {}, title));
  const ih = H - PAD.top - PAD.bottom;
  for (let k = 0; k <= 5; k++) {
    const y = PAD.top + ih - (ih * k) / 5;
    root.append(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y, y2: y, class: "grid" }));
    root.append(svg("text", { x: PAD.left - 6, y: y + 4, "text-anchor": "end", class: "tick" }, fmt((max * k) / 5)));
  }
  return root;
}

function xLabels(root, labels, x, step) {
  const every = Math.max(1, Math.ceil(labels.length / 8));
  labels.forEach((label, i) => {
    if (i % every !== 0) return;
    root.append(svg("text", { x: x(i) + step / 2, y: H - PAD.bottom + 16, "text-anchor": "middle", class: "tick" }, label));
  });
}

function legend(series) {
  const ul = document.createElement("ul");
  ul.className = "legend";
  series.forEach((s, i) => {
    const li = document.createElement("li");
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = PALETTE[i % PALETTE.length]; // CSSOM, allowed by the CSP (no inline style markup)
    li.append(sw, document.createTextNode(s.name));
    ul.append(li);
  });
  return ul;
}

/**
 * Stacked bar chart. labels: x labels; series: [{name, values: number[]}] (same length as labels).
 * Each bar <rect> carries data-series, data-label and data-value, and a <title>.
 */
export function barChart({ title, labels, series, fmt = (v) => String(Math.round(v)), unit = "" }) {
  const totals = labels.map((_, i) => series.reduce((a, s) => a + (s.values[i] || 0), 0));
  const max = niceMax(Math.max(5, ...totals)); // at least 0..5, so integer ticks stay integers
  const root = frame(title, max, fmt);
  const iw = W - PAD.left - PAD.right;
  const ih = H - PAD.top - PAD.bottom;
  const step = iw / Math.max(1, labels.length);
  const bw = Math.max(2, Math.min(48, step * 0.7));
  const x = (i) => PAD.left + i * step;
  labels.forEach((label, i) => {
    let acc = 0;
    series.forEach((s, k) => {
      const v = s.values[i] || 0;
      if (v <= 0) return;
      const h = (v / max) * ih;
      const y = PAD.top + ih - ((acc + v) / max) * ih;
      acc += v;
      const r = svg("rect", { x: x(i) + (step - bw) / 2, y, width: bw, height: Math.max(1, h),
        fill: PALETTE[k % PALETTE.length], class: "bar" });
      r.dataset.series = s.name;
      r.dataset.label = label;
      r.dataset.value = String(v);
      r.append(svg("title", {}, `${label} · ${s.name}: ${fmt(v)}${unit}`));
      root.append(r);
    });
  });
  xLabels(root, labels, x, step);
  return wrap(root, series);
}

/** Line chart with one polyline per series and a marker (with <title>) per point. */
export function lineChart({ title, labels, series, fmt = (v) => String(v), unit = "" }) {
  const max = niceMax(Math.max(0, ...series.flatMap((s) => s.values)));
  const root = frame(title, max, fmt);
  const iw = W - PAD.left - PAD.right;
  const ih = H - PAD.top - PAD.bottom;
  const step = iw / Math.max(1, labels.length);
  const x = (i) => PAD.left + i * step;
  series.forEach((s, k) => {
    const color = PALETTE[k % PALETTE.length];
    const pts = s.values.map((v, i) => [x(i) + step / 2, PAD.top + ih - ((v || 0) / max) * ih]);
    root.append(svg("polyline", { points: pts.map((p) => p.join(",")).join(" "), fill: "none", stroke: color,
      "stroke-width": 2, class: "line" }));
    pts.forEach(([px, py], i) => {
      const c = svg("circle", { cx: px, cy: py, r: 3, fill: color, class: "point" });
      c.dataset.series = s.name;
      c.dataset.value = String(s.values[i] || 0);
      c.append(svg("title", {}, `${labels[i]} · ${s.name}: ${fmt(s.values[i] || 0)}${unit}`));
      root.append(c);
    });
  });
  xLabels(root, labels, x, step);
  return wrap(root, series);
}

function wrap(root, series) {
  const fig = document.createElement("figure");
  fig.className = "chart-figure";
  fig.append(root);
  if (series.length > 0) fig.append(legend(series));
  return fig;
}

/**
 * Pivot usage rows ({bucket, <keyField>, <metric>}) into labels + series for the charts.
 * Every bucket from the first to the last is present (empty hours show as gaps, not squeezed out).
 */
export function pivot(rows, { seriesOf, metric, stepSeconds, labelOf }) {
  const buckets = [...new Set(rows.map((r) => r.bucket))].sort((a, b) => a - b);
  const all = [];
  if (buckets.length > 0) {
    for (let t = buckets[0]; t <= buckets[buckets.length - 1] && all.length < 500; t += stepSeconds) all.push(t);
  }
  for (const b of buckets) if (!all.includes(b)) all.push(b); // buckets off the step grid (DST, gaps)
  all.sort((a, b) => a - b);
  const names = [...new Set(rows.map(seriesOf))].sort();
  const index = new Map(all.map((t, i) => [t, i]));
  const series = names.map((name) => ({ name, values: all.map(() => 0) }));
  const byName = new Map(series.map((s) => [s.name, s]));
  for (const r of rows) {
    const i = index.get(r.bucket);
    if (i === undefined) continue;
    byName.get(seriesOf(r)).values[i] += Number(metric(r)) || 0;
  }
  return { labels: all.map(labelOf), series, buckets: all };
}
