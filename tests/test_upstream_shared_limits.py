"""With REDIS_URL set, every worker shares one rate limiter and one circuit breaker on Redis.

Each test gets its own API key, hence its own Redis keys, so parallel runs never meet. Limits
are chosen so that no assertion depends on how fast the machine is: a window of an hour makes
the next token 12 minutes away, far past the client's 120 s give-up, so over-limit calls are
refused at once instead of after a race.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from jobs_app.redis_clients import close_redis_clients, redis_client
from jobs_app.upstream import shared_limits
from jobs_app.upstream.client import UpstreamClient
from jobs_app.upstream.errors import CircuitOpen, UpstreamError
from jobs_app.upstream.shared_limits import (
    SharedCircuitBreaker,
    SharedRateLimiter,
    SharedStore,
    credential_key,
)
from mockup_api.ratelimit import RateLimiter as UpstreamBucket

pytestmark = pytest.mark.redis
REDIS_URL = "redis://127.0.0.1:6379/0"
NO_REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1: connections are refused


class FakeUpstream:
    """The mockup API's edge: its real token bucket and headers, answers on request, and a log
    of what reached it. Thread-safe, since a second worker may run on its own loop."""

    def __init__(self) -> None:
        self.bucket = UpstreamBucket()  # reads MOCKUP_API_RATE_* at call time
        self.script: list[httpx.Response] = []  # answered first, in order, bucket untouched
        self.arrivals: list[float] = []  # time.monotonic() of each request
        self.refused = 0  # 429s of the bucket: requests over the limit
        self._lock = threading.Lock()

    def handle(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.arrivals.append(time.monotonic())
            if self.script:
                return self.script.pop(0)
            verdict = self.bucket.take("key")
            if not verdict.allowed:
                self.refused += 1
                return httpx.Response(429, headers=verdict.headers(), json={"error": "slow"})
            return httpx.Response(200, headers=verdict.headers(), json={"data": []})

    @property
    def requests(self) -> int:
        return len(self.arrivals)


@pytest.fixture
async def credential(settings) -> AsyncIterator[str]:
    """Point the client at Redis and a fake upstream, with an API key of this test's own."""
    settings.REDIS_URL = REDIS_URL
    settings.MOCKUP_API_URL = "http://upstream.invalid/api"
    settings.MOCKUP_API_KEY = f"test-{uuid.uuid4().hex}"
    credential = credential_key(settings.MOCKUP_API_KEY)
    yield credential
    redis = redis_client(REDIS_URL)
    keys = [key async for key in redis.scan_iter(match=f"photobooth:upstream-*:{credential}*")]
    if keys:
        await redis.delete(*keys)
    await close_redis_clients()


@pytest.fixture
def upstream() -> FakeUpstream:
    return FakeUpstream()


def worker(upstream: FakeUpstream) -> UpstreamClient:
    """Return a client as one worker process has it (its own limiter and breaker objects)."""
    client = UpstreamClient()
    client.transport = httpx.MockTransport(upstream.handle)
    return client


async def hammer(client: UpstreamClient, calls: int) -> list[object]:
    calls_made = (client.catalog() for _ in range(calls))
    results = await asyncio.gather(*calls_made, return_exceptions=True)
    await client.close()
    return results


def in_its_own_loop(client: UpstreamClient, calls: int) -> list[object]:
    """Hammer from a thread with its own event loop, hence its own Redis connections."""
    return asyncio.run(hammer(client, calls))


# --- The rate limiter -------------------------------------------------------------------------


async def test_two_workers_never_exceed_the_upstream_limit(settings, credential, upstream):
    settings.MOCKUP_API_RATE_LIMIT, settings.MOCKUP_API_RATE_WINDOW_SECONDS = 5, 3600
    first, second = worker(upstream), worker(upstream)
    assert isinstance(first.limiter, SharedRateLimiter)
    await first.catalog()  # teaches the policy: 5 per hour, 4 left

    # The second worker has never seen a response: it knows the policy from Redis.
    results_first, results_second = await asyncio.gather(
        hammer(first, 10), asyncio.to_thread(in_its_own_loop, second, 10)
    )

    assert upstream.refused == 0
    assert upstream.requests == 5  # the first call and exactly the 4 tokens left
    results = results_first + results_second
    assert sum(result == [] for result in results) == 4
    refused = [result for result in results if isinstance(result, UpstreamError)]
    assert len(refused) == 16
    assert {(error.code, error.permanent) for error in refused} == {
        ("upstream_rate_limited", False)
    }


async def test_a_429_in_one_worker_holds_back_every_worker(credential, upstream):
    first, second = worker(upstream), worker(upstream)
    upstream.script.append(httpx.Response(429, headers={"Retry-After": "3600"}))
    with pytest.raises(UpstreamError) as first_raised:
        await first.catalog()
    with pytest.raises(UpstreamError) as second_raised:
        await second.catalog()
    assert first_raised.value.code == second_raised.value.code == "upstream_rate_limited"
    assert upstream.requests == 1  # the second worker waited without calling
    assert first.breaker.failures == second.breaker.failures == 0  # a 429 is no ill health
    await first.close()


async def test_every_worker_sleeps_out_a_retry_after_then_calls(credential, upstream, monkeypatch):
    first, second = worker(upstream), worker(upstream)
    upstream.script.append(httpx.Response(429, headers={"Retry-After": "1"}))
    learned = asyncio.Event()
    learn = first.limiter.learn

    async def learn_and_tell(response: httpx.Response) -> None:
        await learn(response)
        learned.set()

    monkeypatch.setattr(first.limiter, "learn", learn_and_tell)
    first_call = asyncio.create_task(first.catalog())
    # Start the second worker once the 429 is on Redis (the first is then asleep).
    await asyncio.wait_for(learned.wait(), 10)
    assert await asyncio.gather(first_call, second.catalog()) == [[], []]
    refused_at, *later = upstream.arrivals
    assert len(later) == 2
    # A lower bound only: a loaded machine makes it later, never earlier.
    assert min(later) - refused_at >= 0.9
    await first.close()


async def test_a_worker_sleeps_until_its_token_instead_of_polling(credential, monkeypatch):
    limiter = SharedRateLimiter(SharedStore(REDIS_URL), credential)
    headers = {"X-Ratelimit-Policy": "2;w=1", "X-Ratelimit-Remaining": "0"}
    await limiter.learn(httpx.Response(200, headers=headers))  # next token in 0.5 s
    asks = []

    async def counted(*args: object, **kwargs: object) -> object:
        asks.append(args)
        return await acquire(*args, **kwargs)

    acquire = shared_limits.ACQUIRE
    monkeypatch.setattr(shared_limits, "ACQUIRE", counted)
    started = time.monotonic()
    assert await limiter.wait() is True
    assert time.monotonic() - started >= 0.4
    assert len(asks) <= 3  # asked, slept the answer, asked again (a rare extra on a boundary)


async def test_a_stale_remaining_header_never_loosens_the_shared_bucket(credential):
    limiter = SharedRateLimiter(SharedStore(REDIS_URL), credential)
    policy = {"X-Ratelimit-Policy": "5;w=3600"}
    await limiter.learn(httpx.Response(200, headers={**policy, "X-Ratelimit-Remaining": "1"}))
    # An answer to a call that went out earlier arrives late, with more tokens left.
    await limiter.learn(httpx.Response(200, headers={**policy, "X-Ratelimit-Remaining": "4"}))
    give_up_at = asyncio.get_running_loop().time() + 120
    assert [await limiter.wait(give_up_at) for _ in range(3)] == [True, False, False]


async def test_the_shared_bucket_expires_after_about_two_refills(credential):
    limiter = SharedRateLimiter(SharedStore(REDIS_URL), credential)
    headers = {"X-Ratelimit-Policy": "5;w=60", "X-Ratelimit-Remaining": "4"}
    await limiter.learn(httpx.Response(200, headers=headers))
    assert await limiter.wait() is True
    redis = redis_client(REDIS_URL)
    assert 60_000 < await redis.pttl(limiter.bucket_key) <= 120_000
    # The policy outlives it, so the first burst after a quiet spell is limited too.
    assert await redis.ttl(limiter.policy_key) > 120


# --- The circuit breaker ----------------------------------------------------------------------


async def test_a_breaker_opened_by_one_worker_refuses_calls_in_the_other(credential, upstream):
    first, second = worker(upstream), worker(upstream)
    assert isinstance(first.breaker, SharedCircuitBreaker)
    upstream.script += [httpx.Response(503) for _ in range(first.breaker.threshold)]
    for _ in range(first.breaker.threshold):
        with pytest.raises(UpstreamError):
            await first.catalog()
    assert first.breaker.is_open

    with pytest.raises(CircuitOpen) as raised:
        await second.catalog()
    assert upstream.requests == first.breaker.threshold  # the second never called
    assert raised.value.retry_in > 0
    # The dispatcher's synchronous reads now see it too.
    assert second.breaker.is_open and second.breaker.retry_in() > 0
    await first.close()


async def test_only_one_worker_gets_the_half_open_trial(credential):
    first, second = (SharedCircuitBreaker(SharedStore(REDIS_URL), credential) for _ in range(2))
    for _ in range(first.threshold):
        await first.record(healthy=False)
    # Let the cooldown pass without waiting for it: move the opening back in Redis.
    redis = redis_client(REDIS_URL)
    opened_at = float(await redis.hget(first.key, "opened_at"))
    await redis.hset(first.key, "opened_at", opened_at - first.cooldown * 1000)

    admitted = await asyncio.gather(*(breaker.admit() for breaker in [first, second] * 5))
    assert admitted.count(True) == 1
    assert first.is_open and second.is_open  # the calls racing the trial wait

    trial = [first, second][admitted.index(True) % 2]
    await trial.record(healthy=True)
    assert await first.admit() and await second.admit()


# --- Without Redis ----------------------------------------------------------------------------


async def test_a_worker_goes_on_in_process_while_redis_is_down(
    settings, credential, upstream, caplog
):
    settings.REDIS_URL = NO_REDIS_URL
    client = worker(upstream)
    upstream.script += [httpx.Response(429, headers={"Retry-After": "0"})]
    with caplog.at_level(logging.WARNING, logger="jobs_app.upstream.shared_limits"):
        assert await client.catalog() == []
        assert upstream.requests == 2  # the 429, then its retry
        upstream.script += [httpx.Response(503) for _ in range(client.breaker.threshold)]
        for _ in range(client.breaker.threshold):
            with pytest.raises(UpstreamError):
                await client.catalog()
        with pytest.raises(CircuitOpen):
            await client.catalog()  # the in-process breaker opened
    assert upstream.requests == 2 + client.breaker.threshold
    assert client.breaker.is_open
    warnings = [r for r in caplog.records if "redis_unavailable" in r.getMessage()]
    assert len(warnings) == 1  # once per outage, not once per call
    await client.close()
