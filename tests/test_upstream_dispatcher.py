"""The task queue's building blocks: retry backoff, leased and fenced claims, catalog reads."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db.models.functions import Now

from jobs_app import dispatcher, leases, progress
from jobs_app.claims import adopt_orphans, claim_next, release_forgotten
from jobs_app.dispatcher import RETRY_CAP_SECONDS, retry_delay
from jobs_app.leader import (
    CATALOG_REFRESH_SECONDS,
    CATALOG_RETRY_SECONDS,
    Leader,
    refresh_queue_positions,
)
from jobs_app.models import Task, Worker
from jobs_app.progress import Submission
from jobs_app.upstream.errors import UpstreamError
from tests.conftest import generation_body
from tests.worker_helpers import a_worker

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


# --- Claims ---------------------------------------------------------------------------------


@pytest.fixture
def queued(owner, uploaded) -> str:
    return owner.create_task(generation_body(uploaded["uploadId"])).json()["taskId"]


def _die(worker: leases.WorkerIdentity) -> None:
    """Let a worker's lease run out, as when its process was killed."""
    Worker.objects.filter(pk=worker.id).update(lease_expires_at=Now())


def test_a_queued_task_is_claimed_only_once(queued):
    first, second = a_worker("first"), a_worker("second")
    claim = claim_next(first.id)
    assert (claim.task_id, claim.worker_id, claim.epoch) == (queued, first.id, 1)
    assert claim_next(second.id) is None
    assert claim_next(first.id) is None
    assert Task.objects.get(pk=queued).claimed_by_id == first.id


def test_a_live_workers_claim_is_never_taken_over_but_a_dead_ones_is(queued):
    first, second = a_worker("first"), a_worker("second")
    claim_next(first.id)
    assert claim_next(second.id) is None
    _die(first)
    taken = claim_next(second.id)
    assert (taken.task_id, taken.worker_id, taken.epoch) == (queued, second.id, 2)


def test_a_worker_whose_claim_was_taken_over_can_no_longer_write(queued):
    first, second = a_worker("first"), a_worker("second")
    stale = claim_next(first.id)
    _die(first)
    fresh = claim_next(second.id)
    # The first worker wakes up and reports its submission: fenced, nothing written.
    assert progress.do_mark_submitted(stale, "gt_stale", {}) == Submission.FENCED
    assert progress.do_schedule_retry(stale, "late", 5) is False
    assert progress.do_fail_task(queued, "x", "late", "submit", claim=stale) is False
    task = Task.objects.get(pk=queued)
    assert (task.status, task.upstream_id, task.attempts) == ("queued", None, 0)
    assert progress.do_mark_submitted(fresh, "gt_1", {}) == Submission.RUNNING
    assert Task.objects.get(pk=queued).upstream_id == "gt_1"


def test_a_second_upstream_id_never_overwrites_the_first(queued):
    worker = a_worker()
    claim = claim_next(worker.id)
    assert progress.do_mark_submitted(claim, "gt_1", {}) == Submission.RUNNING
    assert progress.do_mark_submitted(claim, "gt_2", {}) == Submission.FENCED
    assert Task.objects.get(pk=queued).upstream_id == "gt_1"


def test_running_tasks_of_a_dead_worker_are_adopted_and_those_of_a_live_one_are_not(
    owner, uploaded, queued
):
    other = owner.create_task(generation_body(uploaded["uploadId"], "booth-2")).json()["taskId"]
    dying, living, adopter = a_worker("dying"), a_worker("living"), a_worker("adopter")
    progress.do_mark_submitted(claim_next(dying.id), "gt_dying", {})
    progress.do_mark_submitted(claim_next(living.id), "gt_living", {})
    assert adopt_orphans(adopter.id) == []
    _die(dying)
    [adopted] = adopt_orphans(adopter.id)
    assert Task.objects.get(upstream_id="gt_dying").claimed_by_id == adopter.id
    assert adopted.task_id in (queued, other) and adopted.epoch == 2
    assert Task.objects.get(upstream_id="gt_living").claimed_by_id == living.id


def test_a_worker_that_retires_frees_its_claims_at_once(queued):
    first, second = a_worker("first"), a_worker("second")
    claim_next(first.id)
    leases.retire_worker(first)
    assert claim_next(second.id).task_id == queued


def test_an_expired_lease_is_not_renewed(db):
    worker = a_worker()
    assert leases.renew_worker(worker) and worker.trusted()
    _die(worker)
    assert leases.renew_worker(worker) is False


def test_a_claim_a_live_worker_forgot_is_released_after_a_while(queued):
    worker = a_worker()
    claim_next(worker.id)
    assert release_forgotten(worker.id, set()) == 0  # claimed just now: it may be submitting
    Task.objects.filter(pk=queued).update(claimed_at=Now() - timedelta(minutes=5))
    assert release_forgotten(worker.id, {queued}) == 0  # still being submitted
    assert release_forgotten(worker.id, set()) == 1
    assert claim_next(worker.id).task_id == queued


def test_a_task_scheduled_for_a_retry_waits_for_its_time(queued):
    worker = a_worker()
    claim = claim_next(worker.id)
    assert progress.do_schedule_retry(claim, "POST: 503", 60)
    assert claim_next(worker.id) is None
    task = Task.objects.get(pk=queued)
    assert (task.attempts, task.claimed_by_id, task.last_error) == (1, None, "POST: 503")
    Task.objects.filter(pk=queued).update(next_attempt_at=None)
    claim = claim_next(worker.id)
    assert progress.do_schedule_retry(claim, "circuit open", 0, count_attempt=False)
    assert claim_next(worker.id).task_id == queued
    assert Task.objects.get(pk=queued).attempts == 1


# --- Leader -----------------------------------------------------------------------------------


def test_one_leader_at_a_time_and_a_new_one_once_its_lease_expires(db):
    first = leases.acquire_or_renew("leader", "w1", None)
    assert first is not None and first.epoch == 1
    assert leases.acquire_or_renew("leader", "w2", None) is None
    renewed = leases.acquire_or_renew("leader", "w1", first)
    assert renewed.epoch == 1
    from jobs_app.models import Lease

    Lease.objects.filter(name="leader").update(expires_at=Now())
    second = leases.acquire_or_renew("leader", "w2", None)
    assert second.epoch == 2
    # The old leader, back from a pause, can neither renew nor take the newer term.
    assert leases.acquire_or_renew("leader", "w1", first) is None


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
    leader = Leader(client, leases.WorkerIdentity(id="w", name="test"))
    assert await leader.refresh_catalog() == CATALOG_RETRY_SECONDS
    client.up = True
    assert await leader.refresh_catalog() == CATALOG_REFRESH_SECONDS


@pytest.mark.django_db
def test_tasks_behind_one_that_leaves_the_queue_are_told_their_new_places(owner, uploaded):
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
