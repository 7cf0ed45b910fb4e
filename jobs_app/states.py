"""Task and job statuses and the one place that decides which transitions are allowed.

State only moves forward: a late, repeated or out-of-order report never moves a task or a job
back (contract section 5). `advance_task` and `advance_job` are the only writers of `status`.
"""

from __future__ import annotations

from django.db import models


class TaskKind(models.TextChoices):
    GENERATION = "generation"
    ENHANCEMENT = "enhancement"
    MOCKUP = "mockup"


class TaskStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class JobStatus(models.TextChoices):
    PENDING = "pending"
    INITIATING = "initiating"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class CancelReason(models.TextChoices):
    USER = "user"
    REPLACED = "replaced"
    TIMEOUT = "timeout"
    SHUTDOWN = "shutdown"


TASK_TERMINAL = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})
JOB_TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})

# Rank of each status on the way forward; terminal statuses share the last rank, so one
# terminal status never replaces another.
_TASK_RANK = {TaskStatus.QUEUED: 0, TaskStatus.RUNNING: 1, **dict.fromkeys(TASK_TERMINAL, 2)}
_JOB_RANK = {
    JobStatus.PENDING: 0,
    JobStatus.INITIATING: 1,
    JobStatus.RUNNING: 2,
    **dict.fromkeys(JOB_TERMINAL, 3),
}


def task_can_move(current: str, new: str) -> bool:
    """Return whether a task may go from `current` to `new` (strictly forward)."""
    return _TASK_RANK[TaskStatus(new)] > _TASK_RANK[TaskStatus(current)]


def job_can_move(current: str, new: str) -> bool:
    """Return whether a job may go from `current` to `new` (forward; steps may be skipped)."""
    return _JOB_RANK[JobStatus(new)] > _JOB_RANK[JobStatus(current)]
