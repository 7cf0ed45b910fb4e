"""Token buckets per API key: MOCKUP_API_RATE_LIMIT requests, refilled evenly over the window."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """The outcome of one request against its bucket, with what the headers report."""

    allowed: bool
    limit: int
    window: int
    remaining: int
    reset_seconds: int  # until the bucket is full again
    retry_after: int  # until one token is back (0 when allowed)

    def headers(self) -> dict[str, str]:
        """Return the X-Ratelimit-* headers (and Retry-After when refused)."""
        headers = {
            "X-Ratelimit-Policy": f"{self.limit};w={self.window}",
            "X-Ratelimit-Limit": str(self.limit),
            "X-Ratelimit-Remaining": str(self.remaining),
            "X-Ratelimit-Reset": str(self.reset_seconds),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers


class RateLimiter:
    """Keep one token bucket per key; all calls happen on the event loop, so no lock is needed."""

    timer = staticmethod(time.monotonic)

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: str) -> Verdict:
        """Spend one token of `key`'s bucket if there is one."""
        # Read at call time: tests shrink the bucket with the `settings` fixture.
        limit = settings.MOCKUP_API_RATE_LIMIT
        window = settings.MOCKUP_API_RATE_WINDOW_SECONDS
        rate = limit / window  # tokens per second
        now = self.timer()
        tokens, at = self._buckets.get(key, (float(limit), now))
        tokens = min(float(limit), tokens + (now - at) * rate)
        allowed = tokens >= 1
        if allowed:
            tokens -= 1
        self._buckets[key] = (tokens, now)
        return Verdict(
            allowed=allowed,
            limit=limit,
            window=window,
            remaining=math.floor(tokens),
            reset_seconds=math.ceil((limit - tokens) / rate),
            retry_after=0 if allowed else max(1, math.ceil((1 - tokens) / rate)),
        )

    def reset(self) -> None:
        """Forget every bucket (tests)."""
        self._buckets.clear()


limiter = RateLimiter()
