"""The task queue's worker: claims queued tasks and hands them to the upstream.

Durable: the database is the queue. A task is claimed with a conditional UPDATE, so several
processes can run a dispatcher side by side; a crash between claim and submission is undone
at the next start (`recover`). Transient failures (5xx, timeouts, connection errors) come back
with capped exponential backoff and full jitter; 4xx fail the task at once; waiting for the
rate limiter or an open circuit breaker consumes no attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from datetime import timedelta

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections
from django.db.models import Q
from django.utils import timezone

from jobs_app import progress
from jobs_app.actions import do_cancel_task
from jobs_app.applier import UpstreamApplier
from jobs_app.catalog import CACHE_SECONDS, refresh_products
from jobs_app.files import signed_upload_url
from jobs_app.models import Task
from jobs_app.queue import dispatch_order, eta_seconds
from jobs_app.states import TASK_TERMINAL, CancelReason, TaskKind, TaskStatus
from jobs_app.upstream.client import UpstreamClient
from jobs_app.upstream.errors import CircuitOpen, UpstreamError
from photobooth.db import durable_transaction

logger = logging.getLogger(__name__)

_db = sync_to_async

MAX_ATTEMPTS = 5
RETRY_BASE_SECONDS = 1.0
RETRY_CAP_SECONDS = 60.0
POLL_SECONDS = 1.0
MAX_CONCURRENT_SUBMISSIONS = 8
RECONCILE_EVERY_SECONDS = 30
POSITIONS_EVERY_SECONDS = 1.0
CATALOG_REFRESH_SECONDS = CACHE_SECONDS
# After a failed catalog read: sooner, since /api/products and mockups wait for it.
CATALOG_RETRY_SECONDS = 15


def retry_delay(attempt: int) -> float:
    """Return a full-jitter backoff delay for the given (1-based) attempt."""
    return random.uniform(0, min(RETRY_CAP_SECONDS, RETRY_BASE_SECONDS * 2**attempt))


class TaskQueue:
    """Dispatch queued tasks to the upstream, one claim at a time, many in flight."""

    def __init__(self, client: UpstreamClient, applier: UpstreamApplier):
        self.client = client
        self.applier = applier
        self.wake = asyncio.Event()
        self.in_flight: set[asyncio.Task] = set()
        self.slots = asyncio.Semaphore(MAX_CONCURRENT_SUBMISSIONS)
        self.stopping = False
        self._last_reconcile = 0.0
        self._last_positions = 0.0
        self._next_catalog = 0.0  # loop time of the next catalog read

    async def run(self) -> None:
        """Work until cancelled."""
        try:
            await _db(recover_claims)()
            await self.refresh_catalog()
            await self.reconcile()
        except Exception:
            # The loop below reads the catalog and reconciles again: a bad answer or a database
            # hiccup at start-up must not leave the process without a queue.
            logger.exception("task_queue_start_failed")
        while not self.stopping:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("task_queue_tick_failed")
                await asyncio.sleep(POLL_SECONDS)

    async def tick(self) -> None:
        loop = asyncio.get_running_loop()
        # The queue lives outside the request cycle, so it drops stale connections itself.
        await _db(close_old_connections)()
        for task_id, upstream_id in await _db(expire_deadlines)():
            logger.warning("task_timed_out task=%s", task_id)
            if upstream_id:
                await self.cancel_upstream(upstream_id)
        if self.client.breaker.is_open:
            # Hold tasks in the queue while the upstream is unhealthy.
            await self._sleep(self.client.breaker.retry_in())
            return
        while self.slots._value > 0:
            task_id = await _db(claim_next)()
            if task_id is None:
                break
            await self.slots.acquire()
            job = asyncio.create_task(self.submit(task_id))
            self.in_flight.add(job)
            job.add_done_callback(self._submission_done)
        if loop.time() - self._last_positions >= POSITIONS_EVERY_SECONDS:
            # Positions move with every claim; telling clients once a second is plenty.
            self._last_positions = loop.time()
            await _db(refresh_queue_positions)()
        if loop.time() - self._last_reconcile > RECONCILE_EVERY_SECONDS:
            await self.reconcile()
        if loop.time() >= self._next_catalog:
            await self.refresh_catalog()
        await self._sleep(POLL_SECONDS)

    async def refresh_catalog(self) -> None:
        """Read the product catalog into the cache; after a failure, try again soon."""
        ok = await refresh_products(self.client)
        pause = CATALOG_REFRESH_SECONDS if ok else CATALOG_RETRY_SECONDS
        self._next_catalog = asyncio.get_running_loop().time() + pause

    def _submission_done(self, job: asyncio.Task) -> None:
        self.in_flight.discard(job)
        self.slots.release()
        self.wake.set()  # a free slot: claim the next task now, not at the next poll

    async def _sleep(self, seconds: float) -> None:
        self.wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), max(seconds, 0.05))

    # --- submission ------------------------------------------------------------------------

    async def submit(self, task_id: str) -> None:
        task = await _db(_load)(task_id)
        try:
            upstream_id, job_ids = await self._send(task)
        except CircuitOpen:
            # Not the task's failure: back in the queue without spending an attempt.
            await _db(progress.do_schedule_retry)(task_id, "circuit open", 0, count_attempt=False)
            return
        except UpstreamError as exc:
            await self._failed(task, exc)
            return
        except Exception as exc:
            logger.exception("task_submit_crashed task=%s", task_id)
            await self._failed(task, UpstreamError(repr(exc), permanent=False))
            return
        still_wanted = await _db(progress.do_mark_submitted)(task_id, upstream_id, job_ids)
        logger.info("task_submitted task=%s upstream=%s", task_id, upstream_id)
        if not still_wanted and task.kind != TaskKind.MOCKUP:
            await self.cancel_upstream(upstream_id)
        await self.apply_pending_webhooks(upstream_id)

    async def _failed(self, task: Task, exc: UpstreamError) -> None:
        if exc.permanent or task.attempts + 1 >= MAX_ATTEMPTS:
            await _db(progress.do_fail_task)(task.pk, exc.code, str(exc), "submit")
            return
        delay = retry_delay(task.attempts + 1)
        logger.warning("task_submit_retry task=%s attempt=%s delay=%.1f error=%s",
                       task.pk, task.attempts + 1, delay, exc)  # fmt: skip
        await _db(progress.do_schedule_retry)(task.pk, str(exc), delay)

    async def _send(self, task: Task) -> tuple[str, dict[int, str]]:
        params = task.params
        if task.kind == TaskKind.MOCKUP:
            body = {
                "format": "png",
                "products": [{
                    "catalog_product_id": params["productId"],
                    "catalog_variant_ids": params["variantIds"],
                    "placements": [{"placement": params["placement"],
                                    "layers": [{"type": "file", "url": task.input_url}]}],
                }],
            }  # fmt: skip
            [created] = await self.client.create_mockups(body)
            return str(created["id"]), {}
        body = {
            "app_id": self.client.app_id,
            "kind": task.kind,
            "style": params.get("style"),
            "number_images": params.get("numberImages") or 1,
            "seed": params.get("seed"),
            "image_url": task.input_url,
        }
        created = await self.client.create_generation(body)
        job_ids = {job["index"]: str(job["id"]) for job in created.get("jobs", [])}
        return str(created["id"]), job_ids

    # --- cancellation, webhooks and reconciliation -----------------------------------------

    async def cancel_upstream(self, upstream_id: str) -> None:
        """Cancel a generation upstream (late results are ignored either way)."""
        if upstream_id.startswith("mt_"):
            return  # mockup tasks have no cancel endpoint; their results are ignored
        try:
            await self.client.cancel_generation(upstream_id)
        except UpstreamError as exc:
            logger.warning("upstream_cancel_failed upstream=%s error=%s", upstream_id, exc)

    async def apply_pending_webhooks(self, upstream_id: str) -> None:
        from jobs_app.webhooks import apply_pending_deliveries

        await apply_pending_deliveries(self.applier, upstream_id)

    async def reconcile(self) -> None:
        """Read every in-flight task from the upstream and apply what we missed."""
        self._last_reconcile = asyncio.get_running_loop().time()
        tasks = await _db(progress.running_tasks)()
        mockups = [t for t in tasks if t.kind == TaskKind.MOCKUP]
        for task in tasks:
            if task.kind == TaskKind.MOCKUP:
                continue
            try:
                data = await self.client.get_generation(task.upstream_id)
            except UpstreamError as exc:
                if exc.status == 404:
                    await _db(progress.do_fail_task)(task.pk, "upstream_lost",
                                                     "The upstream no longer knows this task.",
                                                     "render")  # fmt: skip
                continue
            await self.applier.apply_generation(str(task.pk), data)
        for start in range(0, len(mockups), 20):
            batch = mockups[start : start + 20]
            try:
                found = await self.client.get_mockups([t.upstream_id for t in batch])
            except UpstreamError:
                continue
            by_id = {str(item["id"]): item for item in found}
            for task in batch:
                if task.upstream_id in by_id:
                    await self.applier.apply_mockup(str(task.pk), by_id[task.upstream_id])
                else:
                    # The list leaves unknown ids out (the 404 of a generation): no webhook
                    # will ever come for it, so waiting would only end at the deadline.
                    await _db(progress.do_fail_task)(task.pk, "upstream_lost",
                                                     "The upstream no longer knows this task.",
                                                     "render")  # fmt: skip


# --- database steps (sync; run through sync_to_async) ----------------------------------------


@durable_transaction
def claim_next() -> str | None:
    """Claim the next dispatchable task with a conditional UPDATE; return its id."""
    now = timezone.now()
    due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    candidates = dispatch_order().filter(due, claimed_at__isnull=True).values_list("id", flat=True)
    for task_id in candidates[:5]:
        # Uses the partial index task_queue_order; another dispatcher may win the row.
        claimed = Task.objects.filter(
            pk=task_id, status=TaskStatus.QUEUED, claimed_at__isnull=True
        ).update(claimed_at=now)
        if claimed == 1:
            return str(task_id)
    return None


@durable_transaction
def recover_claims() -> int:
    """Release claims of tasks that never reached the upstream (the process stopped)."""
    return Task.objects.filter(
        status=TaskStatus.QUEUED, claimed_at__isnull=False, upstream_id__isnull=True
    ).update(claimed_at=None)


def _load(task_id: str) -> Task:
    task = Task.objects.select_related("upload", "source_job", "session").get(pk=task_id)
    task.input_url = _input_url(task)
    return task


def _input_url(task: Task) -> str:
    if task.source_job_id:
        return settings.PUBLIC_BASE_URL + task.source_job.result_file.url
    return signed_upload_url(task.upload)


def expire_deadlines() -> list[tuple[str, str | None]]:
    """Cancel (reason `timeout`) the tasks past their deadline; return (id, upstream id)."""
    horizon = timezone.now() - timedelta(seconds=settings.TASK_DEADLINE_SECONDS)
    late = Task.objects.exclude(status__in=TASK_TERMINAL).filter(created_at__lt=horizon)
    expired = []
    for task in late.select_related("client_app"):
        if do_cancel_task(task, CancelReason.TIMEOUT).did_cancel:
            expired.append((str(task.pk), task.upstream_id))
    return expired


def refresh_queue_positions() -> None:
    """Emit `queued` with the new position for every queued task whose place changed."""
    for position, task in enumerate(dispatch_order().only("id", "kind", "queue_position"), 1):
        if task.queue_position != position:
            progress.do_update_queue_position(task.pk, position, eta_seconds(task, position))
