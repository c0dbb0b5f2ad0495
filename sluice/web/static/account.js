// The key owner's account on /me: balance and group, redeeming a code, the balance history and the
// prices this key pays, from /v1/dashboard/{me,history,redeem,prices}.

import { $, api, clear, el, fmtMoney, fmtTime, say } from "./common.js";

let bound = null; // the current key's redeem handler (replaced when another key signs in)

export async function loadAccount(key, me, reload) {
  const acct = me.account;
  const facts = acct
    ? [["Account", `${acct.name} (${acct.id})`], ["Group", acct.group], ["Account balance", fmtMoney(acct.balance)],
      ["Status", acct.enabled ? "active" : "disabled"]]
    : [["Account", "none: this key spends its own budget"]];
  clear($("#account-facts")).append(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  const form = $("#redeem-form");
  if (bound) form.removeEventListener("submit", bound);
  bound = async (ev) => {
    ev.preventDefault();
    const input = $("#redeem-code");
    try {
      const got = await api(key, "POST", "/v1/dashboard/redeem", { code: input.value.trim() });
      input.value = "";
      await reload();
      say($("#redeem-status"), `Redeemed ${fmtMoney(got.redeemed)}.`, "ok");
    } catch (err) {
      say($("#redeem-status"), err.message, "error");
    }
  };
  form.addEventListener("submit", bound);
  const [history, prices] = await Promise.all([
    acct ? api(key, "GET", "/v1/dashboard/history?limit=100") : Promise.resolve({ data: [] }),
    api(key, "GET", "/v1/dashboard/prices"),
  ]);
  table($("#history-table"), ["When", "Change", "Amount", "Details"], history.data.map((e) => [
    e.kind === "charges" ? new Date(e.created_at * 1000).toISOString().slice(0, 10) : fmtTime(e.created_at),
    e.kind, fmtMoney(e.amount), [e.ref, e.note].filter(Boolean).join(" · ")]), "No balance changes yet.");
  table($("#prices-table"), ["Model", "Input", "Cached input", "Output", "Multiplier"], prices.data.map((p) => (p.priced
    ? [p.model, fmtMoney(p.input), fmtMoney(p.cached_input), fmtMoney(p.output), `×${p.multiplier}`]
    : [p.model, "not priced", "—", "—", "—"])), "No models.");
}

function table(node, head, rows, empty) {
  clear(node).append(
    el("thead", {}, el("tr", {}, head.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows.length ? rows.map((r) => el("tr", {}, r.map((c, i) => el("td", { class: i >= 1 && i <= 2 ? "num" : null }, c))))
      : el("tr", {}, el("td", { colspan: head.length }, empty))));
}
