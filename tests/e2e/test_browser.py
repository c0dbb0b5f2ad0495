"""Browser tests: headless Chromium against a real `sluice serve` (playground, admin console, owner page)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.e2e.browser_env import (
    ADMIN_TOKEN,
    CHROMIUM,
    CHROMIUM_ARGS,
    Gateway,
    require_browser,
    screenshot_dir,
    start_gateway,
    stop_gateway,
)
from tests.sim.browser_sim import SPLIT_REPLY, browser_faults, split_stream_pieces
from tests.sim.openai_sim import ThreadedSim

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser_sim() -> Iterator[ThreadedSim]:
    with ThreadedSim() as s:
        for prefix, fault in browser_faults().items():
            s.for_model(prefix, fault)
        yield s


def slow_stream_closed(sim: ThreadedSim) -> bool:
    """Whether the gateway closed a `slow-*` stream before its end."""
    return any(r.client_closed for r in sim.requests
               if isinstance(r.body, dict) and str(r.body.get("model", "")).startswith("slow-"))


@pytest.fixture(scope="module")
def gateway(browser_sim: ThreadedSim, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    require_browser()
    gw = start_gateway(tmp_path_factory.mktemp("gw"), browser_sim.base_url)
    yield gw
    stop_gateway(gw)


@pytest.fixture(scope="module")
def browser(gateway: Gateway) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, gateway: Gateway) -> Iterator[Any]:
    ctx = browser.new_context(base_url=gateway.base_url, viewport={"width": 1100, "height": 900})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    yield pg
    ctx.close()
    assert not [e for e in errors if "Failed to load resource" not in e], errors


def open_playground(page: Any, key: str, model: str) -> None:
    page.goto("/playground")
    page.fill("#api-key", key)
    page.click("#key-form button[type=submit]")
    page.wait_for_selector(f"#model option[value='{model}']", state="attached")
    page.select_option("#model", model)


SAMPLE_JS = """() => { window.__samples = (async () => {
  const seen = [];
  const t0 = performance.now();
  for (;;) {
    await new Promise((r) => requestAnimationFrame(r));
    const node = document.querySelector('#transcript .msg.assistant:last-child');
    const body = node && node.querySelector('.body');
    const len = body ? body.textContent.length : 0;
    if (seen.length === 0 || seen[seen.length - 1] !== len) seen.push(len);
    if ((node && node.dataset.outcome) || performance.now() - t0 > 20000) return seen;
  }
})(); }"""


def test_playground_streams_token_by_token_and_renders_markdown(page: Any, gateway: Gateway) -> None:
    open_playground(page, gateway.user_key, "sim-model")
    page.fill("#message", "Show me some markdown")
    page.evaluate(SAMPLE_JS)  # starts sampling (every animation frame) before the first token
    page.click("#send")
    lengths = page.evaluate("() => window.__samples")
    growth = [b for a, b in itertools.pairwise(lengths) if b > a]
    assert len(growth) >= 5, f"text should grow in several steps, saw lengths {lengths}"
    reply = page.locator("#transcript .msg.assistant").last
    assert reply.get_attribute("data-outcome") == "ok"
    body = reply.locator(".body")
    assert body.locator("h4").inner_text() == "Result"
    assert body.locator("strong").inner_text() == "bold"
    assert body.locator("em").inner_text() == "italic"
    assert body.locator("p code").inner_text() == "inline code"
    assert body.locator("ul li").count() == 2
    assert body.locator("pre code").inner_text() == "print('hi')"
    assert body.locator("b").count() == 0 and "<b>not html</b>" in body.inner_text()
    meta = reply.locator(".meta")
    assert "first token" in meta.locator("[data-metric=ttft]").inner_text()
    assert "tokens/s" in meta.locator("[data-metric=tps]").inner_text()
    assert "completion tokens" in meta.locator("[data-metric=usage]").inner_text()
    cost = meta.locator("[data-metric=cost]")
    cost.wait_for(timeout=10000)
    assert cost.inner_text().startswith("cost $"), cost.inner_text()
    # a second turn sends the whole conversation
    page.fill("#message", "And again")
    page.click("#send")
    page.wait_for_selector("#transcript .msg.assistant:nth-child(4)[data-outcome=ok]", timeout=20000)
    assert page.locator("#transcript .msg").count() == 4
    shots = screenshot_dir()
    if shots:
        page.screenshot(path=str(shots / "playground.png"))


def test_stop_cancels_the_upstream(page: Any, gateway: Gateway, browser_sim: ThreadedSim) -> None:
    open_playground(page, gateway.user_key, "slow-model")
    page.fill("#message", "Talk for a long time")
    page.click("#send")
    page.wait_for_function(
        "() => (document.querySelector('#transcript .msg.assistant .body')?.textContent || '').includes('word3')",
        timeout=15000)
    assert not slow_stream_closed(browser_sim)
    page.click("#stop")
    page.wait_for_selector("#transcript .msg.assistant[data-outcome=stopped]", timeout=5000)
    assert browser_sim.wait_for(lambda: slow_stream_closed(browser_sim), 10), \
        "the upstream connection should close when the user presses Stop"
    assert page.locator("#send").is_enabled()


def test_split_multibyte_text_renders_intact(page: Any, gateway: Gateway) -> None:
    open_playground(page, gateway.user_key, "cjk-model")
    page.fill("#message", "你好")
    page.click("#send")
    page.wait_for_selector("#transcript .msg.assistant[data-outcome=ok]", timeout=15000)
    text = page.locator("#transcript .msg.assistant .body").inner_text()
    assert text.strip() == SPLIT_REPLY
    assert "\ufffd" not in text


def test_sse_parser_survives_any_fragmentation(page: Any) -> None:
    page.goto("/playground")
    raw = b"".join(split_stream_pieces())
    variants = {"lf": raw, "crlf": raw.replace(b"\n", b"\r\n"), "cr": raw.replace(b"\n", b"\r"),
                "comments": b": keep-alive\n\n" + raw.replace(b"\n\n", b"\n\n: keep-alive\n\n", 2)}
    result = page.evaluate("""async (variants) => {
      const { SSEParser, interpretChunk } = await import('/static/sse.js');
      const out = {};
      for (const [name, bytes] of Object.entries(variants)) {
        const data = new Uint8Array(bytes);
        for (const size of [1, 2, 3, 5, 7, 64, data.length]) {
          const p = new SSEParser();
          const events = [];
          for (let i = 0; i < data.length; i += size) events.push(...p.push(data.subarray(i, i + size)));
          events.push(...p.end());
          let text = '', usage = null, done = false;
          for (const ev of events) {
            const item = interpretChunk(ev.data);
            if (item.type === 'done') { done = true; continue; }
            text += item.content;
            if (item.usage) usage = item.usage;
          }
          out[`${name}/${size}`] = { text, usage: usage && usage.completion_tokens, done, n: events.length };
        }
      }
      const err = interpretChunk('{"error": {"message": "boom", "type": "server_error"}}');
      out.error = err.type + ':' + err.error.message;
      return out;
    }""", {k: list(v) for k, v in variants.items()})
    assert result.pop("error") == "error:boom"
    for name, got in result.items():
        assert got == {"text": SPLIT_REPLY, "usage": 12, "done": True, "n": 9}, name


def test_pages_are_served_with_a_strict_csp(page: Any, gateway: Gateway) -> None:
    for path in ("/", "/playground", "/console", "/me", "/static/sse.js", "/static/style.css"):
        res = page.request.get(path)
        assert res.status == 200, path
        csp = res.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "unsafe-inline" not in csp
    assert page.request.get("/static/../sluice/config.py").status == 404
    assert page.request.get("/static/%2e%2e/app.py").status == 404


def sign_in_console(page: Any) -> None:
    page.goto("/console")
    page.fill("#admin-token", ADMIN_TOKEN)
    page.click("#token-form button[type=submit]")
    page.wait_for_selector("#app:not([hidden])")


def test_console_creates_a_key_that_works(page: Any, gateway: Gateway) -> None:
    sign_in_console(page)
    page.fill("#ck-name", "made-in-ui")
    page.fill("#ck-owner", "qa@example.com")
    page.fill("#ck-budget", "10.00")
    page.fill("#ck-rpm", "100")
    page.click("#create-key button[type=submit]")
    page.wait_for_selector("#secret-box:not([hidden])")
    secret = page.input_value("#new-key-secret")
    assert secret.startswith("sk-")
    row = page.locator("#keys-table tbody tr", has_text="made-in-ui")
    assert "$10.00" in row.inner_text() or "$10" in row.inner_text()

    client = openai.OpenAI(api_key=secret, base_url=gateway.base_url + "/v1", max_retries=0)
    try:
        done = client.chat.completions.create(model="fast-model", messages=[{"role": "user", "content": "hi"}])
    finally:
        client.close()
    assert done.choices[0].message.content == "Fast reply."

    page.click("#dismiss-secret")
    assert page.locator("#secret-box").is_hidden()
    assert page.input_value("#new-key-secret") == ""
    # disable it from the UI: the key then stops working
    page.once("dialog", lambda d: d.accept())
    row.get_by_role("button", name="Disable made-in-ui").click()
    page.wait_for_selector("#keys-table tbody tr:has-text('made-in-ui') .badge.off")
    client = openai.OpenAI(api_key=secret, base_url=gateway.base_url + "/v1", max_retries=0)
    try:
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(model="fast-model", messages=[{"role": "user", "content": "hi"}])
    finally:
        client.close()


def test_usage_chart_and_request_log_show_requests(page: Any, gateway: Gateway) -> None:
    key = gateway.admin("POST", "/admin/keys", {"name": "chart-key"})
    client = openai.OpenAI(api_key=key["key"], base_url=gateway.base_url + "/v1", max_retries=0)
    try:
        for _ in range(3):
            client.chat.completions.create(model="fast-model", messages=[{"role": "user", "content": "hi"}])
    finally:
        client.close()
    sign_in_console(page)
    page.get_by_role("tab", name="Usage").click()
    page.select_option("#usage-key", key["id"])
    page.click("#usage-form button[type=submit]")
    page.wait_for_function("() => /3 requests in range/.test(document.querySelector('#usage-status').textContent)")
    bars = page.locator("#chart-requests svg rect.bar")
    total = sum(int(v) for v in bars.evaluate_all("els => els.map(e => e.dataset.value)"))
    assert total == 3
    assert "chart-key: 3 requests" in " ".join(bars.evaluate_all("els => els.map(e => e.textContent)"))
    shots = screenshot_dir()
    if shots:
        page.select_option("#usage-key", "")
        page.click("#usage-form button[type=submit]")
        page.wait_for_timeout(300)
        page.screenshot(path=str(shots / "console.png"), full_page=True)

    page.get_by_role("tab", name="Requests").click()
    page.select_option("#req-key", key["id"])
    page.click("#requests-form button[type=submit]")
    page.wait_for_function("() => document.querySelectorAll('#requests-table tbody [data-request]').length === 3")
    page.locator("#requests-table tbody [data-request]").first.click()
    dialog = page.locator("#request-dialog")
    dialog.wait_for()
    text = dialog.inner_text()
    assert "fast / fast-model" in text and "Usage source" in text and "$" in text
    page.keyboard.press("Escape")
    page.get_by_role("tab", name="Providers").click()
    page.wait_for_selector("#models-table tbody tr:has-text('cjk-model') .badge.ok")


def test_owner_page_shows_balance_usage_and_requests(page: Any, gateway: Gateway) -> None:
    key = gateway.admin("POST", "/admin/keys", {"name": "owner-key", "budget": "5.00", "rpm": 60})
    client = openai.OpenAI(api_key=key["key"], base_url=gateway.base_url + "/v1", max_retries=0)
    try:
        for _ in range(2):
            client.chat.completions.create(model="fast-model", messages=[{"role": "user", "content": "hi"}])
    finally:
        client.close()
    page.set_viewport_size({"width": 375, "height": 800})
    page.goto("/me")
    page.fill("#api-key", key["key"])
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#app:not([hidden])")
    facts = page.locator("#facts").inner_text()
    assert "owner-key" in facts and "Budget\n$5" in facts and "Balance\n$4.99" in facts and "60" in facts
    bars = page.locator("#me-chart-requests svg rect.bar")
    assert sum(int(v) for v in bars.evaluate_all("els => els.map(e => e.dataset.value)")) == 2
    assert page.locator("#me-requests tbody [data-request]").count() == 2
    # nothing overflows the narrow viewport but the scrollable tables
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 375, width


def test_console_manages_accounts_groups_and_codes(page: Any, gateway: Gateway) -> None:
    sign_in_console(page)
    page.get_by_role("tab", name="Accounts").click()
    page.fill("#g-name", "ui-vip")
    page.fill("#g-mult", "0.5")
    page.fill("#g-models", "fast-model=0.25")
    page.click("#group-form button[type=submit]")
    page.wait_for_selector("#groups-table tbody tr:has-text('ui-vip'):has-text('fast-model ×0.25')")
    page.fill("#ca-name", "ui-acct")
    page.fill("#ca-group", "ui-vip")
    page.fill("#ca-balance", "2")
    page.click("#create-account button[type=submit]")
    row = page.locator("#accounts-table tbody tr", has_text="ui-acct")
    row.wait_for()
    assert "$2" in row.inner_text() and "ui-vip" in row.inner_text()
    row.get_by_role("button", name="Top up ui-acct").click()
    page.fill("#credit-amount", "3")
    page.fill("#credit-note", "invoice 7")
    page.click("#credit-form button[type=submit]")
    page.wait_for_selector("#accounts-table tbody tr:has-text('ui-acct'):has-text('$5')")
    row.get_by_role("button", name="History ui-acct").click()
    page.wait_for_selector("#history-dialog[open] #history-table tbody tr:has-text('invoice 7')")
    assert page.locator("#history-table tbody tr").count() == 2
    page.locator("#history-dialog [data-close]").click()
    page.fill("#c-count", "2")
    page.fill("#c-amount", "1.5")
    page.click("#codes-form button[type=submit]")
    page.wait_for_selector("#codes-box:not([hidden])")
    lines = page.input_value("#codes-csv").strip().splitlines()
    assert lines[0].startswith("code,") and len(lines) == 3 and all(x.startswith("SLC-") for x in lines[1:])
    codes_text = page.locator("#codes-table").inner_text()
    assert not any(x.split(",")[0] in codes_text for x in lines[1:])   # listings never show a code
    page.click("#codes-dismiss")
    assert page.input_value("#codes-csv") == ""
    row.get_by_role("button", name="Disable ui-acct").click()
    page.wait_for_selector("#accounts-table tbody tr:has-text('ui-acct') .badge.off")


def test_owner_page_redeems_a_code_and_shows_history_and_prices(page: Any, gateway: Gateway) -> None:
    gateway.admin("POST", "/admin/groups", {"name": "owner-gold", "multiplier": "0.5"})
    acct = gateway.admin("POST", "/admin/accounts", {"name": "owner-acct", "group": "owner-gold", "balance": "1"})
    key = gateway.admin("POST", "/admin/keys", {"name": "owner-acct-key", "account_id": acct["id"]})
    code = gateway.admin("POST", "/admin/codes", {"count": 1, "amount": "4"})["codes"][0]
    client = openai.OpenAI(api_key=key["key"], base_url=gateway.base_url + "/v1", max_retries=0)
    try:
        client.chat.completions.create(model="fast-model", messages=[{"role": "user", "content": "hi"}])
    finally:
        client.close()
    page.goto("/me")
    page.fill("#api-key", key["key"])
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#app:not([hidden])")
    facts = page.locator("#account-facts").inner_text()
    assert "owner-acct" in facts and "owner-gold" in facts
    page.wait_for_selector("#prices-table tbody tr:has-text('fast-model'):has-text('×0.5')")
    assert "$0.5" in page.locator("#prices-table tbody tr", has_text="fast-model").inner_text()   # half of $1.00
    page.fill("#redeem-code", code)
    page.click("#redeem-form button[type=submit]")
    page.wait_for_function("() => /Redeemed \\$4/.test(document.querySelector('#redeem-status').textContent)")
    history = page.locator("#history-table").inner_text()
    assert "redeem" in history and "charges" in history and "topup" in history
    page.fill("#redeem-code", code)
    page.click("#redeem-form button[type=submit]")
    page.wait_for_function("() => /already been used/.test(document.querySelector('#redeem-status').textContent)")
def test_console_test_button_probes_a_provider(page: Any, gateway: Gateway) -> None:
    sign_in_console(page)
    page.get_by_role("tab", name="Providers").click()
    page.wait_for_selector("#pools-table tbody tr")  # the key pools card is loaded (none in this config)
    assert "No provider has a key pool" in page.inner_text("#pools-table")
    page.get_by_role("button", name="Test fast").click()
    page.wait_for_function("() => /^fast: /.test(document.querySelector('#providers-status').textContent)")
    status = page.inner_text("#providers-status")
    assert status.startswith("fast: ok (HTTP 200") and "model fast-model" in status
    assert status.endswith("— Fast")  # the probe asks for one token
