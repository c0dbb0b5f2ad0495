"""Upstream key pools through Sluice in process (the app on loopback, the OpenAI simulator as the upstream,
an injected clock): refused keys are disabled with their reasons, requests go on through the key that
works, and the probe re-enables the others once the upstream takes them again and the probe interval has
passed on the clock."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import openai

from sluice.auth.keys import hash_key, new_key
from sluice.channels.pool import fingerprint
from sluice.clock import ManualClock
from sluice.http.app import create_app
from sluice.storage.base import KeyRecord
from sluice.storage.sqlite import SQLiteStore
from tests.harness import one_upstream, settings
from tests.inproc import serving
from tests.sim.openai_sim import Fault, OpenAISim, fixture_bytes

ADMIN = "adm-channels-test-token"
K1, K2, K3 = "sk-test-refused-000001", "sk-test-no-quota-000002", "sk-test-working-000003"
PROBE_INTERVAL = 60.0  # on the injected clock; the loop that checks for due probes ticks every 0.1 s


def _config(base_url: str, keys: list[Any] | None = None) -> dict[str, Any]:
    """A pool of `keys` (by default K1, K2, K3) behind model gpt-4o, polled often."""
    return {"admin": {"token": ADMIN}, "channels": {"poll_seconds": 0.1},
            **one_upstream(base_url, ["gpt-4o"], name="pool", api_keys=keys or [K1, K2, K3], probe_model="gpt-4o",
                           probe_interval=PROBE_INTERVAL)}


@dataclass
class Sluice:
    port: int
    db: Path
    store: SQLiteStore
    clock: ManualClock
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def create_key(self) -> str:
        kid, secret = new_key()
        await self.store.create_key(KeyRecord(kid, "test", hash_key(secret)))
        return secret


@contextlib.asynccontextmanager
async def sluice(tmp_path: Path, sim_url: str, keys: list[Any] | None = None) -> AsyncIterator[Sluice]:
    db = tmp_path / "sluice.db"
    store = SQLiteStore(f"sqlite:///{db}")
    clock = ManualClock()
    async with serving(create_app(settings(tmp_path, _config(sim_url, keys)), store=store, clock=clock)) as base:
        s = Sluice(int(base.rsplit(":", 1)[1]), db, store, clock)
        try:
            yield s
        finally:
            for close in s.closers:
                await close()


async def _admin(s: Sluice, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.request(
            method, f"http://127.0.0.1:{s.port}/admin/{path}", json=body,
            headers={"authorization": f"Bearer {ADMIN}"}) as r:
        return r.status, await r.text()


async def _keys(s: Sluice) -> dict[str, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(
            f"http://127.0.0.1:{s.port}/admin/channels", headers={"authorization": f"Bearer {ADMIN}"}) as r:
        doc = await r.json()
    return {k["id"]: k for k in doc["data"][0]["keys"]}


async def _until(pred: Any, s: Sluice) -> dict[str, dict[str, Any]]:
    """Poll the admin listing until `pred(keys)` holds (the probe runs on its loop's next tick), 10 s at most."""
    keys = await _keys(s)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(10):
            while not pred(keys):
                await asyncio.sleep(0.02)
                keys = await _keys(s)
    return keys


def _states(db: Path) -> dict[str, tuple[str, str | None]]:
    with sqlite3.connect(db) as con:
        return {r[0]: (r[1], r[2]) for r in con.execute("SELECT key_id, state, reason FROM upstream_key_states")}


async def _db_until(db: Path, pred: Any) -> dict[str, tuple[str, str | None]]:
    """The shared states, read until `pred` holds (the writes leave the request path), 10 s at most."""
    states = _states(db)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(10):
            while not pred(states):
                await asyncio.sleep(0.02)
                states = _states(db)
    return states


async def test_refused_and_exhausted_keys_are_disabled_and_the_probe_re_enables_them(tmp_path: Path) -> None:
    i1, i2, i3 = fingerprint(K1), fingerprint(K2), fingerprint(K3)
    async with OpenAISim() as sim:
        sim.for_key(K1, Fault.http_error(401))
        sim.for_key(K2, Fault.http_error(429, fixture_bytes("error_429_quota.json")))
        async with sluice(tmp_path, sim.base_url) as s:
            client = openai.AsyncOpenAI(base_url=s.base_url, api_key=await s.create_key(), max_retries=0)
            s.closers.append(client.close)
            msgs: Any = [{"role": "user", "content": "hi"}]
            for _ in range(3):
                done = await client.chat.completions.create(model="gpt-4o", messages=msgs)
                assert done.choices[0].message.content
                stream = await client.chat.completions.create(model="gpt-4o", messages=msgs, stream=True)
                assert [c async for c in stream]

            keys = await _keys(s)
            assert keys[i1]["state"] == "disabled_auto" and keys[i1]["reason"].startswith("auth")
            assert keys[i2]["state"] == "disabled_auto" and keys[i2]["reason"].startswith("quota")
            assert keys[i3]["state"] == "active" and keys[i3]["requests"] == 6 and keys[i3]["errors"] == 0
            states = await _db_until(s.db, lambda st: len(st) == 2)  # written in the background
            assert states[i1][0] == states[i2][0] == "disabled_auto"  # shared with every instance
            status, text = await _admin(s, "GET", "channels")
            assert status == 200 and not any(k in text for k in (K1, K2, K3))

            status, text = await _admin(s, "POST", "channels/pool/test", {"key_id": i1})
            assert status == 200 and '"ok":false' in text.replace(" ", "") and K1 not in text

            sim.reset()  # the upstream takes both keys again: the background probe must notice, once due
            keys = await _keys(s)
            assert keys[i1]["state"] == keys[i2]["state"] == "disabled_auto"
            s.clock.advance(PROBE_INTERVAL)
            keys = await _until(lambda ks: all(k["state"] == "active" for k in ks.values()), s)
            assert [keys[i]["state"] for i in (i1, i2, i3)] == ["active"] * 3
            assert (await _db_until(s.db, lambda st: st.get(i1) == ("active", None)))[i1] == ("active", None)

            status, text = await _admin(s, "POST", "channels/pool/test", {"key_id": i2, "model": "gpt-4o"})
            assert status == 200 and '"ok":true' in text.replace(" ", "") and '"status":200' in text.replace(" ", "")


async def test_a_key_disabled_by_hand_is_never_used_nor_probed(tmp_path: Path) -> None:
    async with OpenAISim() as sim, sluice(tmp_path, sim.base_url) as s:
        status, _ = await _admin(s, "POST", f"channels/pool/keys/{fingerprint(K3)}/disable")
        assert status == 200
        client = openai.AsyncOpenAI(base_url=s.base_url, api_key=await s.create_key(), max_retries=0)
        s.closers.append(client.close)
        for _ in range(4):
            await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        used = [r.headers.get("Authorization") for r in sim.requests]
        assert len(used) == 4 and f"Bearer {K3}" not in used
        keys = await _keys(s)
        assert keys[fingerprint(K3)]["state"] == "disabled_manual"
        status, text = await _admin(s, "POST", "channels/pool/keys/uk_nope/disable")
        assert status == 404 and '"error"' in text
        status, text = await _admin(s, "POST", "channels/pool/test", {"bogus": 1})
        assert status == 400


async def test_a_key_with_its_own_rpm_serves_no_more_and_the_pool_goes_on(tmp_path: Path) -> None:
    """`rpm` on one key of the pool: the favoured key takes its two requests a minute, the rest go to the
    other key; a pool whose every key is at its limit answers 503 no_upstream_key."""
    limited, spare = "sk-test-limited-000004", "sk-test-spare-00000005"
    keys = [{"key": limited, "weight": 100, "rpm": 2}, {"key": spare, "rpm": 3}]
    async with OpenAISim() as sim, sluice(tmp_path, sim.base_url, keys) as s:
        client = openai.AsyncOpenAI(base_url=s.base_url, api_key=await s.create_key(), max_retries=0)
        s.closers.append(client.close)
        for _ in range(5):
            await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        used = [r.headers.get("Authorization") for r in sim.requests]
        assert used.count(f"Bearer {limited}") == 2 and used.count(f"Bearer {spare}") == 3, used
        try:
            await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
            raise AssertionError("a sixth request found a key with room")
        except openai.APIStatusError as exc:
            assert exc.status_code == 503 and exc.body["code"] == "no_upstream_key", exc.body  # type: ignore[index]
        assert len(sim.requests) == 5
        keys = await _keys(s)
        assert keys[fingerprint(limited)]["rpm"] == 2 and keys[fingerprint(limited)]["state"] == "active"
