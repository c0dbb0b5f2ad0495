"""Per-key `rpm` toward the upstream: this instance's GCRA (`UpstreamKey.take`), or with Redis one GCRA
shared by every instance, so N instances send a key at most `rpm` requests a minute, not N x rpm.

The shared state is one Redis string per key, named by the key's fingerprint (never the secret), holding
its theoretical arrival time on the Redis server's clock; one Lua script checks and takes atomically. It
is a courtesy limit toward the upstream, not money: when Redis fails, the instance falls back to its own
GCRA (one warning per outage) and asks Redis again after `retry_after` seconds.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from sluice.channels.pool import UpstreamKey
from sluice.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger("sluice.channels")

# GCRA in milliseconds on the server's clock, the same rule as UpstreamKey.has_room/take: a request fits
# while tat - now <= 60 s - interval (a burst of up to rpm), and each one moves tat on by 60 s / rpm.
# KEYS: the key's tat; ARGV: rpm. Returns {1, tat - now} when taken, {0, ms until there is room} when not.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local interval = 60000 / tonumber(ARGV[1])
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or 0), now)
local over = tat - now - (60000 - interval)
if over > 0 then return {0, math.ceil(over)} end
tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.3f', tat), 'PX', math.ceil(tat - now) + 1000)
return {1, math.ceil(tat - now)}
"""


class KeyRates(Protocol):
    """Counts one request against a key's `rpm` (callers ask only for keys that have one)."""

    async def take(self, key: UpstreamKey) -> bool:
        """True and counted, or False (nothing counted) when the key is at its rate this minute."""
        ...

    async def aclose(self) -> None: ...


class LocalRates:
    """This instance's own GCRA, on `clock`."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock

    async def take(self, key: UpstreamKey) -> bool:
        return key.take(self._clock.monotonic())

    async def aclose(self) -> None:
        return None


class RedisRates:
    """The GCRA shared through Redis. Each answer is mirrored into the key's local `tat`, so the pool's
    order leaves out a key Redis reported full until it has room, without asking again."""

    def __init__(self, url: str, *, prefix: str = "sluice:uk:", clock: Clock = SYSTEM_CLOCK,
                 timeout: float = 0.5, retry_after: float = 5.0, client: aioredis.Redis | None = None) -> None:
        self._owns_client = client is None
        self._redis: aioredis.Redis = client if client is not None else aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._script = self._redis.register_script(_TAKE)
        self._prefix = prefix
        self._clock = clock
        self._retry_after = retry_after
        self._local_until = 0.0  # monotonic: while Redis is down, this instance's GCRA decides
        self._down = False

    async def take(self, key: UpstreamKey) -> bool:
        assert key.rpm is not None
        now = self._clock.monotonic()
        if now < self._local_until:
            return key.take(now)
        try:
            raw: Any = await self._script(keys=(f"{self._prefix}{{{key.id}}}:rpm",), args=(key.rpm,))
        except (RedisError, OSError) as exc:
            if not self._down:
                log.warning("shared key rates unavailable (%s); each instance limits its own rpm until Redis "
                            "answers", exc)
                self._down = True
            self._local_until = now + self._retry_after
            return key.take(now)
        if self._down:
            log.warning("shared key rates available again")
            self._down = False
        ok, ms = int(raw[0]), int(raw[1])
        # the local mirror: full (or not) as Redis said, on this instance's clock
        key.tat = now + ms / 1000.0 if ok else now + ms / 1000.0 + 60.0 - 60.0 / key.rpm
        return ok == 1

    async def aclose(self) -> None:
        if self._owns_client:
            await self._redis.aclose()


def key_rates(redis_url: str | None, clock: Clock = SYSTEM_CLOCK) -> KeyRates:
    """Shared through Redis when it is configured, else this instance's own."""
    return RedisRates(redis_url, clock=clock) if redis_url else LocalRates(clock)
