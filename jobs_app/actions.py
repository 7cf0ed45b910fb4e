"""Actions on tasks and jobs: the only code that changes their state.

Each `do_*` runs in one transaction that writes the change and its event (through
`jobs_app.events.publish_event`). Views, consumers, the admin, the queue and webhooks call
these; they never write tasks, jobs or events themselves.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import IntegrityError
from django.utils import timezone

from jobs_app import doorbell
from jobs_app.errors import (
    IdempotencyConflict,
    JobNotFound,
    SourceNotReady,
    TaskNotFound,
    UploadNotFound,
)
from jobs_app.events import lock_session_log, publish_event
from jobs_app.models import Job, Task, Upload
from jobs_app.queue import PRIORITY_BY_KIND, eta_seconds, queue_position
from jobs_app.states import (
    JOB_TERMINAL,
    TASK_TERMINAL,
    CancelReason,
    JobStatus,
    TaskKind,
    TaskStatus,
    job_can_move,
    task_can_move,
)
from photobooth.db import durable_transaction
from sessions_app.actions import do_claim_client_app
from sessions_app.models import BoothSession

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskRequest:
    """A validated task creation request (the API serializer builds it)."""

    client_app_id: str
    kind: TaskKind
    upload_id: UUID | None = None
    source_job_id: UUID | None = None
    style: str | None = None
    number_images: int = 1
    seed: int | None = None
    product_id: int | None = None
    variant_ids: list[int] = field(default_factory=list)
    placement: str | None = None

    @property
    def job_count(self) -> int:
        if self.kind == TaskKind.GENERATION:
            return self.number_images
        if self.kind == TaskKind.MOCKUP:
            return len(self.variant_ids)
        return 1

    def params(self) -> dict[str, Any]:
        """Return what the upstream needs, as stored on the task."""
        if self.kind == TaskKind.GENERATION:
            return {"style": self.style, "numberImages": self.number_images, "seed": self.seed}
        if self.kind == TaskKind.MOCKUP:
            return {
                "productId": self.product_id,
                "variantIds": list(self.variant_ids),
                "placement": self.placement,
            }
        return {}


@dataclass(frozen=True, slots=True, kw_only=True)
class CreatedTask:
    task: Task
    created: bool  # False when an Idempotency-Key matched an earlier request


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelOutcome:
    task: Task
    did_cancel: bool
    completed_jobs: int
    total_jobs: int


def body_digest(body: Any) -> str:
    """Return a digest of a JSON request body that ignores key order and spacing."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def get_task_for_session(session: BoothSession, task_id: UUID | str) -> Task:
    """Return the session's task, or raise TaskNotFound (also for other sessions' tasks)."""
    task = (
        Task.objects.filter(session=session, pk=task_id)
        .select_related("client_app", "session")
        .first()
    )
    if task is None:
        raise TaskNotFound()
    return task


def check_create_task(
    session: BoothSession,
    request: TaskRequest,
    *,
    idempotency_key: str | None = None,
    body: Any = None,
) -> CreatedTask:
    """Check ownership and references, then create the task (or return the idempotent one)."""
    digest = body_digest(body) if idempotency_key else ""
    if idempotency_key and (earlier := _idempotent_match(session, idempotency_key, digest)):
        return CreatedTask(task=earlier, created=False)
    client_app = do_claim_client_app(session, request.client_app_id)
    upload = source_job = None
    if request.upload_id is not None:
        upload = Upload.objects.filter(session=session, pk=request.upload_id).first()
        if upload is None:
            raise UploadNotFound()
    if request.source_job_id is not None:
        source_job = Job.objects.filter(task__session=session, pk=request.source_job_id).first()
        if source_job is None:
            raise JobNotFound()
        if source_job.status != JobStatus.COMPLETED or not source_job.result_file:
            raise SourceNotReady()
    try:
        task = do_create_task(
            session,
            request,
            client_app=client_app,
            upload=upload,
            source_job=source_job,
            idempotency_key=idempotency_key,
            digest=digest,
        )
    except IntegrityError:
        # A concurrent request with the same Idempotency-Key won the insert.
        earlier = _idempotent_match(session, idempotency_key or "", digest)
        if earlier is None:
            raise
        return CreatedTask(task=earlier, created=False)
    return CreatedTask(task=task, created=True)


def _idempotent_match(session: BoothSession, key: str, digest: str) -> Task | None:
    """Return the task an Idempotency-Key already made, raise on another body, forget old keys."""
    earlier = Task.objects.filter(session=session, idempotency_key=key).first()
    if earlier is None:
        return None
    horizon = timezone.now() - timedelta(seconds=settings.TASK_IDEMPOTENCY_SECONDS)
    if earlier.created_at < horizon:
        Task.objects.filter(pk=earlier.pk).update(idempotency_key=None)
        return None
    if earlier.request_digest != digest:
        raise IdempotencyConflict()
    return earlier


@durable_transaction
def do_create_task(
    session: BoothSession,
    request: TaskRequest,
    *,
    client_app,
    upload: Upload | None,
    source_job: Job | None,
    idempotency_key: str | None,
    digest: str,
) -> Task:
    """Create a queued task with its jobs and its `queued` event.

    A new generation replaces (cancels) the same client's unfinished generations first.
    """
    if request.kind == TaskKind.GENERATION:
        unfinished = Task.objects.filter(client_app=client_app, kind=TaskKind.GENERATION).exclude(
            status__in=TASK_TERMINAL
        )
        for earlier in unfinished.select_for_update():
            _cancel(earlier, CancelReason.REPLACED)
    head = lock_session_log(session.pk).event_seq
    task = Task.objects.create(
        session=session,
        client_app=client_app,
        kind=request.kind,
        priority=PRIORITY_BY_KIND[request.kind],
        params=request.params(),
        upload=upload,
        source_job=source_job,
        cursor_seq=head,
        idempotency_key=idempotency_key or None,
        request_digest=digest,
    )
    placement = request.placement or ""
    variants = [str(v) for v in request.variant_ids] or [""] * request.job_count
    Job.objects.bulk_create(
        Job(task=task, index=index, variant_id=variant, placement=placement)
        for index, variant in enumerate(variants)
    )
    task.queue_position = queue_position(task)
    task.eta_seconds = eta_seconds(task, task.queue_position)
    task.save(update_fields=["queue_position", "eta_seconds"])
    publish_event(task, "queued", queuePosition=task.queue_position, etaSeconds=task.eta_seconds)
    doorbell.ring_on_commit(doorbell.QUEUE)  # dispatch now, not at the queue's next poll
    logger.info("task_created task=%s kind=%s jobs=%s", task.pk, task.kind, len(variants))
    return task


def check_cancel_task(
    session: BoothSession, task_id: UUID | str, reason: CancelReason = CancelReason.USER
) -> CancelOutcome:
    """Cancel one of the session's tasks; cancelling a finished task changes nothing."""
    task = get_task_for_session(session, task_id)
    return do_cancel_task(task, reason)


@durable_transaction
def do_cancel_task(task: Task, reason: CancelReason = CancelReason.USER) -> CancelOutcome:
    """Cancel a task in any unfinished state (idempotent) and emit `cancelled`."""
    task = Task.objects.select_for_update().select_related("client_app").get(pk=task.pk)
    did_cancel = _cancel(task, reason)
    completed, total = _job_counts(task)
    return CancelOutcome(
        task=task, did_cancel=did_cancel, completed_jobs=completed, total_jobs=total
    )


def _cancel(task: Task, reason: CancelReason) -> bool:
    """Cancel a locked task and its unfinished jobs inside the caller's transaction."""
    if not advance_task(task, TaskStatus.CANCELLED, cancel_reason=reason):
        return False
    now = task.finished_at
    for job in task.jobs.exclude(status__in=JOB_TERMINAL):
        advance_job(job, JobStatus.CANCELLED, finished_at=now)
    completed, total = _job_counts(task)
    publish_event(task, "cancelled", reason=str(reason), completedJobs=completed, totalJobs=total)
    if task.upstream_id:
        # The worker following the task cancels it upstream (late results are ignored anyway).
        doorbell.ring_on_commit(doorbell.CANCEL, taskId=str(task.pk), upstreamId=task.upstream_id)
    doorbell.ring_on_commit(doorbell.QUEUE)  # queue positions behind it moved up
    logger.info("task_cancelled task=%s reason=%s", task.pk, reason)
    return True


def _job_counts(task: Task) -> tuple[int, int]:
    statuses = list(task.jobs.values_list("status", flat=True))
    return statuses.count(JobStatus.COMPLETED), len(statuses)


def advance_task(task: Task, status: TaskStatus, **fields: Any) -> bool:
    """Move a task forward to `status` (never back); return whether it moved.

    The caller must hold a transaction and should hold the task's row lock. The UPDATE is
    conditional on the status it read, so a concurrent writer can never be overwritten.
    """
    if not task_can_move(task.status, status):
        return False
    now = timezone.now()
    if status == TaskStatus.RUNNING:
        fields.setdefault("started_at", now)
    if status in TASK_TERMINAL:
        fields.setdefault("finished_at", now)
        fields.setdefault("queue_position", None)
        fields.setdefault("eta_seconds", None)
    return _conditional_update(task, status, fields)


def advance_job(job: Job, status: JobStatus, **fields: Any) -> bool:
    """Move a job forward to `status` (skipping steps, never undoing one); return if it moved."""
    if not job_can_move(job.status, status):
        return False
    now = timezone.now()
    if status in (JobStatus.INITIATING, JobStatus.RUNNING):
        fields.setdefault("started_at", job.started_at or now)
    if status in JOB_TERMINAL:
        fields.setdefault("finished_at", now)
    if status == JobStatus.COMPLETED:
        fields.setdefault("progress", 1.0)
    return _conditional_update(job, status, fields)


def _conditional_update(row: Task | Job, status: str, fields: dict[str, Any]) -> bool:
    """UPDATE the row only if its status is still the one we read; mirror it on the object."""
    query = type(row).objects.filter(pk=row.pk, status=row.status)
    if query.update(status=status, **fields) != 1:
        return False
    row.status = status
    for name, value in fields.items():
        setattr(row, name, value)
    return True


def do_retry_task(task: Task) -> Task:
    """Queue a new task with the parameters of a failed or cancelled one (state never goes back)."""
    if task.status not in (TaskStatus.FAILED, TaskStatus.CANCELLED):
        raise ValueError("only failed or cancelled tasks can be retried")
    params = task.params
    request = TaskRequest(
        client_app_id=task.client_app.client_app_id,
        kind=TaskKind(task.kind),
        upload_id=task.upload_id,
        source_job_id=task.source_job_id,
        style=params.get("style"),
        number_images=params.get("numberImages") or 1,
        seed=params.get("seed"),
        product_id=params.get("productId"),
        variant_ids=params.get("variantIds") or [],
        placement=params.get("placement"),
    )
    return check_create_task(task.session, request).task
