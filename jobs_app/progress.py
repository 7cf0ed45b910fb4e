"""Actions that apply what the upstream reports: submission, job states, results, completion.

The same report may arrive twice (socket and webhook, retried webhooks) or late; every action
here locks the task, moves state only forward (jobs_app.states) and emits an event only when
something moved, so applying a report again changes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID

from django.utils import timezone

from jobs_app.actions import advance_job, advance_task
from jobs_app.claims import Claim
from jobs_app.events import publish_event
from jobs_app.models import Job, Task
from jobs_app.states import JOB_TERMINAL, JobStatus, TaskKind, TaskStatus
from photobooth.db import durable_transaction

logger = logging.getLogger(__name__)

# Contract section 7: progress events of a job are at least 250 ms apart.
PROGRESS_MIN_INTERVAL = timedelta(milliseconds=250)


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredResult:
    """A result file copied into our storage (jobs_app.files.store_result)."""

    name: str
    url: str
    width: int
    height: int
    content_type: str
    size: int


def _locked(task_id: UUID | str) -> Task:
    return Task.objects.select_for_update().get(pk=task_id)


def _job(task: Task, index: int) -> Job | None:
    try:
        return Job.objects.get(task_id=task.pk, index=index)
    except Job.DoesNotExist:
        return None


def _catch_up_start(task: Task, job: Job) -> None:
    """Emit the `initiating` and `started` a generation job missed before a later report.

    Progress, a preview or a result means the job began rendering; when the socket lost those
    state messages (a reconnection, or messages that came before the submission was recorded),
    the contract's per-job order still needs both events first. Mockup jobs may skip them.
    """
    if task.kind == TaskKind.MOCKUP:
        return
    for status, event in ((JobStatus.INITIATING, "initiating"), (JobStatus.RUNNING, "started")):
        if advance_job(job, status):
            publish_event(task, event, job=job, jobIndex=job.index, workerName=job.worker_name)


class Submission(StrEnum):
    """What recording a submission did (do_mark_submitted)."""

    RUNNING = "running"  # recorded; the task runs upstream
    UNWANTED = "unwanted"  # the task finished meanwhile: cancel it upstream
    FENCED = "fenced"  # our claim was taken over: the new holder owns the task now


def _holds(task: Task, claim: Claim) -> bool:
    """Return whether `claim` is still the task's claim (the fencing check), logging if not."""
    if task.claimed_by_id == claim.worker_id and task.claim_epoch == claim.epoch:
        return True
    logger.warning(
        "claim_fenced task=%s worker=%s epoch=%s holder=%s holder_epoch=%s",
        task.pk, claim.worker_id, claim.epoch, task.claimed_by_id, task.claim_epoch,
    )  # fmt: skip
    return False


@durable_transaction
def do_prepare_submission(claim: Claim, body: dict[str, Any]) -> dict[str, Any] | None:
    """Return the body to POST upstream for a claimed task; None when the claim was taken.

    The first submission stores `body`; every later one (a retry, another worker after a
    takeover) gets the stored body back, so the upstream sees the same request under the same
    idempotency key.
    """
    task = _locked(claim.task_id)
    if not _holds(task, claim):
        return None
    if task.upstream_request is not None:
        return task.upstream_request
    Task.objects.filter(pk=task.pk).update(upstream_request=body)
    return body


@durable_transaction
def do_mark_submitted(claim: Claim, upstream_id: str, job_ids: dict[int, str]) -> Submission:
    """Record the upstream's id for a claimed task and move it to running.

    The caller holds `claim`; nothing is written unless it is still the task's claim. A task
    that finished while being submitted (cancelled) keeps the id, so late reports match it,
    and the caller cancels it upstream.
    """
    task = _locked(claim.task_id)
    if task.upstream_id and task.upstream_id != upstream_id:
        # Idempotency keys make this impossible with a conforming upstream; keep the first.
        logger.error("upstream_id_conflict task=%s kept=%s got=%s",
                     task.pk, task.upstream_id, upstream_id)  # fmt: skip
        return Submission.FENCED
    if not _holds(task, claim):
        return Submission.FENCED
    if task.is_finished:
        if not task.upstream_id:
            Task.objects.filter(pk=task.pk).update(upstream_id=upstream_id)
        return Submission.UNWANTED
    Task.objects.filter(pk=task.pk).update(upstream_id=upstream_id)
    task.upstream_id = upstream_id
    for index, job_upstream_id in job_ids.items():
        Job.objects.filter(task=task, index=index).update(upstream_id=job_upstream_id)
    advance_task(task, TaskStatus.RUNNING, queue_position=None, eta_seconds=None)
    return Submission.RUNNING


@durable_transaction
def do_schedule_retry(
    claim: Claim, error: str, delay_seconds: float, *, count_attempt: bool = True
) -> bool:
    """Put a task whose submission failed transiently back in the queue for later.

    Releases the claim; returns False (and changes nothing) when the claim was taken over.
    """
    task = _locked(claim.task_id)
    if task.status != TaskStatus.QUEUED or not _holds(task, claim):
        return False
    Task.objects.filter(pk=task.pk).update(
        claimed_by=None,
        claimed_at=None,
        attempts=task.attempts + int(count_attempt),
        next_attempt_at=timezone.now() + timedelta(seconds=delay_seconds),
        last_error=error[:2000],
    )
    return True


@durable_transaction
def do_fail_task(
    task_id: UUID | str, code: str, message: str, stage: str, *, claim: Claim | None = None
) -> bool:
    """Fail a task for good; its unfinished jobs fail with it (without events of their own).

    With `claim` (a submission that failed for good) only while that claim still holds.
    """
    task = _locked(task_id)
    if claim is not None and not _holds(task, claim):
        return False
    if not advance_task(task, TaskStatus.FAILED, error_code=code, error_message=message[:2000]):
        return False
    for job in task.jobs.exclude(status__in=JOB_TERMINAL):
        advance_job(job, JobStatus.FAILED, error_code=code, error_message=message[:2000])
    publish_event(task, "failed", errorCode=code, message=message, stage=stage)
    logger.warning("task_failed task=%s code=%s stage=%s", task.pk, code, stage)
    return True


# The upstream's job states we apply, and the statuses each one moves a job through.
JOB_STATE_STEPS: dict[str, tuple[JobStatus, ...]] = {
    "initiating": (JobStatus.INITIATING,),
    "started": (JobStatus.INITIATING, JobStatus.RUNNING),
}


@durable_transaction
def do_apply_job_state(task_id: UUID | str, index: int, state: str, worker_name: str) -> bool:
    """Apply `initiating` or `started` for one job.

    A generation job reported `started` that we never saw initiating gets both events (in
    order), so every job's stream reads initiating, started, ... whatever the socket missed.
    """
    steps = JOB_STATE_STEPS.get(state)
    if not steps:
        return False  # `queued` (the upstream's own queue position) moves nothing of ours
    task = _locked(task_id)
    job = _job(task, index)
    if task.is_finished or job is None:
        return False
    moved = False
    for status in steps:
        if advance_job(job, status, worker_name=worker_name or job.worker_name):
            event = "initiating" if status == JobStatus.INITIATING else "started"
            publish_event(task, event, job=job, jobIndex=index, workerName=worker_name)
            moved = True
    return moved


@durable_transaction
def do_apply_job_progress(
    task_id: UUID | str, index: int, step: int, step_count: int, eta_seconds: float | None
) -> bool:
    """Record a job's progress; emit `progress` at most every 250 ms per job."""
    task = _locked(task_id)
    job = _job(task, index)
    if task.is_finished or job is None or job.status in JOB_TERMINAL or step_count <= 0:
        return False
    _catch_up_start(task, job)
    progress = min(1.0, max(job.progress, step / step_count))
    due = (
        job.last_progress_at is None
        or timezone.now() - job.last_progress_at >= PROGRESS_MIN_INTERVAL
    )
    Job.objects.filter(pk=job.pk).update(progress=progress)
    if not due:
        return False
    eta = None if eta_seconds is None else round(eta_seconds, 1)
    event = publish_event(task, "progress", job=job, jobIndex=index, progress=round(progress, 4),
                          step=step, stepCount=step_count, etaSeconds=eta)  # fmt: skip
    # Measure the interval between the events' own timestamps, which is what clients see; a
    # clock read before publish_event (it waits for the session's log lock) runs ahead of them.
    Job.objects.filter(pk=job.pk).update(last_progress_at=event.created_at)
    return True


@durable_transaction
def do_apply_job_preview(task_id: UUID | str, index: int, preview: StoredResult) -> bool:
    """Announce a job's low-resolution preview (stored in our storage)."""
    task = _locked(task_id)
    job = _job(task, index)
    if task.is_finished or job is None or job.status in JOB_TERMINAL:
        return False
    _catch_up_start(task, job)
    publish_event(task, "preview", job=job, jobIndex=index, previewUrl=preview.url)
    return True


@durable_transaction
def do_complete_job(task_id: UUID | str, index: int, result: StoredResult) -> bool:
    """Record a job's result; complete the task once every job has its final event."""
    task = _locked(task_id)
    job = _job(task, index)
    if task.is_finished or job is None or job.status in JOB_TERMINAL:
        return False
    _catch_up_start(task, job)
    moved = advance_job(
        job,
        JobStatus.COMPLETED,
        result_file=result.name,
        result_width=result.width,
        result_height=result.height,
        result_content_type=result.content_type,
        result_size=result.size,
    )
    if not moved:
        return False
    publish_event(task, "jobCompleted", job=job, jobIndex=index, resultUrl=result.url,
                  width=result.width, height=result.height, contentType=result.content_type,
                  size=result.size)  # fmt: skip
    _finish_when_done(task)
    return True


@durable_transaction
def do_fail_job(task_id: UUID | str, index: int, code: str, message: str) -> bool:
    """Fail one job for good; finish the task once every job has its final event."""
    task = _locked(task_id)
    job = _job(task, index)
    if task.is_finished or job is None:
        return False
    if not advance_job(job, JobStatus.FAILED, error_code=code, error_message=message[:2000]):
        return False
    publish_event(task, "jobFailed", job=job, jobIndex=index, errorCode=code, message=message)
    _finish_when_done(task)
    return True


@durable_transaction
def do_note_upstream_finished(task_id: UUID | str) -> None:
    """Remember that the upstream called the task finished (its jobs may still be arriving)."""
    Task.objects.filter(pk=task_id, upstream_finished_at__isnull=True).update(
        upstream_finished_at=timezone.now()
    )


def _finish_when_done(task: Task) -> None:
    """Send the task's terminal event once every job has had its own final event."""
    jobs = list(task.jobs.order_by("index"))
    if any(job.status not in JOB_TERMINAL for job in jobs):
        return
    done = [job for job in jobs if job.status == JobStatus.COMPLETED]
    if not done:
        first = jobs[0] if jobs else None
        code = (first.error_code if first else "") or "render_failed"
        message = (first.error_message if first else "") or "Every job failed."
        advance_task(task, TaskStatus.FAILED, error_code=code, error_message=message)
        publish_event(task, "failed", errorCode=code, message=message, stage="render")
        return
    advance_task(task, TaskStatus.COMPLETED)
    if task.kind == TaskKind.MOCKUP:
        publish_event(task, "redirect", url=f"/mockups/{task.pk}/")
    total_ms = int((task.finished_at - task.created_at).total_seconds() * 1000)
    publish_event(task, "completed", imageUrls=[job.result_file.url for job in done],
                  completedJobs=len(done), totalJobs=len(jobs), totalTimeMs=total_ms)  # fmt: skip
    logger.info("task_completed task=%s jobs=%s/%s ms=%s", task.pk, len(done), len(jobs), total_ms)


def unfinished_job_indexes(task_id: UUID | str) -> set[int]:
    return set(
        Job.objects.filter(task_id=task_id)
        .exclude(status__in=JOB_TERMINAL)
        .values_list("index", flat=True)
    )


def task_for_upstream(upstream_id: str) -> Task | None:
    """Return our task for an upstream task id (None for one we never submitted)."""
    return Task.objects.filter(upstream_id=upstream_id).first()


@durable_transaction
def do_update_queue_position(task_id: UUID | str, position: int, eta_seconds: int) -> bool:
    """Store a queued task's new position and tell its clients (`queued`)."""
    task = _locked(task_id)
    if task.status != TaskStatus.QUEUED or task.queue_position == position:
        return False
    Task.objects.filter(pk=task.pk).update(queue_position=position, eta_seconds=eta_seconds)
    publish_event(task, "queued", queuePosition=position, etaSeconds=eta_seconds)
    return True
