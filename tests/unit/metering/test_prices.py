"""A model without a price is refused at the start of a request, naming the model, unless marked free;
the output tokens a balance can pay for (the reservation of a request without max_tokens)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest

from sluice.auth.keys import hash_key, new_key
from sluice.config import ConfigError
from sluice.http.app import create_app
from sluice.metering.fit import affordable_output
from sluice.metering.pricing import Price
from sluice.storage.base import KeyRecord, LedgerQuery, LedgerRecord
from sluice.storage.sqlite import SQLiteStore
from tests.harness import model, provider, settings
from tests.inproc import serving

SIM = ("sim", "sim")


def _config(priced: dict[str, Any] | None = None) -> dict[str, Any]:
    """Models `priced`, `unpriced` (neither a pricing nor free) and `gift` (free); `priced` gets `priced` too."""
    return {"providers": [provider("sim", "simulated")],
            "models": [model("priced", SIM, pricing={"input": "1", "output": "2"}, **(priced or {})),
                       model("unpriced", SIM, free=False), model("gift", SIM)]}


async def test_unpriced_model_is_refused_by_name_and_free_one_served(tmp_path: Path) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 's.db'}")
    key_id, secret = new_key()
    app = create_app(settings(tmp_path, _config()), store=store)
    async with serving(app) as base:
        await store.create_key(KeyRecord(id=key_id, name="k", key_hash=hash_key(secret), budget=10**9))
        client = openai.AsyncOpenAI(base_url=base + "/v1", api_key=secret, max_retries=0)
        msgs: list[dict[str, str]] = [{"role": "user", "content": "hi"}]
        with pytest.raises(openai.PermissionDeniedError) as err:
            await client.chat.completions.create(model="unpriced", messages=msgs)  # type: ignore[arg-type]
        assert "`unpriced`" in err.value.message and err.value.code == "model_not_priced"
        gift = await client.chat.completions.create(model="gift", messages=msgs)  # type: ignore[arg-type]
        priced = await client.chat.completions.create(model="priced", messages=msgs)  # type: ignore[arg-type]
        assert gift.choices[0].message.content and priced.choices[0].message.content
        await client.close()
    ledger = {r.model: r for r in await _ledger(tmp_path)}
    assert ledger["unpriced"].status == 403 and not ledger["unpriced"].cost
    assert ledger["gift"].cost == 0 and (ledger["priced"].cost or 0) > 0


async def _ledger(tmp_path: Path) -> list[LedgerRecord]:
    store = SQLiteStore(f"sqlite:///{tmp_path / 's.db'}")
    await store.open()
    try:
        return await store.list_ledger(LedgerQuery())
    finally:
        await store.close()


def test_free_and_a_pricing_together_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"models\[0\]\.free"):
        settings(tmp_path, _config({"free": True}))


PRICE = Price(Decimal("1"), Decimal("1"), Decimal("10"))   # 1,000 / 10,000 nano-units a token


@pytest.mark.parametrize(("money", "tokens", "n", "expected"), [
    (None, None, 1, 4096),                 # nothing limits: the cap
    (10**12, None, 1, 4096),               # plenty of money: the cap
    (27_000 + 97 * 10_000, None, 1, 97),   # exactly 97 tokens after the prompt
    (27_000 + 97 * 10_000 - 1, None, 1, 96),
    (27_000 + 97 * 10_000, None, 2, 48),   # two choices share it
    (26_999, None, 1, 0),                  # not even the prompt
    (None, 27 + 50, 1, 50),                # a token quota limits it alike
    (10**12, 27 + 50, 1, 50),
])
def test_affordable_output(money: int | None, tokens: int | None, n: int, expected: int) -> None:
    got = affordable_output(PRICE, 27, n, 4096, money, tokens)
    assert got == expected
    if money is not None and tokens is None and 0 < got < 4096:   # bound by money: the next token would not fit
        assert PRICE.cost_nanos(27, got * n) <= money < PRICE.cost_nanos(27, (got + 1) * n)
