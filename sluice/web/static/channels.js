// The console's channel tools: the test button (one probe of a provider, or of one key of its pool)
// and the key pools with their states, counters and a disable/enable switch. Talks to /admin/channels.

import { $, clear, el, fmtNum, fmtTime, say } from "./common.js";

/** Run one probe and say what came back: ok or not, status, latency, the upstream's (masked) answer. */
export async function testChannel(call, provider, keyId) {
  const status = $("#providers-status");
  const what = keyId ? `${provider} key ${keyId}` : provider;
  say(status, `Testing ${what}…`);
  try {
    const r = await call("POST", `/admin/channels/${encodeURIComponent(provider)}/test`, keyId ? { key_id: keyId } : {});
    const head = `${what}: ${r.ok ? "ok" : "failed"} (HTTP ${r.status}, ${fmtNum(Math.round(r.latency_ms))} ms, model ${r.model})`;
    say(status, `${head} — ${r.answer.slice(0, 300)}`, r.ok ? "" : "error");
    if (keyId) await loadPools(call);
  } catch (err) {
    say(status, `Could not test ${what}: ${err.message}`, "error");
  }
}

function stateBadge(k) {
  const cls = k.state === "active" ? "ok" : k.state === "disabled_manual" ? "off" : "bad";
  return el("span", { class: `badge ${cls}`, title: k.reason || "" }, k.state.replace("_", " "));
}

async function toggle(call, provider, k) {
  const action = k.state === "disabled_manual" || k.state === "disabled_auto" ? "enable" : "disable";
  try {
    await call("POST", `/admin/channels/${encodeURIComponent(provider)}/keys/${encodeURIComponent(k.id)}/${action}`);
    await loadPools(call);
  } catch (err) {
    say($("#providers-status"), `Could not ${action} ${k.key}: ${err.message}`, "error");
  }
}

/** The key pools table: one row per upstream key (masked), with its state and buttons. */
export async function loadPools(call) {
  const doc = await call("GET", "/admin/channels");
  const rows = doc.data.flatMap((p) => p.keys.map((k, i) => el("tr", {},
    el("td", {}, i === 0 ? p.provider : ""), el("td", {}, el("code", {}, k.key)), el("td", {}, stateBadge(k)),
    el("td", {}, k.reason || "—"), el("td", { class: "num" }, fmtNum(k.requests)), el("td", { class: "num" }, fmtNum(k.errors)),
    el("td", {}, k.last_success_at ? fmtTime(k.last_success_at) : "—"),
    el("td", {}, el("button", { type: "button", class: "small", "aria-label": `Test key ${k.key}`,
      onclick: () => testChannel(call, p.provider, k.id) }, "Test"), " ",
    el("button", { type: "button", class: "small", onclick: () => toggle(call, p.provider, k) },
      k.state.startsWith("disabled") ? "Enable" : "Disable")))));
  clear($("#pools-table")).append(
    el("thead", {}, el("tr", {}, ["Provider", "Key", "State", "Reason", "Requests", "Errors", "Last success", ""]
      .map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: 8 }, "No provider has a key pool (api_keys)."))));
}
