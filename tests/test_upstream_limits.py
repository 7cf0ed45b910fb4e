"""The upstream client's rate limiter and circuit breaker (with a fake clock), and how it
classifies the upstream's answers."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from jobs_app.upstream.client import UpstreamClient
from jobs_app.upstream.errors import CircuitOpen, UpstreamError
from jobs_app.upstream.limits import CircuitBreaker, RateLimiter


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _response(status: int = 200, **headers: str) -> httpx.Response:
    return httpx.Response(status, headers={k.replace("_", "-"): v for k, v in headers.items()})


# --- RateLimiter ------------------------------------------------------------------------------


@pytest.fixture
def limiter(clock: FakeClock) -> RateLimiter:
    limiter = RateLimiter()
    limiter.clock = clock
    return limiter


def test_the_limiter_lets_calls_go_while_the_bucket_has_tokens(limiter):
    assert limiter.delay() == 0
    limiter.update(_response(X_Ratelimit_Limit="3", X_Ratelimit_Remaining="2"))
    assert (limiter.limit, limiter.remaining, limiter.delay()) == (3, 2, 0)


def test_an_empty_bucket_holds_calls_until_one_token_is_back(limiter, clock):
    headers = {"X_Ratelimit_Policy": "3;w=2", "X_Ratelimit_Limit": "3"}
    limiter.update(_response(X_Ratelimit_Remaining="0", **headers))
    assert limiter.delay() == pytest.approx(2 / 3)  # one token every window/limit seconds
    clock.advance(0.5)
    assert limiter.delay() == pytest.approx(2 / 3 - 0.5)
    clock.advance(0.5)
    assert limiter.delay() == 0


def test_a_429_holds_calls_for_its_retry_after(limiter, clock):
    limiter.update(_response(429, Retry_After="5"))
    assert limiter.delay() == 5
    # A success seen meanwhile (a call that went out earlier) never shortens the wait.
    limiter.update(_response(X_Ratelimit_Limit="3", X_Ratelimit_Remaining="2"))
    clock.advance(2)
    assert limiter.delay() == 3


def test_a_429_without_a_usable_retry_after_waits_one_second(limiter, clock):
    limiter.update(_response(429))
    assert limiter.delay() == 1
    clock.advance(1)
    limiter.update(_response(429, Retry_After="soon"))
    assert limiter.delay() == 1


async def test_waiting_returns_once_the_delay_is_over():
    limiter = RateLimiter()
    limiter.blocked_until = time.monotonic() + 0.05
    started = time.monotonic()
    await asyncio.wait_for(limiter.wait(), 5)
    assert time.monotonic() - started >= 0.05
    assert limiter.delay() == 0


# --- CircuitBreaker ---------------------------------------------------------------------------


@pytest.fixture
def breaker(clock: FakeClock) -> CircuitBreaker:
    breaker = CircuitBreaker(threshold=3, cooldown=10)
    breaker.clock = clock
    return breaker


def test_the_breaker_opens_after_threshold_failures_in_a_row(breaker):
    for _ in range(2):
        breaker.record_failure()
    assert breaker.allow() and not breaker.is_open
    breaker.record_failure()
    assert breaker.is_open and not breaker.allow()
    assert breaker.retry_in() == 10


def test_a_success_in_between_starts_the_count_over(breaker):
    for _ in range(2):
        breaker.record_failure()
    breaker.record_success()
    for _ in range(2):
        breaker.record_failure()
    assert breaker.allow() and not breaker.is_open


def test_after_the_cooldown_one_trial_call_goes_through(breaker, clock):
    for _ in range(3):
        breaker.record_failure()
    clock.advance(4)
    assert not breaker.allow() and breaker.retry_in() == 6
    clock.advance(6)
    assert breaker.allow()  # the trial
    assert not breaker.allow() and not breaker.allow()  # the calls racing it wait
    assert breaker.retry_in() == 10


def test_a_failed_trial_keeps_it_open_and_a_successful_one_closes_it(breaker, clock):
    for _ in range(3):
        breaker.record_failure()
    clock.advance(10)
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.is_open and not breaker.allow()
    clock.advance(10)
    assert breaker.allow()
    breaker.record_success()
    assert [breaker.allow() for _ in range(3)] == [True, True, True]
    assert breaker.retry_in() == 0


def test_a_trial_that_never_reports_back_gets_another_after_the_next_cooldown(breaker, clock):
    for _ in range(3):
        breaker.record_failure()
    clock.advance(10)
    assert breaker.allow()  # e.g. it gave up waiting for the rate limiter
    clock.advance(10)
    assert breaker.allow()


# --- The client's classification of answers ---------------------------------------------------


@pytest.fixture
def upstream(settings):
    """An UpstreamClient whose HTTP edge is a list of canned answers."""
    settings.MOCKUP_API_URL = "http://upstream.invalid/api"
    settings.MOCKUP_API_KEY = "key"
    answers: list[httpx.Response] = []
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0)

    client = UpstreamClient()
    client.transport = httpx.MockTransport(handle)
    return client, answers, seen


async def test_a_429_is_waited_out_and_retried_without_counting_as_a_failure(upstream):
    client, answers, seen = upstream
    answers += [
        httpx.Response(429, headers={"Retry-After": "0"}),
        httpx.Response(200, json={"data": [{"id": 71}]}),
    ]
    assert await client.catalog() == [{"id": 71}]
    assert len(seen) == 2 and client.breaker.failures == 0
    assert seen[0].headers["Authorization"] == "Bearer key"
    await client.close()


async def test_a_5xx_is_transient_and_counts_toward_the_breaker(upstream):
    client, answers, _ = upstream
    answers.append(httpx.Response(503))
    with pytest.raises(UpstreamError) as raised:
        await client.get_generation("gt_1")
    assert (raised.value.permanent, raised.value.status) == (False, 503)
    assert raised.value.code == "upstream_unavailable"
    assert client.breaker.failures == 1
    await client.close()


async def test_a_4xx_is_permanent_and_says_the_upstream_is_healthy(upstream):
    client, answers, _ = upstream
    client.breaker.failures = 2
    answers.append(httpx.Response(400, json={"error": "bad style"}))
    with pytest.raises(UpstreamError) as raised:
        await client.create_generation({}, idempotency_key="task-1")
    assert (raised.value.permanent, raised.value.status) == (True, 400)
    assert raised.value.code == "upstream_rejected"
    assert client.breaker.failures == 0
    await client.close()


async def test_an_open_breaker_refuses_calls_without_touching_the_network(upstream):
    client, _, seen = upstream
    for _ in range(client.breaker.threshold):
        client.breaker.record_failure()
    with pytest.raises(CircuitOpen) as raised:
        await client.catalog()
    assert raised.value.permanent is False and raised.value.retry_in > 0
    assert seen == []
