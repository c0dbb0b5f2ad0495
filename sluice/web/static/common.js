// Shared helpers for the pages: DOM building without innerHTML, the JSON API client, credentials kept in
// sessionStorage (gone when the tab closes), and number/time formatting.

/** el("p", {class: "x", onclick: fn}, "text", child) — strings become text nodes, never markup. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    else if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  append(node, children);
  return node;
}

export function append(node, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

export const $ = (sel, root = document) => root.querySelector(sel);

/** A credential remembered for this tab only. */
export function stored(name) {
  return {
    get: () => sessionStorage.getItem(name) || "",
    set: (v) => (v ? sessionStorage.setItem(name, v) : sessionStorage.removeItem(name)),
  };
}

export class ApiError extends Error {
  constructor(status, body) {
    const e = body && body.error;
    super((e && e.message) || `HTTP ${status}`);
    this.status = status;
    this.code = e && e.code;
  }
}

/** JSON request with a Bearer token; throws ApiError with the gateway's message on a non-2xx answer. */
export async function api(token, method, path, body) {
  const headers = { authorization: `Bearer ${token}` };
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  let doc = null;
  try { doc = await res.json(); } catch { doc = null; }
  if (!res.ok) throw new ApiError(res.status, doc);
  return doc;
}

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v !== null && v !== undefined) q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}

export function fmtTime(unix) {
  if (unix === null || unix === undefined) return "—";
  const d = new Date(unix * 1000);
  return d.toLocaleString(undefined, { year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

/** A long value cut to `max` characters with the whole of it on hover (title) and in copies. */
export function clip(text, max = 24) {
  const s = text === null || text === undefined ? "—" : String(text);
  return el("span", { class: "clip", title: s }, s.length > max ? `${s.slice(0, max - 1)}…` : s);
}

/** Big counts as 6k, 2M: limits and quotas read at a glance in a narrow column. */
export function fmtCompact(v) {
  if (v === null || v === undefined) return "∞";
  if (v >= 1e6 && v % 1e5 === 0) return `${v / 1e6}M`;
  if (v >= 1e4 && v % 100 === 0) return `${v / 1e3}k`;
  return Number(v).toLocaleString();
}

export function fmtBucket(unix, group) {
  const d = new Date(unix * 1000);
  return group === "day"
    ? d.toLocaleDateString(undefined, { month: "short", day: "numeric" })
    : d.toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

export const fmtNum = (n) => (n === null || n === undefined ? "—" : Number(n).toLocaleString());
export const fmtMoney = (s) => (s === null || s === undefined ? "—" : `$${s}`);
export const fmtMs = (n) => (n === null || n === undefined ? "—" : `${Math.round(n)} ms`);
export const orDash = (v) => (v === null || v === undefined || v === "" ? "—" : String(v));

/** Show a message in a role=status / role=alert element. */
export function say(node, text, kind = "info") {
  node.textContent = text;
  node.dataset.kind = kind;
}

/** Wire a "paste your key" form: keeps it in sessionStorage, calls onKey(key) when set. */
export function keyForm(form, store, onKey) {
  const input = form.querySelector("input");
  input.value = store.get();
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    store.set(input.value.trim());
    onKey(input.value.trim());
  });
  const forget = form.querySelector("[data-forget]");
  if (forget) forget.addEventListener("click", () => { store.set(""); input.value = ""; onKey(""); input.focus(); });
  if (input.value) onKey(input.value);
}

/** Arrow-key and click handling for a role=tablist of buttons controlling role=tabpanel sections. */
export function tabs(list, onShow) {
  const buttons = [...list.querySelectorAll("[role=tab]")];
  const show = (btn, focus) => {
    for (const b of buttons) {
      const on = b === btn;
      b.setAttribute("aria-selected", String(on));
      b.tabIndex = on ? 0 : -1;
      document.getElementById(b.getAttribute("aria-controls")).hidden = !on;
    }
    if (focus) btn.focus();
    onShow(btn.getAttribute("aria-controls"));
  };
  for (const b of buttons) {
    b.addEventListener("click", () => show(b, false));
    b.addEventListener("keydown", (ev) => {
      const i = buttons.indexOf(b);
      let j = null;
      if (ev.key === "ArrowRight") j = (i + 1) % buttons.length;
      else if (ev.key === "ArrowLeft") j = (i - 1 + buttons.length) % buttons.length;
      else if (ev.key === "Home") j = 0;
      else if (ev.key === "End") j = buttons.length - 1;
      if (j !== null) { ev.preventDefault(); show(buttons[j], true); }
    });
  }
  return (id) => show(buttons.find((b) => b.getAttribute("aria-controls") === id) || buttons[0], false);
}
