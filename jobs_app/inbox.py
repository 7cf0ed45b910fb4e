"""The workers' side of webhook deliveries: apply what the webhook view stored.

A stored, verified delivery stays `pending` until a worker has applied it, so one taken by a
process that died is still applied. It is applied by the worker that follows its task (the
task's claim holder), in that task's lane of the applier, so socket messages, webhooks and
reconciliation reads of one task apply in order, one at a time. A task whose worker died is
adopted by another within the lease (jobs_app.claims.adopt_orphans), which then applies its
deliveries; deliveries for finished tasks change nothing and may be applied by anyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from functools import partial

from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from jobs_app.applier import UpstreamApplier
from jobs_app.leases import WorkerIdentity
from jobs_app.models import Task, WebhookDelivery, WebhookOutcome, WebhookVerdict
from jobs_app.states import TASK_TERMINAL, TaskKind
from photobooth.db import durable_transaction, in_db_thread, is_transient

logger = logging.getLogger(__name__)

POLL_SECONDS = 1.0
BATCH = 200

_db = in_db_thread


def deliveries_to_apply(worker_id: str, limit: int = BATCH) -> list[tuple[int, str]]:
    """Return (delivery id, upstream task id) of pending deliveries this worker should apply."""
    followed = Task.objects.filter(upstream_id=OuterRef("upstream_task_id")).filter(
        Q(claimed_by_id=worker_id) | Q(status__in=TASK_TERMINAL)
    )
    pending = WebhookDelivery.objects.filter(
        outcome=WebhookOutcome.PENDING, verdict=WebhookVerdict.VERIFIED
    ).filter(Exists(followed))  # uses the partial index webhook_pending_by_task
    return list(pending.order_by("received_at", "id").values_list("id", "upstream_task_id")[:limit])


async def apply_delivery(applier: UpstreamApplier, delivery_id: int) -> str:
    """Apply a stored, verified delivery to its task; record and return the outcome."""
    delivery, task = await _db(_delivery_and_task)(delivery_id)
    if task is None:
        return WebhookOutcome.PENDING
    if delivery.outcome not in (WebhookOutcome.PENDING, WebhookOutcome.FAILED):
        return delivery.outcome  # applied meanwhile (by an earlier owner of the task)
    payload = json.loads(delivery.body)
    before = await _db(_task_version)(task.pk)
    try:
        if task.kind == TaskKind.MOCKUP:
            await applier.apply_mockup(str(task.pk), payload["data"])
        else:
            await applier.apply_generation(str(task.pk), payload["data"])
    except Exception as exc:
        if is_transient(exc):
            # The database's trouble, not the delivery's: it stays pending and the next
            # round (within POLL_SECONDS) applies it again; applying is idempotent.
            logger.warning("webhook_apply_deferred delivery=%s error=%r", delivery_id, exc)
            return WebhookOutcome.PENDING
        logger.exception("webhook_apply_failed delivery=%s", delivery_id)
        await _db(_record)(delivery_id, WebhookOutcome.FAILED, repr(exc))
        return WebhookOutcome.FAILED
    moved = await _db(_task_version)(task.pk) != before
    outcome = WebhookOutcome.APPLIED if moved else WebhookOutcome.NO_CHANGE
    await _db(_record)(delivery_id, outcome, "")
    return outcome


@durable_transaction
def do_requeue_delivery(delivery_id: int) -> bool:
    """Mark a verified delivery to be applied again (the admin's re-apply)."""
    return bool(
        WebhookDelivery.objects.filter(pk=delivery_id, verdict=WebhookVerdict.VERIFIED).update(
            outcome=WebhookOutcome.PENDING, error="", applied_at=None
        )
    )


def _delivery_and_task(delivery_id: int) -> tuple[WebhookDelivery, Task | None]:
    delivery = WebhookDelivery.objects.get(pk=delivery_id)
    task = delivery.task or Task.objects.filter(upstream_id=delivery.upstream_task_id).first()
    if task is not None and delivery.task_id is None:
        WebhookDelivery.objects.filter(pk=delivery_id).update(task=task)
    return delivery, task


def _task_version(task_id) -> int:
    """Return the task's newest event number: it moves exactly when something changed."""
    return Task.objects.values_list("last_event_seq", flat=True).get(pk=task_id)


@durable_transaction
def _record(delivery_id: int, outcome: str, error: str) -> None:
    WebhookDelivery.objects.filter(pk=delivery_id).update(
        outcome=outcome, error=error, applied_at=timezone.now()
    )


class Inbox:
    """Apply the pending deliveries of the tasks this worker follows, woken or every second."""

    def __init__(self, applier: UpstreamApplier, identity: WorkerIdentity) -> None:
        self.applier = applier
        self.identity = identity
        self.wake = asyncio.Event()
        self._queued: set[int] = set()  # deliveries waiting in a lane: never queued twice
        self._idle = asyncio.Event()

    async def run(self) -> None:
        """Work until cancelled; a failed round is logged and the next one comes."""
        while True:
            self.wake.clear()  # before looking: a ring during the round is not lost
            try:
                await self.drain()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("inbox_round_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), POLL_SECONDS)

    async def drain(self) -> int:
        """Queue every pending delivery this worker should apply; return how many were new."""
        found = await _db(deliveries_to_apply)(self.identity.id)
        new = [(d, u) for d, u in found if d not in self._queued]
        for delivery_id, upstream_id in new:
            self._queued.add(delivery_id)
            self.applier.in_lane(upstream_id, partial(self._apply, delivery_id))
        return len(new)

    async def _apply(self, delivery_id: int) -> None:
        try:
            await apply_delivery(self.applier, delivery_id)
        finally:
            self._queued.discard(delivery_id)
            if not self._queued:
                self._idle.set()

    async def settle(self) -> None:
        """Apply everything pending now and wait until it is applied (tests, drains)."""
        await self.drain()
        if self._queued:
            self._idle.clear()
            await self._idle.wait()
