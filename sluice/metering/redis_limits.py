"""Rate limits shared by many Sluice processes through Redis: one Lua script per operation, so the
check and the take are atomic; the clock is the Redis server's, so processes need not agree on time.
"""

from __future__ import annotations

import logging
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from sluice.errors import SluiceError
from sluice.metering.limits import DEFAULT_STALE_AFTER, WINDOW_MS, Check, LimitSpec, conclude

log = logging.getLogger("sluice.limits")

# The same integer arithmetic as limits.check(); a bucket is a hash {s: debt, t: written_ms} that
# expires once drained. Concurrency is a sorted set of request ids scored by admission time; members
# older than the stale TTL are dropped first, so slots held by a killed process come back.
# Lua numbers are doubles: every value stays an integer below 2^53 for limits below ~10^11.
_PRELUDE = """
local W = tonumber(ARGV[1])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

local function debt(key, limit)
  local v = redis.call('HMGET', key, 's', 't')
  if not v[1] then return 0 end
  local elapsed = math.max(0, now - tonumber(v[2]))
  return math.max(0, tonumber(v[1]) - elapsed * limit)
end

local function store(key, d, limit)
  if d <= 0 then
    redis.call('DEL', key)
  else
    redis.call('HSET', key, 's', string.format('%.0f', d), 't', string.format('%.0f', now))
    redis.call('PEXPIRE', key, math.ceil(d / limit) + 1000)
  end
end
"""

_ADMIT = _PRELUDE + """
-- KEYS: requests bucket, tokens bucket, slots; ARGV: W, rpm, tpm, max_concurrency (0 = unset), cost, id, stale_ms
local rpm, tpm, maxc = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local cost, rid, stale = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])

local function check(d, limit, c)
  local cap = limit * W
  local after = d + c * W
  if after <= cap then
    return {1, math.floor((cap - after) / W), math.ceil(after / limit), 0, after}
  end
  local wait = -1
  if c <= limit then wait = math.ceil((after - cap) / limit) end
  return {0, math.floor(math.max(0, cap - d) / W), math.ceil(d / limit), wait, d}
end

-- out: rpm ok, remaining, reset_ms, wait_ms; the same for tpm; slots ok
local out = {0, 0, 0, 0, 0, 0, 0, 0, 1}
local all_ok = true
local r, t
if rpm > 0 then
  r = check(debt(KEYS[1], rpm), rpm, 1)
  out[1], out[2], out[3], out[4] = r[1], r[2], r[3], r[4]
  all_ok = all_ok and r[1] == 1
end
if tpm > 0 then
  t = check(debt(KEYS[2], tpm), tpm, cost)
  out[5], out[6], out[7], out[8] = t[1], t[2], t[3], t[4]
  all_ok = all_ok and t[1] == 1
end
if maxc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - stale)
  if not redis.call('ZSCORE', KEYS[3], rid) and redis.call('ZCARD', KEYS[3]) >= maxc then
    out[9] = 0
    all_ok = false
  end
end
if all_ok then
  if rpm > 0 then store(KEYS[1], r[5], rpm) end
  if tpm > 0 then store(KEYS[2], t[5], tpm) end
  if maxc > 0 then
    redis.call('ZADD', KEYS[3], now, rid)
    redis.call('PEXPIRE', KEYS[3], stale)
  end
end
return out
"""

_RELEASE = _PRELUDE + """
-- KEYS: tokens bucket, slots; ARGV: W, tpm (0 = unset), tokens used - reserved, id
local tpm, delta = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREM', KEYS[2], ARGV[4])
if tpm > 0 and delta ~= 0 then
  store(KEYS[1], debt(KEYS[1], tpm) + delta * W, tpm)
end
return 1
"""


class RedisLimiter:
    """Limits shared across processes. Keys are `<prefix>{<scope>}:req|tok|slots`; the braces keep one
    scope's keys in one Redis Cluster slot, as a multi-key script needs. All keys expire on their own.

    When Redis cannot answer within `timeout` seconds, `admit` refuses with a 503 (retry-after 1 s), or
    with `fail_open` admits without limits and logs a warning; `release` logs and carries on either way
    (a slot it could not free is dropped after `stale_after`).
    """

    def __init__(self, url: str, *, prefix: str = "sluice:rl:", stale_after: float = DEFAULT_STALE_AFTER,
                 timeout: float = 2.0, fail_open: bool = False, client: aioredis.Redis | None = None) -> None:
        self._owns_client = client is None
        self._redis: aioredis.Redis = client if client is not None else aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._prefix = prefix
        self._fail_open = fail_open
        self._stale_ms = max(1, round(stale_after * 1000))
        self._admit = self._redis.register_script(_ADMIT)
        self._release = self._redis.register_script(_RELEASE)

    def _keys(self, scope: str) -> tuple[str, str, str]:
        base = f"{self._prefix}{{{scope}}}"
        return f"{base}:req", f"{base}:tok", f"{base}:slots"

    async def admit(self, scope: str, spec: LimitSpec, request_id: str, tokens: int) -> list[tuple[bytes, bytes]]:
        if spec.empty:
            return []
        cost = max(0, tokens)
        args = (WINDOW_MS, spec.rpm or 0, spec.tpm or 0, spec.max_concurrency or 0, cost, request_id, self._stale_ms)
        try:
            raw: Any = await self._admit(keys=self._keys(scope), args=args)
        except (RedisError, OSError) as exc:
            if self._fail_open:
                log.warning("rate limiter unavailable (%s); admitting %s unchecked", exc, scope)
                return []
            raise SluiceError("The rate limiter is unavailable; please try again.", status=503,
                              code="rate_limiter_unavailable", retry_after=1.0) from exc
        v = [int(x) for x in raw]
        req = Check(v[0] == 1, v[1], v[2], v[3]) if spec.rpm is not None else None
        tok = Check(v[4] == 1, v[5], v[6], v[7]) if spec.tpm is not None else None
        return conclude(scope, spec, cost, req, tok, v[8] == 1)

    async def release(self, scope: str, spec: LimitSpec, request_id: str, tokens_reserved: int,
                      tokens_used: int) -> None:
        delta = max(0, tokens_used) - max(0, tokens_reserved)
        if spec.max_concurrency is None and (spec.tpm is None or delta == 0):
            return
        _, tok_key, slots_key = self._keys(scope)
        try:
            await self._release(keys=(tok_key, slots_key), args=(WINDOW_MS, spec.tpm or 0, delta, request_id))
        except (RedisError, OSError) as exc:
            log.warning("rate limiter unavailable (%s); could not release %s for %s", exc, request_id, scope)

    async def ping(self) -> None:
        """Raises when Redis does not answer (the readiness probe)."""
        await self._redis.ping()

    async def aclose(self) -> None:
        if self._owns_client:
            await self._redis.aclose()
