// The admin console: keys (create, edit limits, top up, enable/disable, revoke), usage charts, the
// request log with one request's detail, providers/models with health and test buttons. Talks to /admin/*.

import { $, api, clear, clip, el, fmtCompact, fmtMoney, fmtNum, fmtTime, keyForm, query, say, stored, tabs } from "./common.js";
import { accountsPanel } from "./console_accounts.js";
import { loadPools, testChannel } from "./channels.js";
import { detailDialog, drawUsage, requestDetail, requestsTable, usageTotals } from "./views.js";

const tokenStore = stored("sluice.adminToken");
const state = { token: "", keys: [], models: [], editing: null };
const call = (method, path, body) => api(state.token, method, path, body);
const accounts = accountsPanel(call);
const keyName = (id) => (state.keys.find((k) => k.id === id) || {}).name || id;

const FIELDS = [
  { name: "name", label: "Name", required: true },
  { name: "owner", label: "Owner" },
  { name: "models", label: "Allowed models", hint: "comma-separated; empty = all" },
  { name: "budget", label: "Budget ($)", inputmode: "decimal", pattern: "[0-9]+(\\.[0-9]+)?" },
  { name: "period", label: "Budget period", options: [["", "No reset"], ["day", "Daily"], ["week", "Weekly"], ["month", "Monthly"]] },
  { name: "token_quota", label: "Token quota", type: "number" },
  { name: "rpm", label: "Requests / min", type: "number" },
  { name: "tpm", label: "Tokens / min", type: "number" },
  { name: "max_concurrency", label: "Max concurrent", type: "number" },
  { name: "expires_at", label: "Expires", type: "datetime-local" },
  { name: "account_id", label: "Account id", hint: "spends from this account (Accounts tab); empty = none" },
];

function buildFields(container, prefix) {
  for (const f of FIELDS) {
    const id = `${prefix}-${f.name}`;
    const control = f.options
      ? el("select", { id, name: f.name }, f.options.map(([v, t]) => el("option", { value: v }, t)))
      : el("input", { id, name: f.name, type: f.type || "text", required: f.required, min: f.type === "number" ? 0 : null,
        inputmode: f.inputmode, pattern: f.pattern, "aria-describedby": f.hint ? `${id}-hint` : null });
    container.append(el("div", { class: "field" }, el("label", { for: id }, f.label), control,
      f.hint ? el("p", { id: `${id}-hint`, class: "hint" }, f.hint) : null));
  }
}

const toLocal = (unix) => {
  if (!unix) return "";
  const d = new Date(unix * 1000);
  return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
};
const fromLocal = (s) => (s ? new Date(s).getTime() / 1000 : null);

/** Form -> key fields. Empty means null (no limit); with `omitEmpty` (create) empty fields are left out. */
function readFields(form, omitEmpty) {
  const out = {};
  for (const f of FIELDS) {
    const raw = form.elements[f.name].value.trim();
    let v;
    if (raw === "") v = null;
    else if (f.type === "number") v = parseInt(raw, 10);
    else if (f.name === "models") v = raw.split(",").map((s) => s.trim()).filter(Boolean);
    else if (f.name === "expires_at") v = fromLocal(raw);
    else v = raw;
    if (v === null && (omitEmpty || f.name === "name")) continue;
    out[f.name] = v;
  }
  return out;
}

function fillFields(form, key) {
  for (const f of FIELDS) {
    const v = key[f.name];
    form.elements[f.name].value = v === null || v === undefined ? ""
      : f.name === "models" ? v.join(", ") : f.name === "expires_at" ? toLocal(v) : String(v);
  }
}

// ---- sign in and tabs ---------------------------------------------------------------------------
const showTab = tabs($("#tabs"), (panel) => {
  if (panel === "panel-usage") loadUsage();
  else if (panel === "panel-requests") loadRequests();
  else if (panel === "panel-providers") loadProviders();
  else if (panel === "panel-accounts") accounts.load();
  else loadKeys();
});

keyForm($("#token-form"), tokenStore, async (token) => {
  state.token = token;
  const status = $("#token-status");
  $("#app").hidden = true;
  if (!token) { say(status, ""); return; }
  try {
    await loadKeys();
    await loadModels();
    $("#app").hidden = false;
    say(status, "Signed in.", "ok");
    showTab("panel-keys");
  } catch (err) {
    say(status, err.status === 401 ? "That admin token was not accepted." : `Error: ${err.message}`, "error");
  }
});

async function loadModels() {
  const doc = await call("GET", "/admin/providers");
  state.models = doc.models.map((m) => m.name);
  for (const sel of [$("#usage-model"), $("#req-model")]) {
    const current = sel.value;
    clear(sel).append(el("option", { value: "" }, "All models"), ...state.models.map((m) => el("option", { value: m }, m)));
    sel.value = current;
  }
}

function fillKeySelects() {
  for (const sel of [$("#usage-key"), $("#req-key")]) {
    const current = sel.value;
    clear(sel).append(el("option", { value: "" }, "All keys"),
      ...state.keys.map((k) => el("option", { value: k.id }, `${k.name} (${k.id})`)));
    sel.value = current;
  }
}

// ---- keys ---------------------------------------------------------------------------------------
buildFields($("#create-fields"), "ck");
buildFields($("#edit-fields"), "ek");

async function loadKeys() {
  const doc = await call("GET", "/admin/keys");
  state.keys = doc.data;
  renderKeys();
  fillKeySelects();
}

function keyStatus(k) {
  if (k.revoked) return el("span", { class: "badge bad" }, "revoked");
  if (!k.enabled) return el("span", { class: "badge off" }, "disabled");
  if (k.expires_at && k.expires_at < Date.now() / 1000) return el("span", { class: "badge off" }, "expired");
  return el("span", { class: "badge ok" }, "active");
}

function renderKeys() {
  // one or two text lines a row at 1,280 px: long values are clipped (whole on hover), stacked in pairs
  const cols = ["Name", "ID", "Status", "Models", "Spent / budget", "Tokens / quota", "RPM · TPM · conc.", "Created", "Actions"];
  clear($("#keys-table")).append(
    el("thead", {}, el("tr", {}, cols.map((c) => el("th", { scope: "col" }, c)))),
    el("tbody", {}, state.keys.map((k) => el("tr", { "data-key-id": k.id },
      el("td", {}, clip(k.name, 22), k.owner ? el("div", { class: "hint" }, clip(k.owner, 26)) : null),
      el("td", {}, el("code", { class: "id" }, k.id)),
      el("td", {}, keyStatus(k)),
      el("td", {}, k.models ? clip(k.models.join(", "), 18) : "all"),
      el("td", { class: "num", title: k.balance === null ? "" : `${fmtMoney(k.balance)} left` }, fmtMoney(k.spent),
        el("div", { class: "hint" }, `of ${k.budget === null ? "∞" : fmtMoney(k.budget)}${k.period ? ` per ${k.period}` : ""}`)),
      el("td", { class: "num" }, `${fmtCompact(k.tokens_used)} / ${fmtCompact(k.token_quota)}`),
      el("td", { class: "num" }, [k.rpm, k.tpm, k.max_concurrency].map(fmtCompact).join(" · ")),
      el("td", { class: "nowrap", title: fmtTime(k.created_at) }, fmtDate(k.created_at)),
      el("td", {}, el("div", { class: "actions" }, keyActions(k)))))));
  say($("#keys-status"), `${state.keys.length} key${state.keys.length === 1 ? "" : "s"}.`);
}

function fmtDate(unix) {
  return unix ? new Date(unix * 1000).toLocaleDateString() : "—";
}

function keyActions(k) {
  if (k.revoked) return [];
  const btn = (label, action, extra = {}) => el("button", { type: "button", class: `small ${extra.cls || ""}`,
    "aria-label": `${label} ${k.name}`, onclick: action }, label);
  return [
    btn("Edit", () => openEdit(k)),
    btn("Top up", () => openTopup(k)),
    btn(k.enabled ? "Disable" : "Enable", () => keyChange(k, () => call("PATCH", `/admin/keys/${k.id}`, { enabled: !k.enabled }),
      `${k.name} ${k.enabled ? "disabled" : "enabled"}.`)),
    btn("Revoke", () => {
      if (confirm(`Revoke key "${k.name}" (${k.id})? Requests with it will fail from now on.`)) {
        keyChange(k, () => call("DELETE", `/admin/keys/${k.id}`), `${k.name} revoked.`);
      }
    }, { cls: "danger" }),
  ];
}

async function keyChange(k, action, message) {
  try {
    await action();
    await loadKeys();
    say($("#keys-status"), message, "ok");
  } catch (err) {
    say($("#keys-status"), `Could not change ${k.name}: ${err.message}`, "error");
  }
}

$("#create-key").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const form = ev.currentTarget;
  try {
    const doc = await call("POST", "/admin/keys", readFields(form, true));
    form.reset();
    $("#new-key-secret").value = doc.key;
    $("#secret-box").hidden = false;
    $("#new-key-secret").focus();
    $("#new-key-secret").select();
    say($("#create-status"), `Created ${doc.name} (${doc.id}).`, "ok");
    await loadKeys();
  } catch (err) {
    say($("#create-status"), `Could not create the key: ${err.message}`, "error");
  }
});
$("#copy-secret").addEventListener("click", async () => {
  try {
    await navigator.clipboard.writeText($("#new-key-secret").value);
    say($("#create-status"), "Copied to the clipboard.", "ok");
  } catch {
    $("#new-key-secret").select();
    say($("#create-status"), "Press Ctrl+C (⌘C) to copy the selected key.");
  }
});
$("#dismiss-secret").addEventListener("click", () => {
  $("#new-key-secret").value = "";
  $("#secret-box").hidden = true;
  $("#create-fields input").focus();
});

for (const d of document.querySelectorAll("dialog")) {
  for (const b of d.querySelectorAll("form [data-close]")) b.addEventListener("click", () => d.close());
}

function openEdit(k) {
  state.editing = k;
  $("#edit-title").textContent = `Edit ${k.name}`;
  fillFields($("#edit-form"), k);
  say($("#edit-status"), "");
  $("#edit-dialog").showModal();
}
$("#edit-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const k = state.editing;
  try {
    await call("PATCH", `/admin/keys/${k.id}`, readFields(ev.currentTarget, false));
    $("#edit-dialog").close();
    await loadKeys();
    say($("#keys-status"), `${k.name} updated.`, "ok");
  } catch (err) {
    say($("#edit-status"), err.message, "error");
  }
});

function openTopup(k) {
  state.editing = k;
  $("#topup-title").textContent = `Top up ${k.name}`;
  $("#topup-amount").value = "";
  say($("#topup-status"), "");
  $("#topup-dialog").showModal();
}
$("#topup-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const k = state.editing;
  try {
    const rec = await call("POST", `/admin/keys/${k.id}/topup`, { amount: $("#topup-amount").value.trim() });
    $("#topup-dialog").close();
    await loadKeys();
    say($("#keys-status"), `${k.name}: budget now ${fmtMoney(rec.budget)}.`, "ok");
  } catch (err) {
    say($("#topup-status"), err.message, "error");
  }
});

// ---- usage --------------------------------------------------------------------------------------
$("#usage-form").addEventListener("submit", (ev) => { ev.preventDefault(); loadUsage(); });

async function loadUsage() {
  const group = $("#usage-group").value;
  const split = $("#usage-split").value;
  const since = Math.floor(Date.now() / 1000) - Number($("#usage-range").value);
  try {
    const doc = await call("GET", `/admin/usage${query({ group, since, key_id: $("#usage-key").value, model: $("#usage-model").value })}`);
    const rows = doc.data;
    const seriesOf = split === "model" ? (r) => r.model : (r) => r.key_name || r.key_id || "—";
    drawUsage({ requests: $("#chart-requests"), tokens: $("#chart-tokens"), cost: $("#chart-cost") }, rows, { group, seriesOf });
    usageTotals($("#usage-table"), rows);
    const total = rows.reduce((a, r) => a + r.requests, 0);
    say($("#usage-status"), `${fmtNum(total)} request${total === 1 ? "" : "s"} in range.`);
  } catch (err) {
    say($("#usage-status"), `Could not load usage: ${err.message}`, "error");
  }
}

// ---- requests -----------------------------------------------------------------------------------
const requestDialog = detailDialog($("#request-dialog"), $("#request-title"), $("#request-detail"));
$("#requests-form").addEventListener("submit", (ev) => { ev.preventDefault(); loadRequests(); });

async function loadRequests() {
  const t = (id) => { const v = $(id).value; return v ? Math.floor(new Date(v).getTime() / 1000) : ""; };
  const q = query({ key_id: $("#req-key").value, model: $("#req-model").value, status: $("#req-status").value,
    since: t("#req-since"), until: t("#req-until"), limit: $("#req-limit").value });
  try {
    const doc = await call("GET", `/admin/requests${q}`);
    requestsTable($("#requests-table"), doc.data, { onOpen: openRequest, keyName });
    say($("#requests-status"), `${doc.data.length} request${doc.data.length === 1 ? "" : "s"}.`);
  } catch (err) {
    say($("#requests-status"), `Could not load requests: ${err.message}`, "error");
  }
}

async function openRequest(id) {
  try {
    const rec = await call("GET", `/admin/requests/${encodeURIComponent(id)}`);
    requestDialog.open(`Request ${id}`, requestDetail(rec));
  } catch (err) {
    say($("#requests-status"), `Could not load ${id}: ${err.message}`, "error");
  }
}

// ---- providers ----------------------------------------------------------------------------------
async function loadProviders() {
  try {
    const doc = await call("GET", "/admin/providers");
    clear($("#providers-table")).append(
      el("thead", {}, el("tr", {}, ["Name", "Kind", "Base URL", ""].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, doc.providers.map((p) => el("tr", {}, el("td", {}, p.name), el("td", {}, p.kind),
        el("td", {}, p.base_url || "—"), el("td", {}, el("button", { type: "button", class: "small",
          "aria-label": `Test ${p.name}`, onclick: () => testChannel(call, p.name) }, "Test"))))));
    clear($("#models-table")).append(
      el("thead", {}, el("tr", {}, ["Model", "Target", "Weight", "Priority", "Health"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, doc.models.flatMap((m) => m.targets.map((t, i) => el("tr", {},
        el("td", {}, i === 0 ? m.name : ""), el("td", {}, `${t.provider} / ${t.model}`),
        el("td", { class: "num" }, String(t.weight)), el("td", { class: "num" }, String(t.priority)),
        el("td", {}, el("span", { class: `badge ${t.healthy ? "ok" : "bad"}` }, t.healthy ? "healthy" : "cooling down")))))));
    say($("#providers-status"), `${doc.providers.length} providers, ${doc.models.length} models.`);
    await loadPools(call);
  } catch (err) {
    say($("#providers-status"), `Could not load providers: ${err.message}`, "error");
  }
}
