"""Queue order, positions and ETAs: the database is the queue.

Order: higher `priority` first, then oldest first (FIFO within a priority). Interactive
photobooth work (generation, enhancement) outranks batch mockups; a task that has waited
AGING_SECONDS is served like interactive work, so nothing starves.
"""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Case, F, QuerySet, SmallIntegerField, Value, When
from django.utils import timezone

from jobs_app.models import Task
from jobs_app.states import TaskKind, TaskStatus

PRIORITY_BY_KIND = {TaskKind.GENERATION: 10, TaskKind.ENHANCEMENT: 10, TaskKind.MOCKUP: 0}
TOP_PRIORITY = max(PRIORITY_BY_KIND.values())
AGING_SECONDS = 120
# Typical upstream time per task, used for ETAs until measured figures replace them.
TYPICAL_SECONDS_BY_KIND = {TaskKind.GENERATION: 20, TaskKind.ENHANCEMENT: 8, TaskKind.MOCKUP: 6}


def dispatch_order() -> QuerySet[Task]:
    """Return the queued tasks in the order the dispatcher takes them."""
    aged = timezone.now() - timedelta(seconds=AGING_SECONDS)
    return (
        Task.objects.filter(status=TaskStatus.QUEUED)
        .annotate(
            effective_priority=Case(
                When(created_at__lte=aged, then=Value(TOP_PRIORITY)),
                default=F("priority"),
                output_field=SmallIntegerField(),
            )
        )
        .order_by("-effective_priority", "created_at", "id")
    )


def queue_positions() -> dict:
    """Return {task id: 1-based position} for every queued task."""
    ids = dispatch_order().values_list("id", flat=True)
    return {task_id: position for position, task_id in enumerate(ids, start=1)}


def queue_position(task: Task) -> int:
    """Return the task's 1-based place in the queue (1 = next to be dispatched)."""
    return queue_positions().get(task.pk, 1)


def eta_seconds(task: Task, position: int) -> int:
    """Return the estimated seconds until the task is done, from its queue position."""
    return TYPICAL_SECONDS_BY_KIND[TaskKind(task.kind)] * position
