"""Upstream key pools through a real Sluice: refused keys are disabled with their reasons, requests go on
through the key that works, the probe re-enables the others once the upstream takes them again."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import openai

from sluice.channels.pool import fingerprint
from tests.e2e.sluice_proc import SluiceProcess
from tests.harness import one_upstream
from tests.sim.openai_sim import Fault, OpenAISim, fixture_bytes

ADMIN = "adm-channels-test-token"
K1, K2, K3 = "sk-test-refused-000001", "sk-test-no-quota-000002", "sk-test-working-000003"


def _config(base_url: str, keys: list[Any] | None = None) -> dict[str, Any]:
    """A pool of `keys` (by default K1, K2, K3) behind model gpt-4o, polled and probed often."""
    return {"admin": {"token": ADMIN}, "channels": {"poll_seconds": 0.2},
            **one_upstream(base_url, ["gpt-4o"], name="pool", api_keys=keys or [K1, K2, K3], probe_model="gpt-4o",
                           probe_interval=1)}


async def _admin(s: SluiceProcess, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.request(
            method, f"http://127.0.0.1:{s.port}/admin/{path}", json=body,
            headers={"authorization": f"Bearer {ADMIN}"}) as r:
        return r.status, await r.text()


async def _keys(s: SluiceProcess) -> dict[str, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(
            f"http://127.0.0.1:{s.port}/admin/channels", headers={"authorization": f"Bearer {ADMIN}"}) as r:
        doc = await r.json()
    return {k["id"]: k for k in doc["data"][0]["keys"]}


async def _until(pred: Any, s: SluiceProcess) -> dict[str, dict[str, Any]]:
    """Poll the admin listing until `pred(keys)` holds (the probe runs on its own schedule), 30 s at most."""
    keys = await _keys(s)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(30):
            while not pred(keys):
                await asyncio.sleep(0.1)
                keys = await _keys(s)
    return keys


def _states(db: Path) -> dict[str, tuple[str, str | None]]:
    with sqlite3.connect(db) as con:
        return {r[0]: (r[1], r[2]) for r in con.execute("SELECT key_id, state, reason FROM upstream_key_states")}


async def _db_until(db: Path, pred: Any) -> dict[str, tuple[str, str | None]]:
    """The shared states, read until `pred` holds (the writes leave the request path), 30 s at most."""
    states = _states(db)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(30):
            while not pred(states):
                await asyncio.sleep(0.05)
                states = _states(db)
    return states


async def test_refused_and_exhausted_keys_are_disabled_and_the_probe_re_enables_them(tmp_path: Path) -> None:
    i1, i2, i3 = fingerprint(K1), fingerprint(K2), fingerprint(K3)
    async with OpenAISim() as sim:
        sim.for_key(K1, Fault.http_error(401))
        sim.for_key(K2, Fault.http_error(429, fixture_bytes("error_429_quota.json")))
        async with SluiceProcess(tmp_path, _config(sim.base_url)) as s:
            client = openai.AsyncOpenAI(base_url=s.base_url, api_key=s.create_key(), max_retries=0)
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

            sim.reset()  # the upstream takes both keys again: the background probe must notice
            keys = await _until(lambda ks: all(k["state"] == "active" for k in ks.values()), s)
            assert [keys[i]["state"] for i in (i1, i2, i3)] == ["active"] * 3
            assert (await _db_until(s.db, lambda st: st.get(i1) == ("active", None)))[i1] == ("active", None)

            status, text = await _admin(s, "POST", "channels/pool/test", {"key_id": i2, "model": "gpt-4o"})
            assert status == 200 and '"ok":true' in text.replace(" ", "") and '"status":200' in text.replace(" ", "")


async def test_a_key_disabled_by_hand_is_never_used_nor_probed(tmp_path: Path) -> None:
    async with OpenAISim() as sim, SluiceProcess(tmp_path, _config(sim.base_url)) as s:
        status, _ = await _admin(s, "POST", f"channels/pool/keys/{fingerprint(K3)}/disable")
        assert status == 200
        client = openai.AsyncOpenAI(base_url=s.base_url, api_key=s.create_key(), max_retries=0)
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
    async with OpenAISim() as sim, SluiceProcess(tmp_path, _config(sim.base_url, keys)) as s:
        client = openai.AsyncOpenAI(base_url=s.base_url, api_key=s.create_key(), max_retries=0)
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
