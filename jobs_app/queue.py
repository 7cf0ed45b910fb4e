"""Queue order, positions and ETAs: the database is the queue.

Order: higher `priority` first, then oldest first (FIFO within a priority). Interactive
photobooth work (generation, enhancement) outranks batch mockups.
"""

from __future__ import annotations

from django.db.models import Q

from jobs_app.models import Task
from jobs_app.states import TaskKind, TaskStatus

PRIORITY_BY_KIND = {TaskKind.GENERATION: 10, TaskKind.ENHANCEMENT: 10, TaskKind.MOCKUP: 0}
# Typical upstream time per task, used for ETAs until measured figures replace them.
TYPICAL_SECONDS_BY_KIND = {TaskKind.GENERATION: 20, TaskKind.ENHANCEMENT: 8, TaskKind.MOCKUP: 6}


def queue_position(task: Task) -> int:
    """Return the task's 1-based place in the queue (1 = next to be dispatched)."""
    ahead = Task.objects.filter(status=TaskStatus.QUEUED).filter(
        Q(priority__gt=task.priority)
        | Q(priority=task.priority, created_at__lt=task.created_at)
        | Q(priority=task.priority, created_at=task.created_at, id__lt=task.id)
    )
    return ahead.count() + 1


def eta_seconds(task: Task, position: int) -> int:
    """Return the estimated seconds until the task is done, from its queue position."""
    return TYPICAL_SECONDS_BY_KIND[TaskKind(task.kind)] * position
