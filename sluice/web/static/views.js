// Views shared by the admin console and the key owner page: usage charts from /usage rows, the request
// log table, and one request's detail.

import { clear, clip, el, fmtBucket, fmtMoney, fmtMs, fmtNum, fmtTime, orDash } from "./common.js";
import { barChart, lineChart, pivot } from "./chart.js";

const STEP = { hour: 3600, day: 86400 };

/** Draw requests (stacked bars), tokens (stacked bars) and cost (lines) charts into three containers. */
export function drawUsage(targets, rows, { group, seriesOf }) {
  const common = { seriesOf, stepSeconds: STEP[group] || 3600, labelOf: (t) => fmtBucket(t, group) };
  for (const node of Object.values(targets)) clear(node);
  if (rows.length === 0) {
    for (const node of Object.values(targets)) node.append(el("p", { class: "empty" }, "No requests in this range."));
    return;
  }
  const req = pivot(rows, { ...common, metric: (r) => r.requests });
  targets.requests.append(barChart({ title: "Requests over time", ...req, unit: " requests" }));
  const tok = pivot(rows, { ...common, metric: (r) => (r.prompt_tokens || 0) + (r.completion_tokens || 0) });
  targets.tokens.append(barChart({ title: "Tokens over time", ...tok, fmt: compact, unit: " tokens" }));
  if (targets.cost) {
    const cost = pivot(rows, { ...common, metric: (r) => Number(r.cost || 0) });
    targets.cost.append(lineChart({ title: "Cost over time", ...cost, fmt: (v) => `$${trimMoney(v)}` }));
  }
}

function compact(v) {
  if (v >= 1e6) return `${(v / 1e6).toFixed(1)}M`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(1)}k`;
  return String(Math.round(v));
}

function trimMoney(v) {
  return v >= 1 ? v.toFixed(2) : v === 0 ? "0" : String(Number(v.toPrecision(2)));
}

/** Totals per key and model over the rows. */
export function usageTotals(table, rows) {
  const sums = new Map();
  for (const r of rows) {
    const id = `${r.key_id}\u0000${r.model}`;
    const s = sums.get(id) || { key: r.key_name || r.key_id || "—", model: r.model, requests: 0, errors: 0,
      prompt: 0, completion: 0, cost: 0 };
    s.requests += r.requests; s.errors += r.errors; s.prompt += r.prompt_tokens; s.completion += r.completion_tokens;
    s.cost += Number(r.cost || 0);
    sums.set(id, s);
  }
  clear(table).append(
    el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Key"), el("th", { scope: "col" }, "Model"),
      ...["Requests", "Errors", "Prompt tokens", "Completion tokens", "Cost"].map((h) => el("th", { scope: "col", class: "num" }, h)))),
    el("tbody", {}, [...sums.values()].map((s) => el("tr", {}, el("td", {}, s.key), el("td", {}, s.model),
      el("td", { class: "num" }, fmtNum(s.requests)), el("td", { class: "num" }, fmtNum(s.errors)),
      el("td", { class: "num" }, fmtNum(s.prompt)), el("td", { class: "num" }, fmtNum(s.completion)),
      el("td", { class: "num" }, `$${trimMoney(s.cost)}`)))));
}

function statusBadge(status) {
  const cls = status >= 200 && status < 300 ? "ok" : status === 499 ? "off" : "bad";
  return el("span", { class: `badge ${cls}` }, String(status));
}

/** The request log; onOpen(request_id) shows one request. keyName maps key ids to names. */
export function requestsTable(table, rows, { onOpen, keyName = (id) => id, showKey = true }) {
  const head = ["Time", "Request", ...(showKey ? ["Key"] : []), "Model", "Status"];
  const nums = ["Tokens (in/out)", "Cost", "TTFT", "Duration"];
  clear(table).append(
    el("thead", {}, el("tr", {}, head.map((h) => el("th", { scope: "col" }, h)),
      nums.map((h) => el("th", { scope: "col", class: "num" }, h)))),
    el("tbody", {}, rows.length === 0
      ? el("tr", {}, el("td", { colspan: head.length + nums.length, class: "empty" }, "No requests match."))
      : rows.map((r) => el("tr", {},
        el("td", {}, fmtTime(r.created_at)),
        el("td", {}, el("button", { type: "button", class: "small link", "data-request": r.request_id,
          title: r.request_id, "aria-label": `Details of request ${r.request_id}`, onclick: () => onOpen(r.request_id) },
        shortId(r.request_id))),
        showKey ? el("td", {}, clip(orDash(keyName(r.key_id)), 24)) : null,
        el("td", {}, clip(r.model, 28)),
        el("td", {}, statusBadge(r.status), r.disconnected ? " (disconnected)" : ""),
        el("td", { class: "num" }, `${fmtNum(r.prompt_tokens)} / ${fmtNum(r.completion_tokens)}`),
        el("td", { class: "num" }, fmtMoney(r.cost)),
        el("td", { class: "num" }, fmtMs(r.ttft_ms)),
        el("td", { class: "num" }, fmtMs(r.duration_ms))))));
}

/** What tells request ids apart: ids share a per-process prefix and end in a counter, so show the end. */
function shortId(id) {
  return id.length > 16 ? `…${id.slice(-12)}` : id;
}

/** One ledger record as a definition list, attempts as a small table. */
export function requestDetail(rec) {
  const facts = [
    ["Request id", el("code", {}, rec.request_id)], ["Time", fmtTime(rec.created_at)], ["Key", orDash(rec.key_id)],
    ["Model", rec.model], ["Served by", `${orDash(rec.provider)} / ${orDash(rec.upstream_model)}`],
    ["Status", statusBadge(rec.status)], ["Error code", orDash(rec.error_code)], ["Stream", rec.stream ? "yes" : "no"],
    ["Client disconnected", rec.disconnected ? "yes" : "no"],
    ["Time to first token", fmtMs(rec.ttft_ms)], ["Duration", fmtMs(rec.duration_ms)],
    ["Prompt tokens", fmtNum(rec.prompt_tokens)], ["Completion tokens", fmtNum(rec.completion_tokens)],
    ["Cached tokens", fmtNum(rec.cached_tokens)], ["Usage source", orDash(rec.usage_source)], ["Cost", fmtMoney(rec.cost)],
  ];
  const dl = el("dl", { class: "facts" }, facts.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  const out = [dl];
  const attempts = Array.isArray(rec.attempts) ? rec.attempts : [];
  if (attempts.length > 0) {
    const cols = [...new Set(attempts.flatMap((a) => (a && typeof a === "object" ? Object.keys(a) : [])))];
    out.push(el("h3", {}, `Attempts (${attempts.length})`));
    out.push(el("div", { class: "table-wrap" }, el("table", {},
      el("thead", {}, el("tr", {}, cols.map((c) => el("th", { scope: "col" }, c)))),
      el("tbody", {}, attempts.map((a) => el("tr", {}, cols.map((c) => el("td", {}, fmtValue(a[c])))))))));
  }
  if (rec.extra && Object.keys(rec.extra).length > 0) {
    out.push(el("h3", {}, "Extra"), el("pre", { class: "json", tabindex: 0 }, JSON.stringify(rec.extra, null, 2)));
  }
  return out;
}

function fmtValue(v) {
  if (v === null || v === undefined) return "—";
  return typeof v === "object" ? JSON.stringify(v) : String(v);
}

/** A <dialog> with its [data-close] buttons wired; returns {open(title, nodes)}. */
export function detailDialog(dialog, titleNode, body) {
  for (const b of dialog.querySelectorAll("[data-close]")) b.addEventListener("click", () => dialog.close());
  return {
    open(title, nodes) {
      titleNode.textContent = title;
      clear(body).append(...nodes);
      if (!dialog.open) dialog.showModal();
    },
  };
}

export { STEP };
