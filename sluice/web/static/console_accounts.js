// The console's Accounts tab: accounts (open, top up, adjust, enable/disable, balance history), groups
// with price multipliers, and redemption code batches (shown once, as CSV). Talks to /admin/{accounts,groups,codes}.

import { $, clear, el, fmtMoney, fmtTime, say } from "./common.js";

function table(node, head, rows, empty) {
  clear(node).append(
    el("thead", {}, el("tr", {}, head.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: head.length }, empty))));
}

export function accountsPanel(call) {
  let crediting = null; // [account, "topup" | "adjust"]
  const status = (sel, text, kind) => say($(sel), text, kind);

  async function load() {
    try {
      const [accts, groups, codes] = await Promise.all([call("GET", "/admin/accounts"), call("GET", "/admin/groups"),
        call("GET", "/admin/codes?limit=200")]);
      renderAccounts(accts.data);
      table($("#groups-table"), ["Group", "Multiplier", "Per model"], groups.data.map((g) => el("tr", {},
        el("td", {}, g.name), el("td", { class: "num" }, `×${g.multiplier}`),
        el("td", {}, Object.entries(g.models).map(([m, v]) => `${m} ×${v}`).join(", ") || "—"))), "No groups: everyone pays list prices.");
      table($("#codes-table"), ["Code id", "Batch", "Amount", "Group", "Expires", "State"], codes.data.map((c) => el("tr", {},
        el("td", {}, el("code", {}, c.id)), el("td", {}, c.batch_id), el("td", { class: "num" }, fmtMoney(c.amount)),
        el("td", {}, c.group || "—"), el("td", {}, c.expires_at ? fmtTime(c.expires_at) : "never"),
        el("td", {}, c.redeemed_at ? el("span", { class: "badge off" }, `used by ${c.redeemed_by}`) : el("span", { class: "badge ok" }, "unused")))),
      "No codes yet.");
    } catch (err) {
      status("#accounts-status", `Could not load accounts: ${err.message}`, "error");
    }
  }

  function renderAccounts(list) {
    table($("#accounts-table"), ["Name", "ID", "Group", "Status", "Balance", "Spent", "Reserved", "Actions"], list.map((a) => {
      const btn = (label, action, cls = "") => el("button", { type: "button", class: `small ${cls}`, "aria-label": `${label} ${a.name}`, onclick: action }, label);
      return el("tr", { "data-account-id": a.id },
        el("td", {}, a.name), el("td", {}, el("code", { class: "id" }, a.id)), el("td", {}, a.group),
        el("td", {}, el("span", { class: `badge ${a.enabled ? "ok" : "off"}` }, a.enabled ? "active" : "disabled")),
        el("td", { class: "num" }, fmtMoney(a.balance)), el("td", { class: "num" }, fmtMoney(a.spent)),
        el("td", { class: "num" }, fmtMoney(a.reserved)),
        el("td", {}, el("div", { class: "actions" },
          btn("Top up", () => openCredit(a, "topup")), btn("Adjust", () => openCredit(a, "adjust")),
          btn("History", () => openHistory(a)),
          btn(a.enabled ? "Disable" : "Enable", () => change(a, { enabled: !a.enabled }), a.enabled ? "danger" : ""))));
    }), "No accounts yet.");
    status("#accounts-status", `${list.length} account${list.length === 1 ? "" : "s"}.`);
  }

  async function change(a, fields) {
    try {
      await call("PATCH", `/admin/accounts/${a.id}`, fields);
      await load();
      status("#accounts-status", `${a.name} ${fields.enabled ? "enabled" : "disabled"}.`, "ok");
    } catch (err) {
      status("#accounts-status", err.message, "error");
    }
  }

  function openCredit(a, kind) {
    crediting = [a, kind];
    $("#credit-title").textContent = `${kind === "topup" ? "Top up" : "Adjust"} ${a.name}`;
    $("#credit-amount").value = "";
    $("#credit-note").value = "";
    say($("#credit-status"), kind === "adjust" ? "A negative amount lowers the balance." : "");
    $("#credit-dialog").showModal();
  }

  async function openHistory(a) {
    const doc = await call("GET", `/admin/accounts/${a.id}/history?limit=200`);
    $("#history-title").textContent = `Balance history of ${a.name}`;
    table($("#history-table"), ["When", "Change", "Amount", "Details"], doc.data.map((e) => el("tr", {},
      el("td", {}, e.kind === "charges" ? new Date(e.created_at * 1000).toISOString().slice(0, 10) : fmtTime(e.created_at)),
      el("td", {}, e.kind), el("td", { class: "num" }, fmtMoney(e.amount)),
      el("td", {}, [e.ref, e.note].filter(Boolean).join(" · ")))), "No changes yet.");
    $("#history-dialog").showModal();
  }
  $("#history-dialog [data-close]").addEventListener("click", () => $("#history-dialog").close());

  $("#credit-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const [a, kind] = crediting;
    try {
      const note = $("#credit-note").value.trim();
      const rec = await call("POST", `/admin/accounts/${a.id}/${kind}`, { amount: $("#credit-amount").value.trim(), ...(note ? { note } : {}) });
      $("#credit-dialog").close();
      await load();
      status("#accounts-status", `${a.name}: balance now ${fmtMoney(rec.balance)}.`, "ok");
    } catch (err) {
      say($("#credit-status"), err.message, "error");
    }
  });

  $("#create-account").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const form = ev.currentTarget;
    const body = { name: form.elements.name.value.trim() };
    if (form.elements.group.value.trim()) body.group = form.elements.group.value.trim();
    if (form.elements.balance.value.trim()) body.balance = form.elements.balance.value.trim();
    try {
      const a = await call("POST", "/admin/accounts", body);
      form.reset();
      await load();
      status("#create-account-status", `Opened ${a.name} (${a.id}).`, "ok");
    } catch (err) {
      status("#create-account-status", `Could not open the account: ${err.message}`, "error");
    }
  });

  $("#group-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const models = {};
    for (const part of $("#g-models").value.split(",").map((s) => s.trim()).filter(Boolean)) {
      const i = part.lastIndexOf("=");
      if (i > 0) models[part.slice(0, i).trim()] = part.slice(i + 1).trim();
    }
    try {
      const g = await call("POST", "/admin/groups", { name: $("#g-name").value.trim(), multiplier: $("#g-mult").value.trim(), models });
      await load();
      status("#groups-status", `Saved ${g.name} (×${g.multiplier}).`, "ok");
    } catch (err) {
      status("#groups-status", err.message, "error");
    }
  });

  $("#codes-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const days = $("#c-days").value.trim();
    const body = { count: parseInt($("#c-count").value, 10), amount: $("#c-amount").value.trim() };
    if (days) body.expires_at = Math.floor(Date.now() / 1000) + Number(days) * 86400;
    if ($("#c-group").value.trim()) body.group = $("#c-group").value.trim();
    try {
      const batch = await call("POST", "/admin/codes", body);
      $("#codes-csv").value = batch.csv;
      const link = $("#codes-download");
      if (link.href.startsWith("blob:")) URL.revokeObjectURL(link.href);
      link.href = URL.createObjectURL(new Blob([batch.csv], { type: "text/csv" }));
      link.download = `codes-${batch.batch_id}.csv`;
      $("#codes-box").hidden = false;
      await load();
      status("#codes-status", `Created ${batch.count} codes of ${fmtMoney(batch.amount)} (batch ${batch.batch_id}).`, "ok");
    } catch (err) {
      status("#codes-status", `Could not create codes: ${err.message}`, "error");
    }
  });
  $("#codes-dismiss").addEventListener("click", () => {
    $("#codes-csv").value = "";
    const link = $("#codes-download");
    if (link.href.startsWith("blob:")) URL.revokeObjectURL(link.href);
    link.href = "#";
    $("#codes-box").hidden = true;
  });

  return { load };
}
