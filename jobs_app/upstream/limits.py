"""Client-side rate limiting and circuit breaking for the mockup API.

The limiter follows what the upstream says (`X-Ratelimit-*`, `Retry-After`), so waiting for it
is free: it never consumes a task's retries. The breaker counts only failures that say the
upstream is unhealthy (5xx, timeouts, connection errors), never 429.

These classes keep their state in this process. With REDIS_URL set, the client uses the
deployment-wide ones of `shared_limits` instead, which fall back to these while Redis is down.
Both kinds offer the async surface of `Limiter` and `Breaker`, which is all the client uses.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from dataclasses import dataclass
from typing import Protocol

import httpx

_POLICY = re.compile(r"^\s*(\d+)\s*;\s*w=(\d+)")


class Limiter(Protocol):
    """What the client needs of a rate limiter."""

    async def wait(self, give_up_at: float | None = None) -> bool:
        """Wait until a call may go out; return False at once if that would pass give_up_at."""
        ...

    async def learn(self, response: httpx.Response) -> None:
        """Learn from a response's rate-limit headers."""
        ...


class Breaker(Protocol):
    """What the client (and the dispatcher, synchronously) needs of a circuit breaker."""

    @property
    def is_open(self) -> bool: ...

    def retry_in(self) -> float: ...

    async def admit(self) -> bool:
        """Return whether a call may go out now."""
        ...

    async def record(self, *, healthy: bool) -> None:
        """Count a call's outcome: healthy unless 5xx, a timeout or a connection error."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimitHeaders:
    """What one response says about the upstream's bucket (None: not said, or unusable)."""

    retry_after: float | None  # seconds; only on a 429, 1 when missing or unusable
    limit: int | None  # X-Ratelimit-Limit
    policy: tuple[int, int] | None  # (limit, window seconds) of X-Ratelimit-Policy
    remaining: int | None
    reset: float | None  # seconds until the bucket is full again

    @classmethod
    def parse(cls, response: httpx.Response) -> RateLimitHeaders:
        """Read the rate-limit headers of a response."""
        headers = response.headers
        match = _POLICY.match(headers.get("X-Ratelimit-Policy", ""))
        policy = (int(match[1]), int(match[2])) if match and int(match[1]) else None
        retry_after = _seconds(headers, "Retry-After", 1) if response.status_code == 429 else None
        reset = _seconds(headers, "X-Ratelimit-Reset", -1.0)  # -1: unusable
        return cls(
            retry_after=retry_after,
            limit=_int(headers.get("X-Ratelimit-Limit")),
            policy=policy,
            remaining=_int(headers.get("X-Ratelimit-Remaining")),
            reset=reset if "X-Ratelimit-Reset" in headers and reset >= 0 else None,
        )


class RateLimiter:
    """Hold calls back while the upstream's bucket is empty."""

    clock = staticmethod(time.monotonic)

    def __init__(self) -> None:
        self.blocked_until = 0.0
        self.limit: int | None = None
        self.remaining: int | None = None

    def delay(self) -> float:
        """Return how long to wait before the next call."""
        return max(0.0, self.blocked_until - self.clock())

    async def wait(self, give_up_at: float | None = None) -> bool:
        """Wait until a call may go out; return False at once if that would pass give_up_at."""
        loop = asyncio.get_running_loop()
        # A loop, not one sleep: a 429 seen meanwhile may push the deadline further out.
        while (delay := self.delay()) > 0:
            if give_up_at is not None and loop.time() + delay > give_up_at:
                return False
            await asyncio.sleep(delay)
        return True

    async def learn(self, response: httpx.Response) -> None:
        """Learn from a response's rate-limit headers."""
        self.update(response)

    def update(self, response: httpx.Response) -> None:
        """Learn from a response's rate-limit headers."""
        said = RateLimitHeaders.parse(response)
        now = self.clock()
        if said.retry_after is not None:
            self.blocked_until = max(self.blocked_until, now + said.retry_after)
            return
        self.remaining = said.remaining
        self.limit = said.limit
        if said.remaining == 0:
            # One token comes back every window/limit seconds.
            per_token = said.policy[1] / said.policy[0] if said.policy else 1.0
            self.blocked_until = max(self.blocked_until, now + per_token)


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _seconds(headers: httpx.Headers, name: str, default: float) -> float:
    try:
        seconds = float(headers.get(name, default))
    except ValueError:
        return default
    # "inf" and "nan" parse as floats, but would block calls forever (or never).
    return max(0.0, seconds) if math.isfinite(seconds) else default


class CircuitBreaker:
    """Open after `threshold` consecutive health failures; let one call through after `cooldown`."""

    clock = staticmethod(time.monotonic)

    def __init__(self, threshold: int = 5, cooldown: float = 10.0) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.failures = 0
        self.opened_at: float | None = None

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None and self.clock() - self.opened_at < self.cooldown

    def allow(self) -> bool:
        """Return whether a call may go out now: always when closed, one trial per cooldown."""
        if self.opened_at is None:
            return True
        if self.is_open:
            return False
        # Half-open: this call is the trial. Re-arm the cooldown so the calls racing it wait;
        # its success closes the breaker, its failure keeps it open.
        self.opened_at = self.clock()
        return True

    def retry_in(self) -> float:
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.cooldown - (self.clock() - self.opened_at))

    def record_success(self) -> None:
        self.failures = 0
        self.opened_at = None

    def record_failure(self) -> None:
        self.failures += 1
        if self.failures >= self.threshold:
            self.opened_at = self.clock()

    async def admit(self) -> bool:
        """Return whether a call may go out now (the client's async surface of `allow`)."""
        return self.allow()

    async def record(self, *, healthy: bool) -> None:
        """Count a call's outcome: healthy unless 5xx, a timeout or a connection error."""
        if healthy:
            self.record_success()
        else:
            self.record_failure()
