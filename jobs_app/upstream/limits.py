"""Client-side rate limiting and circuit breaking for the mockup API.

The limiter follows what the upstream says (`X-Ratelimit-*`, `Retry-After`), so waiting for it
is free: it never consumes a task's retries. The breaker counts only failures that say the
upstream is unhealthy (5xx, timeouts, connection errors), never 429.
"""

from __future__ import annotations

import asyncio
import re
import time

import httpx

_POLICY = re.compile(r"^\s*(\d+)\s*;\s*w=(\d+)")


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

    async def wait(self) -> None:
        # A loop, not one sleep: a 429 seen meanwhile may push the deadline further out.
        while (delay := self.delay()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(delay)

    def update(self, response: httpx.Response) -> None:
        """Learn from a response's rate-limit headers."""
        headers = response.headers
        now = self.clock()
        if response.status_code == 429:
            self.blocked_until = max(self.blocked_until, now + _seconds(headers, "Retry-After", 1))
            return
        remaining = _int(headers.get("X-Ratelimit-Remaining"))
        self.remaining = remaining
        self.limit = _int(headers.get("X-Ratelimit-Limit"))
        if remaining == 0:
            # One token comes back every window/limit seconds.
            match = _POLICY.match(headers.get("X-Ratelimit-Policy", ""))
            per_token = int(match[2]) / int(match[1]) if match and int(match[1]) else 1.0
            self.blocked_until = max(self.blocked_until, now + per_token)


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _seconds(headers: httpx.Headers, name: str, default: float) -> float:
    try:
        return max(0.0, float(headers.get(name, default)))
    except ValueError:
        return default


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
