"""The actions that apply upstream reports keep the contract's per-job order and pacing.

Reports can be lost (a socket reconnecting) or come twice (socket and webhook); these tests
call the actions directly, as the applier does, and read the events they wrote.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from jobs_app import log_positions, progress
from jobs_app.models import Event
from jobs_app.progress import StoredResult
from tests.conftest import generation_body
from tests.worker_helpers import a_worker, follow


def _result() -> StoredResult:
    return StoredResult(
        name="results/" + "0" * 32 + ".png",
        url="/media/results/" + "0" * 32 + ".png",
        width=768,
        height=768,
        content_type="image/png",
        size=1234,
    )


def _job_events(task_id: str, index: int) -> list[str]:
    found = Event.objects.filter(task_id=task_id, job__index=index).order_by("seq")
    return list(found.values_list("type", flat=True))


@pytest.fixture
def running_task(owner, uploaded) -> str:
    """A generation of two images, accepted by the upstream."""
    response = owner.create_task(generation_body(uploaded["uploadId"], numberImages=2))
    task_id = response.json()["taskId"]
    claim = follow(task_id, a_worker())
    assert progress.do_mark_submitted(claim, "gt_1", {0: "gj_0", 1: "gj_1"}) == "running"
    return task_id


def test_progress_for_a_job_whose_start_was_missed_comes_after_initiating_and_started(
    running_task,
):
    assert progress.do_apply_job_progress(running_task, 0, 1, 6, None)
    assert _job_events(running_task, 0) == ["initiating", "started", "progress"]


def test_a_result_for_a_job_never_seen_starting_still_reads_in_order(running_task):
    assert progress.do_complete_job(running_task, 1, _result())
    assert progress.do_complete_job(running_task, 0, _result()) is True
    for index in (0, 1):
        assert _job_events(running_task, index) == ["initiating", "started", "jobCompleted"]
    assert not progress.do_complete_job(running_task, 0, _result())  # a repeat changes nothing


def test_a_reported_start_is_not_repeated_by_a_later_report(running_task):
    assert progress.do_apply_job_state(running_task, 0, "initiating", "worker-1")
    assert progress.do_apply_job_state(running_task, 0, "started", "worker-1")
    assert progress.do_apply_job_progress(running_task, 0, 3, 6, 1.5)
    assert progress.do_complete_job(running_task, 0, _result())
    assert _job_events(running_task, 0) == ["initiating", "started", "progress", "jobCompleted"]
    started = Event.objects.get(task_id=running_task, job__index=0, type="started")
    assert started.data == {"jobIndex": 0, "workerName": "worker-1"}


def test_mockup_jobs_complete_without_invented_start_events(owner, uploaded):
    body = {"clientAppId": "shop", "kind": "mockup", "uploadId": uploaded["uploadId"],
            "productId": 71, "variantIds": [7100], "placement": "front"}  # fmt: skip
    task_id = owner.create_task(body).json()["taskId"]
    progress.do_mark_submitted(follow(task_id, a_worker()), "mt_1", {})
    assert progress.do_complete_job(task_id, 0, _result())
    types = list(
        Event.objects.filter(task_id=task_id).order_by("seq").values_list("type", flat=True)
    )
    assert types == ["queued", "jobCompleted", "redirect", "completed"]


def test_progress_events_are_250_ms_apart_by_their_own_timestamps(running_task, monkeypatch):
    progress.do_apply_job_state(running_task, 0, "started", "worker-1")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    clock = SimpleNamespace(now=start)
    # The event's own timestamp is taken after the session's log lock: later than the
    # action's clock reading, by a varying amount (50 ms for the first event here).
    lags = iter([timedelta(milliseconds=50), timedelta(0), timedelta(0)])
    monkeypatch.setattr(progress, "timezone", SimpleNamespace(now=lambda: clock.now))
    monkeypatch.setattr(
        log_positions, "timezone", SimpleNamespace(now=lambda: clock.now + next(lags))
    )

    assert progress.do_apply_job_progress(running_task, 0, 1, 6, None)
    clock.now = start + timedelta(milliseconds=260)  # 260 ms after the reading, 210 after it
    assert not progress.do_apply_job_progress(running_task, 0, 2, 6, None)
    clock.now = start + timedelta(milliseconds=300)
    assert progress.do_apply_job_progress(running_task, 0, 3, 6, None)

    stamps = list(
        Event.objects.filter(task_id=running_task, type="progress")
        .order_by("seq")
        .values_list("created_at", flat=True)
    )
    assert stamps[1] - stamps[0] >= progress.PROGRESS_MIN_INTERVAL
    # Throttled reports still move the job's progress.
    assert [e.data["step"] for e in Event.objects.filter(type="progress").order_by("seq")] == [1, 3]
