"""Upstream key states: one row per (provider, key fingerprint), replaced in place, seen by every instance."""

from __future__ import annotations

from sluice.storage.base import Store, UpstreamKeyState
from tests.unit.storage.conftest import Backend


async def test_put_replaces_and_other_instances_see_it(backend: Backend, store: Store) -> None:
    other = await backend.store()
    assert await other.list_upstream_key_states() == []
    await store.put_upstream_key_state(UpstreamKeyState("p", "uk_1", "disabled_auto", "auth: 401", 10.0))
    await store.put_upstream_key_state(UpstreamKeyState("p", "uk_2", "disabled_manual", "by hand", 11.0))
    await other.put_upstream_key_state(UpstreamKeyState("p", "uk_1", "active", None, 12.5))
    got = sorted(await store.list_upstream_key_states(), key=lambda s: s.key_id)
    assert got == [UpstreamKeyState("p", "uk_1", "active", None, 12.5),
                   UpstreamKeyState("p", "uk_2", "disabled_manual", "by hand", 11.0)]
