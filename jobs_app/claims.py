"""Claims on tasks: which worker submits a queued task and then follows it upstream.

A claim names its worker and carries a fencing token (`Task.claim_epoch`, one more with every
claim). It is live while its worker's lease is (jobs_app.leases); only a task whose worker's
lease expired, or that has no worker, may be claimed again, never one a live worker holds.
Every write a holder makes is conditional on its epoch (jobs_app.progress), so a worker whose
claim was taken over can no longer write; the upstream POST carries the task id as its
idempotency key, so even a lost race asks the upstream once.

PostgreSQL claims with `SELECT ... FOR UPDATE SKIP LOCKED` (concurrent workers never queue on
one row); on SQLite, which has one writer at a time, the compare-and-set on the epoch alone
decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.db import connection
from django.db.models import DateTimeField, ExpressionWrapper, Q, QuerySet
from django.db.models.functions import Now

from jobs_app.models import Task
from jobs_app.queue import dispatch_order
from jobs_app.states import TaskStatus
from photobooth.db import durable_transaction

CANDIDATES_PER_CLAIM = 5
FORGOTTEN_AFTER_SECONDS = 60
ADOPT_BATCH = 50


def db_now_minus(seconds: float) -> ExpressionWrapper:
    return ExpressionWrapper(Now() - timedelta(seconds=seconds), output_field=DateTimeField())


@dataclass(frozen=True, slots=True)
class Claim:
    """A worker's claim on a task: the fencing token its writes must present."""

    task_id: str
    worker_id: str
    epoch: int


def _unclaimed() -> Q:
    """Tasks nobody holds: no worker, or a worker whose lease has expired (database time)."""
    return Q(claimed_by__isnull=True) | Q(claimed_by__lease_expires_at__lte=Now())


def _lock_skipping(candidates: QuerySet[Task]) -> QuerySet[Task]:
    if connection.features.has_select_for_update_skip_locked:
        return candidates.select_for_update(skip_locked=True, of=("self",))
    return candidates


def _take(task_id, epoch: int, worker_id: str, status: TaskStatus) -> Claim | None:
    """Compare-and-set the claim: only if nobody claimed the task since we read `epoch`."""
    taken = Task.objects.filter(pk=task_id, status=status, claim_epoch=epoch).update(
        claimed_by_id=worker_id, claim_epoch=epoch + 1, claimed_at=Now()
    )
    return Claim(task_id=str(task_id), worker_id=worker_id, epoch=epoch + 1) if taken else None


@durable_transaction
def claim_next(worker_id: str) -> Claim | None:
    """Claim the next dispatchable queued task for `worker_id`; None when there is none."""
    due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=Now())
    candidates = _lock_skipping(dispatch_order().filter(due).filter(_unclaimed()))
    # Uses the partial index task_queue_order.
    for task_id, epoch in candidates.values_list("id", "claim_epoch")[:CANDIDATES_PER_CLAIM]:
        if claim := _take(task_id, epoch, worker_id, TaskStatus.QUEUED):
            return claim
    return None


@durable_transaction
def adopt_orphans(worker_id: str) -> list[Claim]:
    """Take over running tasks whose worker died (lease expired) or left; return the claims.

    The adopter follows them upstream from now on: it reconciles them over REST and applies
    their webhooks (their socket messages went to the dead worker's app id).
    """
    orphans = Task.objects.filter(status=TaskStatus.RUNNING).filter(_unclaimed())
    orphans = _lock_skipping(orphans.order_by("created_at"))
    adopted = []
    for task_id, epoch in orphans.values_list("id", "claim_epoch")[:ADOPT_BATCH]:
        if claim := _take(task_id, epoch, worker_id, TaskStatus.RUNNING):
            adopted.append(claim)
    return adopted


@durable_transaction
def release_forgotten(worker_id: str, submitting: set[str]) -> int:
    """Release queued tasks this worker claimed a while ago but is not submitting; how many.

    A claim is released when its submission ends; this catches the one whose release itself
    failed (the database was away), so a live worker never sits on a task it forgot.
    """
    stale = Task.objects.filter(
        status=TaskStatus.QUEUED,
        claimed_by_id=worker_id,
        claimed_at__lt=db_now_minus(FORGOTTEN_AFTER_SECONDS),
    ).exclude(pk__in=list(submitting))
    return stale.update(claimed_by=None, claimed_at=None)


def owned_running_tasks(worker_id: str) -> list[Task]:
    """Return the running tasks `worker_id` follows upstream (for reconciliation)."""
    return list(
        Task.objects.filter(
            status=TaskStatus.RUNNING, upstream_id__isnull=False, claimed_by_id=worker_id
        ).order_by("created_at")
    )


def is_owner(task_id: str, worker_id: str) -> bool:
    """Return whether `worker_id` holds the task's claim (finished tasks keep their last)."""
    return Task.objects.filter(pk=task_id, claimed_by_id=worker_id).exists()
