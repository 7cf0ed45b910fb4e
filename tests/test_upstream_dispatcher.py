"""The task queue's building blocks: retry backoff, claims, recovery and catalog reads."""

from __future__ import annotations

import asyncio

import pytest

from jobs_app import dispatcher, progress
from jobs_app.dispatcher import (
    CATALOG_REFRESH_SECONDS,
    CATALOG_RETRY_SECONDS,
    RETRY_CAP_SECONDS,
    TaskQueue,
    claim_next,
    recover_claims,
    retry_delay,
)
from jobs_app.models import Task
from jobs_app.upstream.errors import UpstreamError
from tests.conftest import generation_body

# --- Retry backoff ----------------------------------------------------------------------------


def test_retry_delays_use_full_jitter_under_a_capped_exponential(monkeypatch):
    bounds = []

    def uniform(low: float, high: float) -> float:
        bounds.append((low, high))
        return high

    monkeypatch.setattr(dispatcher.random, "uniform", uniform)
    assert [retry_delay(attempt) for attempt in (1, 2, 3, 5, 6, 20)] == [2, 4, 8, 32, 60, 60]
    assert {low for low, _ in bounds} == {0}
    assert RETRY_CAP_SECONDS == 60


def test_retry_delays_stay_within_their_bounds():
    for attempt in range(1, 12):
        delays = [retry_delay(attempt) for _ in range(200)]
        cap = min(RETRY_CAP_SECONDS, 2**attempt)
        assert all(0 <= delay <= cap for delay in delays)
        assert max(delays) - min(delays) > cap / 4  # spread out, not one value for everyone


# --- Claims -----------------------------------------------------------------------------------


@pytest.fixture
def queued(owner, uploaded) -> str:
    return owner.create_task(generation_body(uploaded["uploadId"])).json()["taskId"]


def test_a_queued_task_is_claimed_only_once(queued):
    assert claim_next() == queued
    assert claim_next() is None
    assert Task.objects.get(pk=queued).claimed_at is not None


def test_recovery_releases_claims_that_never_reached_the_upstream(owner, uploaded, queued):
    other = owner.create_task(generation_body(uploaded["uploadId"], "booth-2")).json()["taskId"]
    assert {claim_next(), claim_next()} == {queued, other}
    progress.do_mark_submitted(other, "gt_1", {})
    assert recover_claims() == 1
    assert claim_next() == queued  # the submitted one stays with the upstream


def test_a_task_scheduled_for_a_retry_waits_for_its_time(queued):
    assert claim_next() == queued
    progress.do_schedule_retry(queued, "POST: 503", 60)
    assert claim_next() is None
    task = Task.objects.get(pk=queued)
    assert (task.attempts, task.claimed_at, task.last_error) == (1, None, "POST: 503")
    progress.do_schedule_retry(queued, "circuit open", 0, count_attempt=False)
    assert claim_next() == queued
    assert Task.objects.get(pk=queued).attempts == 1


# --- Catalog reads ----------------------------------------------------------------------------


class FlakyCatalog:
    """An upstream client whose catalog read fails until told otherwise."""

    def __init__(self) -> None:
        self.up = False

    async def catalog(self) -> list[dict]:
        if not self.up:
            raise UpstreamError("GET /v2/catalog-products: 503", permanent=False, status=503)
        return []


async def test_a_failed_catalog_read_is_tried_again_soon_and_a_good_one_much_later():
    client = FlakyCatalog()
    queue = TaskQueue(client, applier=None)
    loop = asyncio.get_running_loop()

    await queue.refresh_catalog()
    assert queue._next_catalog - loop.time() == pytest.approx(CATALOG_RETRY_SECONDS, abs=1)
    client.up = True
    await queue.refresh_catalog()
    assert queue._next_catalog - loop.time() == pytest.approx(CATALOG_REFRESH_SECONDS, abs=1)


@pytest.mark.django_db
def test_tasks_behind_one_that_leaves_the_queue_are_told_their_new_places(owner, uploaded):
    from jobs_app.dispatcher import refresh_queue_positions
    from jobs_app.models import Event, Task

    ids = [
        owner.create_task(generation_body(uploaded["uploadId"], f"c{n}")).json()["taskId"]
        for n in range(3)
    ]
    assert [Task.objects.get(pk=i).queue_position for i in ids] == [1, 2, 3]
    owner.post(f"/api/tasks/{ids[0]}/cancel")
    refresh_queue_positions()
    for task_id, place in ((ids[1], 1), (ids[2], 2)):
        last = Event.objects.filter(task_id=task_id).order_by("-seq").first()
        assert (last.type, last.data["queuePosition"]) == ("queued", place)
        assert last.data["etaSeconds"] == 20 * place
    refresh_queue_positions()  # nothing moved: nothing more to say
    assert Event.objects.filter(task_id=ids[2], type="queued").count() == 2
