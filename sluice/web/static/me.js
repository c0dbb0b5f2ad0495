// The key owner page: with nothing but a user key, its balance, limits, usage over time and recent
// requests, from /v1/dashboard/*.

import { $, api, clear, el, fmtMoney, fmtNum, fmtTime, keyForm, query, say, stored } from "./common.js";
import { loadAccount } from "./account.js";
import { detailDialog, drawUsage, requestDetail, requestsTable } from "./views.js";

const keyStore = stored("sluice.userKey"); // the same slot as the playground
let key = "";
const call = (path) => api(key, "GET", path);
const dialog = detailDialog($("#request-dialog"), $("#request-title"), $("#request-detail"));

keyForm($("#key-form"), keyStore, async (k) => {
  key = k;
  $("#app").hidden = true;
  if (!k) { say($("#key-status"), ""); return; }
  try {
    await loadAll();
    $("#app").hidden = false;
    say($("#key-status"), "", "ok");
  } catch (err) {
    say($("#key-status"), err.status === 401 ? "That key was not accepted." : `Error: ${err.message}`, "error");
  }
});
$("#me-range").addEventListener("change", () => loadUsage().catch((err) => say($("#key-status"), err.message, "error")));

async function loadAll() {
  const me = await call("/v1/dashboard/me");
  renderFacts(me);
  say($("#key-status"), `Signed in as ${me.name}.`, "ok");
  await Promise.all([loadUsage(), loadRequests(), loadAccount(key, me, () => loadAll())]);
}

const limit = (v, fmt = fmtNum) => (v === null || v === undefined ? "no limit" : fmt(v));

function renderFacts(me) {
  const state = me.revoked ? "revoked" : !me.enabled ? "disabled" : "active";
  const facts = [
    ["Name", me.name], ["Key id", el("code", {}, me.id)], ["Status", state],
    ["Balance", me.account ? `${fmtMoney(me.account.balance)} (account)` : me.balance === null ? "no budget set" : fmtMoney(me.balance)],
    ["Budget", limit(me.budget, fmtMoney)], ["Spent", fmtMoney(me.spent)],
    ["Budget period", me.period ? `resets every ${me.period}` : "does not reset"],
    ["Tokens used", `${fmtNum(me.tokens_used)} of ${limit(me.token_quota)}`],
    ["Requests per minute", limit(me.rpm)], ["Tokens per minute", limit(me.tpm)],
    ["Concurrent requests", limit(me.max_concurrency)],
    ["Expires", me.expires_at ? fmtTime(me.expires_at) : "never"],
    ["Models", (me.models_available || []).join(", ") || "none"],
  ];
  clear($("#facts")).append(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

async function loadUsage() {
  const [range, group] = $("#me-range").value.split("|");
  const since = Math.floor(Date.now() / 1000) - Number(range);
  const doc = await call(`/v1/dashboard/usage${query({ group, since })}`);
  drawUsage({ requests: $("#me-chart-requests"), tokens: $("#me-chart-tokens"), cost: $("#me-chart-cost") }, doc.data,
    { group, seriesOf: (r) => r.model });
}

async function loadRequests() {
  const doc = await call("/v1/dashboard/requests?limit=50");
  requestsTable($("#me-requests"), doc.data, { showKey: false, onOpen: async (id) => {
    const rec = await call(`/v1/dashboard/requests/${encodeURIComponent(id)}`);
    dialog.open(`Request ${id}`, requestDetail(rec));
  } });
}
