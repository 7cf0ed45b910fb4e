"""The rate limiter and circuit breaker shared by every process of a deployment (REDIS_URL).

All workers call the mockup API with one key, so they share one upstream bucket and one
upstream's health. Each decision is one Lua script on Redis, timed by Redis `TIME`, so worker
clocks never matter and no two workers can take the same token. While Redis is unreachable
each class falls back to its in-process twin of `limits` (which it keeps fed all along): a
blink of Redis must never fail a task. See docs/upstream.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable

import httpx
from redis.asyncio import Redis
from redis.exceptions import RedisError

from jobs_app.redis_clients import lua_script, redis_client
from jobs_app.upstream.limits import CircuitBreaker, RateLimiter, RateLimitHeaders

logger = logging.getLogger(__name__)

KEY_PREFIX = "photobooth"
# After a failed Redis call, decide in-process for this long before trying Redis again, so a
# Redis that is down costs one connection attempt per few seconds, not one per call.
REDIS_RETRY_SECONDS = 5.0
# A policy outlives the bucket (expired after two refills) so that the first burst after a
# quiet spell is already limited; relearned from every response anyway.
POLICY_TTL_SECONDS = 24 * 3600
# Bucket state without a known policy (only a Retry-After or "Remaining: 0" to keep).
UNKNOWN_WINDOW_SECONDS = 60
# A failure streak this old says nothing about the upstream's health now.
BREAKER_TTL_SECONDS = 3600


def credential_key(api_key: str) -> str:
    """Return the part of a Redis key that names an API key without revealing it."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


class SharedStore:
    """Redis at one URL, or None answers while it is unreachable."""

    clock = staticmethod(time.monotonic)

    def __init__(self, url: str) -> None:
        self.url = url
        self._down_until = 0.0
        self._down = False

    async def run[T](self, command: Callable[[Redis], Awaitable[T]]) -> T | None:
        """Run command on Redis; return None (the caller decides in-process) when it fails."""
        if self.clock() < self._down_until:
            return None
        try:
            result = await command(redis_client(self.url))
        except (RedisError, OSError) as exc:
            # OSError includes TimeoutError. Warn once per outage, not once per call.
            if not self._down:
                logger.warning(
                    "upstream_limits_redis_unavailable error=%r fallback=in_process retry_in=%s",
                    exc,
                    REDIS_RETRY_SECONDS,
                )
            self._down = True
            self._down_until = self.clock() + REDIS_RETRY_SECONDS
            return None
        if self._down:
            logger.info("upstream_limits_redis_available")
            self._down = False
        return result


# --- The rate limiter: GCRA ---------------------------------------------------------------------

# GCRA keeps one number per bucket, the theoretical arrival time (tat): the bucket is full when
# tat <= now, and a call may go when tat - (limit - 1) * interval <= now, interval being
# window / limit. Times are milliseconds since the epoch, from Redis TIME.
# KEYS[1]: the bucket (hash: tat, blocked_until); KEYS[2]: the policy (hash: limit, window ms).
_NOW_AND_STATE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local state = redis.call('HMGET', KEYS[1], 'tat', 'blocked_until')
local tat = math.max(tonumber(state[1]) or now, now)
local blocked_until = tonumber(state[2]) or 0
local function known(limit, window)
  return limit ~= nil and window ~= nil and limit >= 1 and window > 0
end
"""

# Return 0 and take a token, or the milliseconds to wait (without taking one: the caller
# sleeps that long and asks again, since a 429 seen meanwhile may move the time).
ACQUIRE = lua_script(
    _NOW_AND_STATE
    + """
if blocked_until > now then
  return math.ceil(blocked_until - now)
end
local policy = redis.call('HMGET', KEYS[2], 'limit', 'window')
local limit, window = tonumber(policy[1]), tonumber(policy[2])
if not known(limit, window) then
  -- Nothing learned yet: let the call go; its response teaches the policy.
  return 0
end
local interval = window / limit
local allow_at = tat - (limit - 1) * interval
if allow_at > now then
  return math.ceil(allow_at - now)
end
redis.call('HSET', KEYS[1], 'tat', tat + interval)
-- tat - now <= window here, so after two windows the key says nothing (a full bucket).
redis.call('PEXPIRE', KEYS[1], math.ceil(2 * window))
return 0
"""
)

# Apply what a response said; every correction can only tighten the bucket, never loosen it
# (a response may be older than calls we already counted). Return the ms to wait now.
# ARGV: retry_after ms, limit, window ms, remaining, reset ms (each '' when not said),
# policy ttl ms, unknown-window ms.
LEARN = lua_script(
    _NOW_AND_STATE
    + """
local retry_after, limit, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local remaining, reset = tonumber(ARGV[4]), tonumber(ARGV[5])
if known(limit, window) then
  redis.call('HSET', KEYS[2], 'limit', limit, 'window', window)
  redis.call('PEXPIRE', KEYS[2], ARGV[6])
else
  local policy = redis.call('HMGET', KEYS[2], 'limit', 'window')
  limit, window = tonumber(policy[1]), tonumber(policy[2])
end
if retry_after then
  -- A 429 pauses every worker until the upstream's Retry-After (BullMQ's rateLimit).
  blocked_until = math.max(blocked_until, now + retry_after)
end
local policy_known = known(limit, window)
local interval = policy_known and window / limit or 0
if remaining and policy_known then
  -- "Remaining R" puts the upstream's tat at most at now + (limit - R) * interval and "Reset
  -- S" at most at now + S; both round towards fewer tokens, so the smaller one is closer.
  -- (A Reset of 0 with tokens missing contradicts itself: then Remaining rules.)
  local upstream_tat = now + math.max(0, limit - remaining) * interval
  if reset and reset > 0 then
    upstream_tat = math.min(upstream_tat, now + reset)
  end
  tat = math.max(tat, upstream_tat)
elseif remaining and remaining <= 0 then
  -- No policy to tell when a token is back: hold calls for a second, as in-process.
  blocked_until = math.max(blocked_until, now + 1000)
end
local refill = policy_known and window or tonumber(ARGV[7])
redis.call('HSET', KEYS[1], 'tat', tat, 'blocked_until', blocked_until)
redis.call('PEXPIRE', KEYS[1], math.ceil(math.max(tat, blocked_until, now) - now + refill))
local wait_until = blocked_until
if policy_known then
  wait_until = math.max(wait_until, tat - (limit - 1) * interval)
end
return math.ceil(math.max(0, wait_until - now))
"""
)


class SharedRateLimiter:
    """Hold calls back while the deployment's share of the upstream's bucket is empty."""

    def __init__(self, store: SharedStore, credential: str) -> None:
        self.store = store
        self.bucket_key = f"{KEY_PREFIX}:upstream-rl:{credential}"
        self.policy_key = f"{self.bucket_key}:policy"
        self.local = RateLimiter()  # the fallback while Redis is down

    async def wait(self, give_up_at: float | None = None) -> bool:
        """Take a token, sleeping until one is free; return False at once if that would pass
        give_up_at (a loop time)."""
        loop = asyncio.get_running_loop()
        keys = (self.bucket_key, self.policy_key)
        # Sleeps exactly as long as Redis says, then asks again: no tight polling.
        while True:
            wait_ms = await self.store.run(lambda redis: ACQUIRE(keys, client=redis))
            if wait_ms is None:
                return await self.local.wait(give_up_at)
            if wait_ms <= 0:
                return True
            if give_up_at is not None and loop.time() + wait_ms / 1000 > give_up_at:
                return False
            await asyncio.sleep(wait_ms / 1000)

    async def learn(self, response: httpx.Response) -> None:
        """Learn from a response's rate-limit headers, for every worker."""
        self.local.update(response)
        said = RateLimitHeaders.parse(response)
        if said.retry_after is None and said.policy is None and said.remaining is None:
            return  # e.g. a proxy's error page: nothing to learn, no round trip
        limit, window = said.policy or (None, None)
        args = (
            _ms(said.retry_after),
            "" if limit is None else limit,
            _ms(window),
            "" if said.remaining is None else said.remaining,
            _ms(said.reset),
            POLICY_TTL_SECONDS * 1000,
            UNKNOWN_WINDOW_SECONDS * 1000,
        )
        keys = (self.bucket_key, self.policy_key)
        await self.store.run(lambda redis: LEARN(keys, args, client=redis))


def _ms(seconds: float | None) -> str:
    return "" if seconds is None else str(round(seconds * 1000))


# --- The circuit breaker --------------------------------------------------------------------

# KEYS[1]: hash (failures, opened_at ms). ARGV[1]: cooldown ms, ARGV[2]: key ttl ms.
# Return {allowed, failures, ms until the cooldown ends}.
ADMIT = lua_script(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local cooldown = tonumber(ARGV[1])
local state = redis.call('HMGET', KEYS[1], 'failures', 'opened_at')
local failures = tonumber(state[1]) or 0
local opened_at = tonumber(state[2])
if not opened_at then
  return {1, failures, 0}
end
if now - opened_at < cooldown then
  return {0, failures, math.ceil(opened_at + cooldown - now)}
end
-- Half-open: this caller is the deployment's one trial. Re-arm the cooldown so the calls
-- racing it, in any process, wait; its success closes the breaker, its failure keeps it open.
redis.call('HSET', KEYS[1], 'opened_at', now)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {1, failures, cooldown}
"""
)

# KEYS[1]: as ADMIT. ARGV[1]: threshold, ARGV[2]: cooldown ms, ARGV[3]: key ttl ms.
# Count one health failure; return {failures, ms until the cooldown ends}.
RECORD_FAILURE = lua_script(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local cooldown = tonumber(ARGV[2])
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local left = 0
if failures >= tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'opened_at', now)
  left = cooldown
else
  local opened_at = tonumber(redis.call('HGET', KEYS[1], 'opened_at'))
  if opened_at then
    left = math.max(0, opened_at + cooldown - now)
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {failures, math.ceil(left)}
"""
)


class SharedCircuitBreaker:
    """Open for every worker after `threshold` consecutive health failures in any of them; let
    one call of the deployment through after `cooldown`.

    `is_open` and `retry_in()` are synchronous (the dispatcher reads them in its tick), so they
    answer from the state Redis returned at this process's last call: a breaker another worker
    opened shows here once this process's next call has been refused.
    """

    clock = staticmethod(time.monotonic)

    def __init__(
        self, store: SharedStore, credential: str, threshold: int = 5, cooldown: float = 10.0
    ) -> None:
        self.store = store
        self.key = f"{KEY_PREFIX}:upstream-cb:{credential}"
        self.threshold = threshold
        self.cooldown = cooldown
        self.local = CircuitBreaker(threshold, cooldown)  # the fallback while Redis is down
        self.failures = 0  # as of the last answer
        self._open_until = 0.0  # self.clock() time

    @property
    def is_open(self) -> bool:
        return self.clock() < self._open_until

    def retry_in(self) -> float:
        return max(0.0, self._open_until - self.clock())

    def _ttl_ms(self) -> int:
        return round(max(BREAKER_TTL_SECONDS, 2 * self.cooldown) * 1000)

    def _remember(self, failures: int, retry_in: float) -> None:
        self.failures = failures
        self._open_until = self.clock() + retry_in

    async def admit(self) -> bool:
        """Return whether a call may go out now: always when closed, one trial per cooldown."""
        args = (round(self.cooldown * 1000), self._ttl_ms())
        answer = await self.store.run(lambda redis: ADMIT((self.key,), args, client=redis))
        if answer is None:
            allowed = self.local.allow()
            self._remember(self.local.failures, self.local.retry_in())
            return allowed
        allowed, failures, left_ms = answer
        self._remember(failures, left_ms / 1000)
        return bool(allowed)

    async def record(self, *, healthy: bool) -> None:
        """Count a call's outcome: healthy unless 5xx, a timeout or a connection error."""
        if healthy:
            self.local.record_success()
            # Any success, in any worker, ends the streak and closes the breaker.
            done = await self.store.run(lambda redis: redis.delete(self.key))
            if done is None:
                self._remember(self.local.failures, self.local.retry_in())
            else:
                self._remember(0, 0.0)
            return
        self.local.record_failure()
        args = (self.threshold, round(self.cooldown * 1000), self._ttl_ms())
        answer = await self.store.run(lambda redis: RECORD_FAILURE((self.key,), args, client=redis))
        if answer is None:
            self._remember(self.local.failures, self.local.retry_in())
        else:
            failures, left_ms = answer
            self._remember(failures, left_ms / 1000)
