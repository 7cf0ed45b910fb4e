"""Nothing fails under load: the SQLite writer lock, and what a database error does to the work.

The writer tests run threads with connections of their own, so they commit for real; on
SQLite they show that every writer of the process queues on one lock (photobooth/sqlite_writer)
before it reaches SQLite, and that the lock is free again before on_commit callbacks run.
The queue, inbox and supervision tests inject a "database is locked" at a service function
(the boundary the worker calls), against the real database.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.contrib.sessions.backends.db import SessionStore
from django.db import OperationalError, connection, transaction
from django.db.models.functions import Now

from jobs_app import claims, progress, webhooks
from jobs_app.applier import UpstreamApplier
from jobs_app.claims import claim_next
from jobs_app.dispatcher import TaskQueue
from jobs_app.models import Task, WebhookDelivery
from jobs_app.supervision import spawn, supervise
from jobs_app.worker import BackgroundWork
from photobooth.db import durable_transaction
from sessions_app.actions import do_start_session
from sessions_app.models import BoothSession
from tests.booth_load import scan_log
from tests.conftest import generation_body, image_bytes
from tests.test_webhooks import SECRET, generation_finished, signed
from tests.upstream_helpers import Booth, contract_problems, fresh_var_dir, serve
from tests.worker_helpers import a_worker, follow, run_inbox

WAIT = 10  # seconds a thread may take; normally milliseconds
LOCKED = "database is locked"

sqlite_only = pytest.mark.skipif(
    connection.vendor != "sqlite", reason="the process's writer lock is SQLite's"
)


def in_thread(function: Callable[[], object]) -> threading.Thread:
    """Run `function` in a thread with a connection of its own (closed when it ends)."""

    def run() -> None:
        try:
            function()
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


class HeldTransaction:
    """A transaction another thread opens, writes in and keeps open until told to end."""

    def __init__(self) -> None:
        self.began, self.end = threading.Event(), threading.Event()
        self.thread = in_thread(self._hold)
        assert self.began.wait(WAIT), "the holder never began"

    def _hold(self) -> None:
        with transaction.atomic():
            BoothSession.objects.create()
            self.began.set()
            self.end.wait(WAIT)

    def commit(self) -> None:
        self.end.set()
        self.thread.join(WAIT)


# --- The writer lock --------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_on_commit_callbacks_run_after_the_writer_lock_is_released():
    seen = {}

    def another_writer() -> None:
        do_start_session()
        seen["wrote"] = True

    def announce() -> None:
        # What announcing does: wait for another thread (the event loop) that may write.
        writer = in_thread(another_writer)
        writer.join(WAIT)
        seen["waited"] = writer.is_alive()

    @durable_transaction
    def action() -> None:
        BoothSession.objects.create()
        transaction.on_commit(announce)

    action()
    assert seen == {"wrote": True, "waited": False}


@sqlite_only
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "write",
    [
        pytest.param(lambda: BoothSession.objects.update(pruned_seq=0), id="autocommit-update"),
        pytest.param(lambda: SessionStore().create(), id="django-session-save"),
        pytest.param(do_start_session, id="action"),
    ],
)
def test_every_writer_waits_its_turn_on_the_writer_lock_before_reaching_sqlite(write):
    holder = HeldTransaction()
    statements: list[str] = []

    def traced_write() -> None:
        connection.ensure_connection()
        connection.connection.set_trace_callback(statements.append)
        write()

    writer = in_thread(traced_write)
    time.sleep(0.3)
    # Reads went on (WAL), but not even BEGIN reached SQLite: waiting there would be its busy
    # handler's naps of up to 100 ms, and "database is locked" after the timeout.
    assert writer.is_alive() and not [s for s in statements if not s.startswith("SELECT")]
    holder.commit()
    writer.join(WAIT)
    assert not writer.is_alive() and [s for s in statements if not s.startswith("SELECT")]


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_every_transaction_takes_the_write_lock_when_it_begins():
    statements: list[str] = []
    connection.ensure_connection()
    connection.connection.set_trace_callback(statements.append)
    try:
        do_start_session()
    finally:
        connection.connection.set_trace_callback(None)
    # IMMEDIATE: a transaction never starts as a reader and upgrades (SQLITE_BUSY at once).
    assert statements[0] == "BEGIN IMMEDIATE"


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_a_writer_waits_at_most_the_busy_timeout_then_fails_as_locked(monkeypatch):
    monkeypatch.setitem(connection.settings_dict["OPTIONS"], "timeout", 0.3)
    holder = HeldTransaction()
    started = time.monotonic()
    with pytest.raises(OperationalError, match=LOCKED):
        do_start_session()
    assert time.monotonic() - started < 3
    holder.commit()
    # Nothing leaked: this thread and others write again.
    do_start_session()
    other = in_thread(do_start_session)
    other.join(WAIT)
    assert not other.is_alive()
    assert BoothSession.objects.count() == 3


@sqlite_only
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("end", ["rolled-back", "closed"])
def test_a_transaction_that_ends_badly_gives_the_writer_lock_back(end, monkeypatch):
    monkeypatch.setitem(connection.settings_dict["OPTIONS"], "timeout", 1)

    def doomed() -> None:
        with contextlib.suppress(ValueError), transaction.atomic():
            BoothSession.objects.create()
            if end == "closed":
                connection.close()
            raise ValueError("the transaction fails")

    in_thread(doomed).join(WAIT)
    do_start_session()  # "database is locked" after 1 s if the dead thread kept the lock
    assert BoothSession.objects.count() == 1


# --- The task queue ---------------------------------------------------------------------------


class FakeUpstream:
    """The upstream client's surface the queue and the applier use, answering at once."""

    app_id = "test-app"

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict]] = []
        self.breaker = type("Breaker", (), {"is_open": False})()

    async def create_generation(self, body: dict, *, idempotency_key: str) -> dict:
        self.posts.append((idempotency_key, body))
        return {"id": "gt_1", "jobs": [{"index": i, "id": f"gj_{i}"}
                                       for i in range(body["number_images"])]}  # fmt: skip

    async def download(self, url: str) -> tuple[bytes, str]:
        return image_bytes("PNG"), "image/png"


def completed(jobs: int) -> dict:
    """The upstream's task object once every job has its result."""
    return {
        "id": "gt_1",
        "status": "completed",
        "jobs": [{"index": i, "status": "completed", "worker_name": "gpu-1",
                  "result": {"url": f"https://upstream.test/r/{i}.png"}}
                 for i in range(jobs)],
    }  # fmt: skip


def locked(times: int | None = None):
    """Wrap a service function so it raises "database is locked" (the first `times` calls)."""

    def wrap(function):
        calls = []

        def failing(*args, **kwargs):
            calls.append(args)
            if times is None or len(calls) <= times:
                raise OperationalError(LOCKED)
            return function(*args, **kwargs)

        failing.calls = calls
        return failing

    return wrap


def row(task_id: str) -> Task:
    return Task.objects.get(pk=task_id)


def make_due(task_id: str) -> None:
    Task.objects.filter(pk=task_id).update(next_attempt_at=None)


@pytest.fixture
def queued(owner, uploaded) -> str:
    body = generation_body(uploaded["uploadId"], numberImages=2)
    return owner.create_task(body).json()["taskId"]


@pytest.fixture
def upstream() -> FakeUpstream:
    return FakeUpstream()


@pytest.fixture
def queue(upstream, db) -> TaskQueue:
    return TaskQueue(upstream, UpstreamApplier(upstream), a_worker())


@pytest.mark.django_db(transaction=True)
async def test_a_submission_that_meets_a_locked_database_is_released_and_the_task_completes(
    queued, queue, upstream, monkeypatch, caplog
):
    monkeypatch.setattr(progress, "do_mark_submitted", locked(1)(progress.do_mark_submitted))
    claim = await sync_to_async(claim_next)(queue.identity.id)
    await queue.submit(claim)

    task = await sync_to_async(row)(queued)
    assert (task.status, task.claimed_by_id, task.attempts) == ("queued", None, 0)
    assert LOCKED in task.last_error and task.next_attempt_at is not None
    assert "task_record_failed" in caplog.text and "task_submission_failed" in caplog.text
    assert not queue.submitting

    await sync_to_async(make_due)(queued)
    await queue.submit(await sync_to_async(claim_next)(queue.identity.id))
    assert (await sync_to_async(row)(queued)).status == "running"
    # Asked twice, the same bytes under the same key: the upstream made one task.
    assert [key for key, _ in upstream.posts] == [queued, queued]
    assert upstream.posts[0][1] == upstream.posts[1][1]

    await queue.applier.apply_generation(queued, completed(jobs=2))
    assert (await sync_to_async(row)(queued)).status == "completed"


@pytest.mark.django_db(transaction=True)
async def test_a_claim_whose_release_fails_too_is_freed_by_release_forgotten(
    queued, queue, monkeypatch, settings, caplog
):
    mark_submitted, schedule_retry = progress.do_mark_submitted, progress.do_schedule_retry
    monkeypatch.setattr(progress, "do_mark_submitted", locked()(mark_submitted))
    monkeypatch.setattr(progress, "do_schedule_retry", locked()(schedule_retry))
    claim = await sync_to_async(claim_next)(queue.identity.id)
    await queue.submit(claim)  # nothing escapes: logged, and left to release_forgotten

    assert "task_release_failed" in caplog.text
    assert (await sync_to_async(row)(queued)).claimed_by_id == queue.identity.id
    assert claim.task_id not in queue.submitting
    monkeypatch.setattr(progress, "do_mark_submitted", mark_submitted)
    monkeypatch.setattr(progress, "do_schedule_retry", schedule_retry)

    # The worker's claims round frees it once FORGOTTEN_AFTER_SECONDS have passed since the
    # claim, even when adoption (the other half of the round) fails.
    age = timedelta(seconds=claims.FORGOTTEN_AFTER_SECONDS + 1)
    await sync_to_async(Task.objects.filter(pk=queued).update)(claimed_at=Now() - age)
    settings.WORKER_RENEW_SECONDS = 1
    monkeypatch.setattr(queue, "adopt_orphans", locked()(queue.adopt_orphans))
    work = BackgroundWork()
    work.identity, work.queue = queue.identity, queue
    tending = asyncio.create_task(work._tend_claims())
    try:
        for _ in range(WAIT * 10):
            if (await sync_to_async(row)(queued)).claimed_by_id is None:
                break
            await asyncio.sleep(0.1)
    finally:
        tending.cancel()
    assert (await sync_to_async(row)(queued)).claimed_by_id is None
    assert "worker_adoption_failed" in caplog.text and "claims_released_forgotten" in caplog.text

    await queue.submit(await sync_to_async(claim_next)(queue.identity.id))
    assert (await sync_to_async(row)(queued)).status == "running"


@pytest.mark.django_db(transaction=True)
async def test_a_locked_database_spends_no_attempt_however_often_it_happens(
    queued, queue, monkeypatch
):
    monkeypatch.setattr(progress, "do_prepare_submission",
                        locked(10)(progress.do_prepare_submission))  # fmt: skip
    for _ in range(10):  # twice MAX_ATTEMPTS: an upstream failure would have failed the task
        await queue.submit(await sync_to_async(claim_next)(queue.identity.id))
        await sync_to_async(make_due)(queued)
    task = await sync_to_async(row)(queued)
    assert (task.status, task.attempts) == ("queued", 0)
    await queue.submit(await sync_to_async(claim_next)(queue.identity.id))
    assert (await sync_to_async(row)(queued)).status == "running"


# --- Supervision ------------------------------------------------------------------------------


async def test_a_worker_part_that_crashes_is_logged_and_started_again(caplog):
    runs = []

    async def flaky_part() -> None:
        runs.append(len(runs))
        if len(runs) < 3:
            raise OperationalError(LOCKED)

    await asyncio.wait_for(supervise("flaky", flaky_part, restart_seconds=0), WAIT)
    assert len(runs) == 3
    assert caplog.text.count("worker_part_crashed part=flaky") == 2


async def test_a_failed_background_task_is_logged_and_never_left_unretrieved(caplog):
    async def fails() -> None:
        raise OperationalError(LOCKED)

    task = spawn(fails(), name="doomed")
    await asyncio.wait([task])
    del task
    gc.collect()
    assert "background_task_failed task=doomed" in caplog.text
    assert "never retrieved" not in caplog.text


@pytest.mark.django_db(transaction=True)
async def test_an_upstream_cancellation_that_meets_a_locked_database_is_logged(
    queue, monkeypatch, caplog
):
    monkeypatch.setattr(claims, "is_owner", locked()(claims.is_owner))
    work = BackgroundWork()
    work.queue = queue
    work._on_ring({"what": "cancel", "taskId": "t_1", "upstreamId": "gt_1"})
    assert len(work.cancels) == 1
    await asyncio.wait(set(work.cancels))
    gc.collect()
    assert "background_task_failed task=photobooth-cancel-t_1" in caplog.text
    assert "never retrieved" not in caplog.text
    assert not work.cancels


# --- The inbox --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_delivery_whose_apply_meets_a_locked_database_stays_pending_for_the_next_round(
    owner, uploaded, monkeypatch, settings, caplog
):
    settings.WEBHOOK_SECRETS = [SECRET]
    task = owner.create_task(generation_body(uploaded["uploadId"], numberImages=2)).json()
    worker = a_worker()
    Task.objects.filter(pk=task["taskId"]).update(status="running", upstream_id="up_1")
    follow(task["taskId"], worker)
    jobs = [{"index": 0, "status": "started", "worker_name": "gpu-1"}]
    raw, headers = signed(generation_finished("up_1", jobs, status="running"))
    webhooks.store_deliveries([webhooks.check(headers, raw)])
    monkeypatch.setattr(UpstreamApplier, "apply_generation",
                        locked(1)(UpstreamApplier.apply_generation))  # fmt: skip

    run_inbox(worker)
    assert WebhookDelivery.objects.get().outcome == "pending"
    assert "webhook_apply_deferred" in caplog.text

    run_inbox(worker)
    assert WebhookDelivery.objects.get().outcome == "applied"


# --- A whole server ---------------------------------------------------------------------------


def test_tasks_complete_without_an_error_while_another_process_holds_the_writer(tmp_path):
    """`make run`'s defaults; another process takes SQLite's write lock for 3 s, twice, while
    tasks are queued, submitted and reported: everything waits, nothing fails."""
    var_dir = fresh_var_dir(tmp_path / "var")
    with serve(var_dir, MOCKUP_API_STEP_SECONDS="0.05") as server:
        booth = Booth(server.base, "patient")
        upload = booth.upload()
        created = [booth.generation(upload, number_images=4, clientAppId=f"patient-{i}")
                   for i in range(3)]  # fmt: skip
        other = sqlite3.connect(var_dir / "photobooth.sqlite3", isolation_level=None)
        try:
            for _ in range(2):
                other.execute("BEGIN IMMEDIATE")
                time.sleep(3)
                other.execute("COMMIT")
                time.sleep(0.5)
        finally:
            other.close()
        finished = [booth.wait_for_task(task["taskId"]) for task in created]
        problems = [p for task in finished for p in contract_problems(task, booth.events(task))]
    assert [task["status"] for task in finished] == ["completed"] * 3, finished
    assert not problems, problems
    # No 5xx (webhooks included), traceback, "never retrieved", "database is locked", ERROR.
    findings = scan_log(server.log.read_text(errors="replace"))
    assert findings.counts == dict.fromkeys(findings.counts, 0), findings
