"""The admin console at common widths (1,280 and 1,920 px), after real traffic: no table overflows its card,
every key's actions are on screen, rows stay compact, and request ids are told apart by what differs.
With SLUICE_SCREENSHOTS=docs/img it refreshes the README's 1,280 px screenshots."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.e2e import browser_env as env
from tests.sim.browser_sim import browser_faults
from tests.sim.openai_sim import ThreadedSim

pytestmark = pytest.mark.browser

MSG = [{"role": "user", "content": "hi"}]

# every table in the visible panel: how far it sticks out of its scroll box and its card (px, >0 = overflow)
OVERFLOW_JS = """() => [...document.querySelectorAll('[role=tabpanel]:not([hidden]) .table-wrap')].map(w => {
  const t = w.querySelector('table'), card = w.closest('.card') || w.parentElement;
  return {id: t.id, scroll: t.scrollWidth - w.clientWidth,
          card: t.getBoundingClientRect().right - card.getBoundingClientRect().right};
})"""


def _traffic(gw: env.Gateway) -> None:
    """Keys as an operator has them (long names, owners, model lists, limits) and real requests through
    them: successes and a refused model."""
    keys = [gw.admin("POST", "/admin/keys", {
        "name": f"team-{name}-production-service", "owner": f"{name}.operations@example-company.com",
        "models": ["fast-model", "sim-model", "cjk-model", "slow-model"], "budget": "1250.00",
        "token_quota": 25_000_000, "period": "month", "rpm": 6000, "tpm": 2_000_000, "max_concurrency": 64})
        for name in ("search", "billing", "support")]
    for key in keys:
        with openai.OpenAI(api_key=key["key"], base_url=gw.base_url + "/v1", max_retries=0) as client:
            for _ in range(3):
                client.chat.completions.create(model="fast-model", messages=MSG)  # type: ignore[arg-type]
            with pytest.raises(openai.NotFoundError):
                client.chat.completions.create(model="no-such-model", messages=MSG)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[env.Gateway, Any]]:
    """A gateway after real traffic, and a headless Chromium to look at its console."""
    from playwright.sync_api import sync_playwright

    env.require_browser()
    with contextlib.ExitStack() as stack:
        sim = stack.enter_context(ThreadedSim())
        for prefix, fault in browser_faults().items():
            sim.for_model(prefix, fault)
        gw = env.start_gateway(tmp_path_factory.mktemp("widths"), sim.base_url)
        stack.callback(env.stop_gateway, gw)
        _traffic(gw)
        pw = stack.enter_context(sync_playwright())
        chromium = pw.chromium.launch(executable_path=env.CHROMIUM, args=env.CHROMIUM_ARGS, headless=True)
        stack.callback(chromium.close)
        yield gw, chromium


def _tab(page: Any, name: str, ready: str) -> None:
    page.get_by_role("tab", name=name).click()
    page.wait_for_selector(ready)


def _overflowing(page: Any) -> list[dict[str, Any]]:
    return [o for o in page.evaluate(OVERFLOW_JS) if o["scroll"] > 1 or o["card"] > 1]


@pytest.mark.parametrize("width", [1280, 1920])
def test_console_tables_fit_their_cards(console: tuple[env.Gateway, Any], width: int) -> None:
    gw, chromium = console
    ctx = chromium.new_context(base_url=gw.base_url, viewport={"width": width, "height": 900})
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    shots = env.screenshot_dir() if width == 1280 else None
    try:
        page.goto("/console")
        page.fill("#admin-token", env.ADMIN_TOKEN)
        page.click("#token-form button[type=submit]")
        page.wait_for_function("() => document.querySelectorAll('#keys-table tbody tr').length >= 4")
        assert errors == []
        assert _overflowing(page) == []
        for row in page.locator("#keys-table tbody tr").all():
            assert row.bounding_box()["height"] <= 64, row.inner_text()  # compact: one or two text lines
            for button in row.get_by_role("button").all():  # every action on screen, none clipped
                box = button.bounding_box()
                assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width, button.inner_text()
        models = page.locator("#keys-table tbody tr", has_text="team-search").locator("[title*='slow-model']")
        assert models.count() == 1  # the full value is on hover when abbreviated
        if shots:
            page.screenshot(path=str(shots / "console-keys.png"), full_page=True)

        _tab(page, "Requests", "#requests-table tbody [data-request]")
        page.click("#requests-form button[type=submit]")
        page.wait_for_function("() => document.querySelectorAll('#requests-table tbody [data-request]').length >= 12")
        assert _overflowing(page) == []
        ids = page.locator("#requests-table tbody [data-request]")
        shown = ids.evaluate_all("els => els.map(e => e.textContent)")
        full = ids.evaluate_all("els => els.map(e => e.dataset.request)")
        assert len(set(shown)) == len(shown) == len(set(full))  # rows told apart by the id they show
        assert ids.evaluate_all("els => els.map(e => e.title)") == full  # the whole id on hover
        if shots:
            page.screenshot(path=str(shots / "console-requests.png"), full_page=True)

        _tab(page, "Usage", "#usage-form")
        page.click("#usage-form button[type=submit]")
        page.wait_for_selector("#usage-table tbody tr")
        assert _overflowing(page) == []
        _tab(page, "Providers", "#models-table tbody tr:has-text('cjk-model')")
        assert _overflowing(page) == []
        assert errors == []
    finally:
        ctx.close()
