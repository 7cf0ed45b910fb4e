"""Upstream reports that change nothing cost nothing.

A busy upstream repeats itself: it announces its own queue position every time its render
queue moves (dozens of `jobState queued` per job of a 16-image task), and every reconciliation
and webhook carries the whole task object again. A booth profile showed half of the server's
CPU going to locked transactions that then moved nothing. These tests count the service calls
(each one a locked transaction) that such reports make.
"""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from jobs_app import progress
from jobs_app.applier import UpstreamApplier
from jobs_app.claims import claim_next
from jobs_app.dispatcher import TaskQueue
from jobs_app.models import Event, Job
from tests.test_database_hiccups import FakeUpstream, completed, row
from tests.worker_helpers import a_worker

pytestmark = pytest.mark.django_db(transaction=True)


class Spy:
    """Count the calls of a service function while still running it."""

    def __init__(self, monkeypatch, name: str):
        self.calls: list[tuple] = []
        function = getattr(progress, name)

        def spy(*args, **kwargs):
            self.calls.append(args)
            return function(*args, **kwargs)

        monkeypatch.setattr(progress, name, spy)


@pytest.fixture
def upstream() -> FakeUpstream:
    return FakeUpstream()


@pytest.fixture
async def running(owner, uploaded, upstream) -> tuple[str, UpstreamApplier]:
    """A 4-image task submitted to the upstream (gt_1), and the applier following it."""
    from tests.conftest import generation_body

    body = generation_body(uploaded["uploadId"], numberImages=4)
    task_id = (await sync_to_async(owner.create_task)(body)).json()["taskId"]
    queue = TaskQueue(upstream, UpstreamApplier(upstream), await sync_to_async(a_worker)())
    await queue.submit(await sync_to_async(claim_next)(queue.identity.id))
    assert (await sync_to_async(row)(task_id)).status == "running"
    return task_id, queue.applier


def job_message(state: str, index: int = 0, **fields) -> dict:
    return {"type": "jobState", "taskId": "gt_1", "jobId": f"gj_{index}", "jobIndex": index,
            "state": state, **fields}  # fmt: skip


def events_of(task_id: str) -> list[tuple[str, int | None]]:
    rows = Event.objects.filter(task_id=task_id).order_by("seq")
    return [(event.type, event.data.get("jobIndex")) for event in rows]


async def test_the_upstreams_queue_positions_open_no_transaction(running, monkeypatch):
    task_id, applier = running
    states = Spy(monkeypatch, "do_apply_job_state")

    for position in range(40, 0, -1):
        await applier.apply_socket_message(job_message("queued", queuePosition=position))
    await applier.apply_socket_message(job_message("initiating", workerName="gpu-1"))

    assert len(states.calls) == 1
    assert (await sync_to_async(events_of)(task_id))[-1] == ("initiating", 0)


async def test_a_queue_position_for_a_task_we_never_submitted_is_dropped_unread(
    running, monkeypatch
):
    _, applier = running
    lookups = Spy(monkeypatch, "task_for_upstream")
    message = job_message("queued", queuePosition=3) | {"taskId": "gt_unknown"}
    # Unknown tasks are otherwise looked up again and again (a fast upstream reports before
    # our submission is recorded: 10 x 0.2 s). A queue position is not worth that wait.
    await applier.apply_socket_message(message)
    assert lookups.calls == []


async def test_a_task_object_read_again_moves_nothing_and_costs_no_transaction(
    running, monkeypatch
):
    task_id, applier = running
    await applier.apply_generation(task_id, completed(jobs=4))
    assert (await sync_to_async(row)(task_id)).status == "completed"
    before = await sync_to_async(events_of)(task_id)

    states = Spy(monkeypatch, "do_apply_job_state")
    completions = Spy(monkeypatch, "do_complete_job")
    failures = Spy(monkeypatch, "do_fail_job")
    for _ in range(3):  # a reconciliation, the webhook, its retry
        await applier.apply_generation(task_id, completed(jobs=4))

    assert (states.calls, completions.calls, failures.calls) == ([], [], [])
    assert await sync_to_async(events_of)(task_id) == before


async def test_a_task_object_applies_only_the_jobs_that_are_behind_it(running, monkeypatch):
    task_id, applier = running
    finished = completed(jobs=4)
    await applier.apply_generation(task_id, {**finished, "status": "running",
                                             "jobs": finished["jobs"][:2]})  # fmt: skip
    states = Spy(monkeypatch, "do_apply_job_state")
    completions = Spy(monkeypatch, "do_complete_job")

    later = {**finished, "jobs": [*finished["jobs"][:2],
                                  {"index": 2, "status": "started", "worker_name": "gpu-2"},
                                  finished["jobs"][3]]}  # fmt: skip
    await applier.apply_generation(task_id, later)

    assert [call[1] for call in states.calls] == [2, 3]
    assert [call[1] for call in completions.calls] == [3]
    statuses = await sync_to_async(
        lambda: dict(Job.objects.filter(task_id=task_id).values_list("index", "status"))
    )()
    assert statuses == {0: "completed", 1: "completed", 2: "running", 3: "completed"}
    jobs_2_and_3 = [e for e in await sync_to_async(events_of)(task_id) if e[1] in (2, 3)]
    assert jobs_2_and_3 == [("initiating", 2), ("started", 2),
                            ("initiating", 3), ("started", 3), ("jobCompleted", 3)]  # fmt: skip
