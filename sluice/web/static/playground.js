// The playground: chat with a model through the gateway using one user key, with streaming output,
// Stop (abort -> the gateway cancels the upstream), and per-reply timings, usage and cost.

import { $, api, clear, el, fmtMoney, keyForm, say, stored } from "./common.js";
import { renderMarkdown } from "./markdown.js";
import { chatStream } from "./sse.js";

const keyStore = stored("sluice.userKey");
const modelStore = stored("sluice.model");
const state = { key: "", messages: [], controller: null };

const modelSelect = $("#model");
const transcript = $("#transcript");
const input = $("#message");
const sendBtn = $("#send");
const stopBtn = $("#stop");
const chatStatus = $("#chat-status");

keyForm($("#key-form"), keyStore, loadModels);

async function loadModels(key) {
  state.key = key;
  const status = $("#key-status");
  clear(modelSelect);
  modelSelect.disabled = true;
  if (!key) {
    modelSelect.append(el("option", { value: "" }, "Enter a key first"));
    say(status, "");
    return;
  }
  say(status, "Loading models…");
  try {
    const doc = await api(key, "GET", "/v1/models");
    const ids = (doc.data || []).map((m) => m.id);
    for (const id of ids) modelSelect.append(el("option", { value: id }, id));
    if (ids.length === 0) modelSelect.append(el("option", { value: "" }, "No models for this key"));
    if (ids.includes(modelStore.get())) modelSelect.value = modelStore.get();
    modelSelect.disabled = ids.length === 0;
    say(status, `Key accepted · ${ids.length} model${ids.length === 1 ? "" : "s"} available.`, "ok");
  } catch (err) {
    modelSelect.append(el("option", { value: "" }, "—"));
    say(status, `Could not list models: ${err.message}`, "error");
  }
}
modelSelect.addEventListener("change", () => modelStore.set(modelSelect.value));

function bubble(role, text) {
  const body = el("div", { class: "body" });
  const node = el("li", { class: `msg ${role}` }, el("div", { class: "who" }, role === "user" ? "You" : "Assistant"), body);
  if (role === "user") {
    body.classList.add("plain");
    body.textContent = text;
  }
  transcript.append(node);
  node.scrollIntoView({ block: "end" });
  return node;
}

function setBusy(busy) {
  sendBtn.disabled = busy;
  stopBtn.disabled = !busy;
}

$("#composer").addEventListener("submit", (ev) => {
  ev.preventDefault();
  send();
});
input.addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    send();
  }
});
stopBtn.addEventListener("click", () => {
  if (state.controller) state.controller.abort();
});
$("#reset").addEventListener("click", () => {
  if (state.controller) state.controller.abort();
  state.messages = [];
  clear(transcript);
  say(chatStatus, "New conversation.");
  input.focus();
});

async function send() {
  const text = input.value.trim();
  if (!text || state.controller) return;
  if (!state.key) { say(chatStatus, "Enter an API key first.", "error"); $("#api-key").focus(); return; }
  const model = modelSelect.value;
  if (!model) { say(chatStatus, "Pick a model first.", "error"); modelSelect.focus(); return; }
  input.value = "";
  state.messages.push({ role: "user", content: text });
  bubble("user", text);
  await reply(model);
  input.focus();
}

/** Stream one assistant reply into a new bubble; keeps it in the conversation unless it failed. */
async function reply(model) {
  const node = bubble("assistant");
  const body = node.querySelector(".body");
  const meta = el("div", { class: "meta" });
  node.append(meta);
  node.setAttribute("aria-busy", "true");
  body.classList.add("cursor");
  const controller = new AbortController();
  state.controller = controller;
  setBusy(true);
  say(chatStatus, "Waiting for the first token…");

  let text = "";
  let frame = 0;
  const paint = () => { frame = 0; clear(body).append(renderMarkdown(text)); };
  const t0 = performance.now();
  let tFirst = null;
  let usage = null;
  let requestId = null;
  let outcome = "ok";
  let note = "";
  try {
    const res = await fetch("/v1/chat/completions", {
      method: "POST",
      signal: controller.signal,
      headers: { authorization: `Bearer ${state.key}`, "content-type": "application/json" },
      body: JSON.stringify({ model, messages: state.messages, stream: true, stream_options: { include_usage: true } }),
    });
    requestId = res.headers.get("x-request-id");
    const upstream = res.headers.get("x-sluice-upstream-model");
    if (upstream) node.dataset.upstreamModel = upstream;
    if (!res.ok) {
      let doc = null;
      try { doc = await res.json(); } catch { doc = null; }
      throw new Error((doc && doc.error && doc.error.message) || `HTTP ${res.status}`);
    }
    say(chatStatus, "Streaming…");
    for await (const item of chatStream(res.body)) {
      if (item.type === "error") {
        outcome = "error";
        note = `The stream failed: ${item.error.message || "unknown error"}`;
        break;
      }
      if (item.type === "truncated") {
        outcome = "error";
        note = "The stream ended before the reply was complete.";
        break;
      }
      if (item.usage) usage = item.usage;
      if (item.content) {
        if (tFirst === null) tFirst = performance.now();
        text += item.content;
        if (!frame) frame = requestAnimationFrame(paint);
      }
    }
  } catch (err) {
    if (err.name === "AbortError") {
      outcome = "stopped";
      note = "Stopped.";
    } else {
      outcome = "error";
      note = err.message || String(err);
    }
  } finally {
    state.controller = null;
    setBusy(false);
  }
  const tEnd = performance.now();
  if (frame) cancelAnimationFrame(frame);
  paint();
  body.classList.remove("cursor");
  node.removeAttribute("aria-busy");
  if (note) node.append(el("p", { class: "note", role: outcome === "error" ? "alert" : null }, note));
  if (outcome === "error") {
    node.classList.add("error");
    state.messages.pop(); // the turn failed: leave it out of the history so it can be retried
  } else if (text) {
    state.messages.push({ role: "assistant", content: text });
  }
  node.dataset.outcome = outcome;
  say(chatStatus, outcome === "ok" ? "Reply complete." : note, outcome === "error" ? "error" : "info");
  showMetrics(meta, { t0, tFirst, tEnd, usage, text });
  if (requestId) fetchCost(meta, requestId);
}

function metric(meta, name, value) {
  meta.append(el("span", { "data-metric": name }, value));
}

function showMetrics(meta, { t0, tFirst, tEnd, usage, text }) {
  if (tFirst !== null) metric(meta, "ttft", `first token ${Math.round(tFirst - t0)} ms`);
  const completion = usage ? usage.completion_tokens : null;
  if (tFirst !== null && tEnd - tFirst > 0) {
    const n = completion ?? Math.max(1, text.split(/\s+/).filter(Boolean).length);
    metric(meta, "tps", `${(n / ((tEnd - tFirst) / 1000)).toFixed(1)} tokens/s${completion === null ? " (est.)" : ""}`);
  }
  if (usage) metric(meta, "usage", `${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion tokens`);
}

/** The ledger is written as the stream ends; ask a few times before giving up. */
async function fetchCost(meta, requestId) {
  for (let attempt = 0; attempt < 6; attempt++) {
    try {
      const rec = await api(state.key, "GET", `/v1/dashboard/requests/${encodeURIComponent(requestId)}`);
      metric(meta, "cost", `cost ${fmtMoney(rec.cost)}`);
      if (rec.upstream_model) metric(meta, "served-by", `served by ${rec.provider || "?"}/${rec.upstream_model}`);
      return;
    } catch (err) {
      if (err.status !== 404) break;
      await new Promise((r) => setTimeout(r, 250 * (attempt + 1)));
    }
  }
  metric(meta, "cost", "cost unavailable");
}
