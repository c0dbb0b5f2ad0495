"""The Authenticator on a real SQLite store and the injected clock: the key cache lives exactly `ttl`,
a revocation made here takes effect at once, elsewhere after the ttl; no answer echoes the key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sluice.auth.keys import hash_key, new_key
from sluice.auth.principal import Authenticator
from sluice.clock import ManualClock
from sluice.errors import AuthenticationFailed
from sluice.storage.base import KeyRecord
from sluice.storage.sqlite import SQLiteStore


class CountingStore(SQLiteStore):
    """A real SQLite store that counts key lookups (to see the cache work)."""

    lookups = 0

    async def get_key(self, key_id: str) -> KeyRecord | None:
        self.lookups += 1
        return await super().get_key(key_id)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CountingStore]:
    s = CountingStore(f"sqlite:///{tmp_path / 'auth.db'}")
    await s.open()
    yield s
    await s.close()


async def make_key(store: SQLiteStore, **kw: object) -> str:
    kid, secret = new_key()
    await store.create_key(KeyRecord(kid, "k", hash_key(secret), **kw))  # type: ignore[arg-type]
    return secret


async def test_a_valid_key_in_any_accepted_form_gives_its_record(store: CountingStore) -> None:
    secret = await make_key(store)
    auth = Authenticator(store, clock=ManualClock())
    for header in (f"Bearer {secret}", f"bearer  {secret} ".encode(), secret):
        rec = await auth.authenticate(header)
        assert rec.key_hash == hash_key(secret)


async def test_the_cache_answers_for_ttl_seconds_of_the_clock_then_asks_the_store(store: CountingStore) -> None:
    secret = await make_key(store)
    clock = ManualClock()
    auth = Authenticator(store, ttl=2.0, clock=clock)
    await auth.authenticate(f"Bearer {secret}")
    clock.advance(1.999)
    await auth.authenticate(f"Bearer {secret}")
    assert store.lookups == 1
    clock.advance(0.001)
    await auth.authenticate(f"Bearer {secret}")
    assert store.lookups == 2


async def test_a_revocation_elsewhere_is_seen_once_the_cache_entry_expires(store: CountingStore) -> None:
    secret = await make_key(store)
    clock = ManualClock()
    auth = Authenticator(store, ttl=2.0, clock=clock)
    rec = await auth.authenticate(f"Bearer {secret}")
    assert await store.revoke_key(rec.id)  # another process revokes it
    await auth.authenticate(f"Bearer {secret}")  # still cached here
    clock.advance(2.0)
    with pytest.raises(AuthenticationFailed) as got:
        await auth.authenticate(f"Bearer {secret}")
    assert got.value.code == "key_revoked"


async def test_a_revocation_here_takes_effect_at_once(store: CountingStore) -> None:
    secret = await make_key(store)
    auth = Authenticator(store, ttl=3600.0, clock=ManualClock())
    rec = await auth.authenticate(f"Bearer {secret}")
    assert await store.revoke_key(rec.id)
    auth.forget(rec.id)
    with pytest.raises(AuthenticationFailed, match="revoked"):
        await auth.authenticate(f"Bearer {secret}")


async def test_an_unknown_key_is_cached_too_so_guessing_does_not_reach_the_store(store: CountingStore) -> None:
    auth = Authenticator(store, clock=ManualClock())
    unknown = new_key()[1]
    for _ in range(3):
        with pytest.raises(AuthenticationFailed, match="Incorrect API key"):
            await auth.authenticate(f"Bearer {unknown}")
    assert store.lookups == 1


async def test_an_expired_or_disabled_key_is_refused(store: CountingStore) -> None:
    auth = Authenticator(store, clock=ManualClock())
    for kw in ({"enabled": False}, {"expires_at": 1.0}):
        secret = await make_key(store, **kw)
        with pytest.raises(AuthenticationFailed, match="revoked or disabled"):
            await auth.authenticate(f"Bearer {secret}")


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer ", "Bearer sk-short"])
async def test_missing_or_malformed_credentials_are_refused(store: CountingStore, header: str | None) -> None:
    with pytest.raises(AuthenticationFailed):
        await Authenticator(store, clock=ManualClock()).authenticate(header)
    assert store.lookups == 0


async def test_a_wrong_secret_for_a_real_id_is_refused_without_echoing_it(store: CountingStore) -> None:
    secret = await make_key(store)
    forged = secret[:-4] + ("aaaa" if not secret.endswith("aaaa") else "bbbb")
    with pytest.raises(AuthenticationFailed) as got:
        await Authenticator(store, clock=ManualClock()).authenticate(f"Bearer {forged}")
    assert forged not in str(got.value) and secret not in str(got.value)
