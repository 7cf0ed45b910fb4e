"""The task queue's worker side: claims queued tasks and hands them to the upstream.

Durable: the database is the queue. A worker claims a task (jobs_app.claims: leased, fenced),
submits it with the task id as the upstream's idempotency key, and records the upstream id
only while its claim holds. Transient failures (5xx, timeouts, connection errors) come back
with capped exponential backoff and full jitter; 4xx fail the task at once; waiting for the
rate limiter or an open circuit breaker consumes no attempt. The worker then follows its tasks
upstream: it reconciles them over REST after every socket (re)connection and every
RECONCILE_EVERY_SECONDS, and adopts running tasks whose worker died.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

from django.conf import settings

from jobs_app import claims, progress
from jobs_app.applier import UpstreamApplier
from jobs_app.claims import Claim
from jobs_app.files import signed_upload_url
from jobs_app.leases import WorkerIdentity
from jobs_app.models import Task
from jobs_app.progress import Submission
from jobs_app.states import TaskKind
from jobs_app.upstream.client import UpstreamClient
from jobs_app.upstream.errors import CircuitOpen, UpstreamError
from photobooth.db import in_db_thread, is_transient

logger = logging.getLogger(__name__)

_db = in_db_thread

MAX_ATTEMPTS = 5
RETRY_BASE_SECONDS = 1.0
RETRY_CAP_SECONDS = 60.0
POLL_SECONDS = 1.0
MAX_CONCURRENT_SUBMISSIONS = 8
RECONCILE_EVERY_SECONDS = 30
MOCKUP_IDS_PER_READ = 20


def retry_delay(attempt: int) -> float:
    """Return a full-jitter backoff delay for the given (1-based) attempt."""
    return random.uniform(0, min(RETRY_CAP_SECONDS, RETRY_BASE_SECONDS * 2**attempt))


class TaskQueue:
    """Dispatch queued tasks to the upstream, one claim at a time, many in flight."""

    def __init__(
        self, client: UpstreamClient, applier: UpstreamApplier, identity: WorkerIdentity
    ) -> None:
        self.client = client
        self.applier = applier
        self.identity = identity
        self.wake = asyncio.Event()
        self.in_flight: set[asyncio.Task] = set()
        self.submitting: set[str] = set()  # ids of the claimed tasks being submitted
        self.slots = asyncio.Semaphore(MAX_CONCURRENT_SUBMISSIONS)
        self.stopping = False
        self.on_submitted = lambda: None  # the worker wires in its inbox's wake-up
        self._last_reconcile = 0.0

    async def run(self) -> None:
        """Work until cancelled; a failed round is logged and the next one comes."""
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
        # Cleared before looking, not before sleeping: a ring during this round must cut the
        # next sleep short, or a task created meanwhile waits a whole poll interval.
        self.wake.clear()
        if self.client.breaker.is_open:
            # Hold tasks in the queue while the upstream is unhealthy.
            await self._sleep(self.client.breaker.retry_in())
            return
        while self.slots._value > 0 and self.identity.trusted() and not self.stopping:
            claim = await _db(claims.claim_next)(self.identity.id)
            if claim is None:
                break
            self.submitting.add(claim.task_id)
            await self.slots.acquire()
            job = asyncio.create_task(self.submit(claim), name=f"photobooth-submit-{claim.task_id}")
            self.in_flight.add(job)
            job.add_done_callback(self._submission_done)
        if loop.time() - self._last_reconcile > RECONCILE_EVERY_SECONDS:
            await self.reconcile()
        await self._sleep(POLL_SECONDS)

    def _submission_done(self, job: asyncio.Task) -> None:
        self.in_flight.discard(job)
        self.slots.release()
        self.wake.set()  # a free slot: claim the next task now, not at the next poll
        if not job.cancelled() and (exc := job.exception()) is not None:
            logger.error("task_submission_crashed", exc_info=exc)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), max(seconds, 0.05))

    # --- submission ------------------------------------------------------------------------

    async def submit(self, claim: Claim) -> None:
        """Send a claimed task upstream and record the answer while the claim holds.

        Whatever goes wrong, the claim ends released (retry later) or recorded, and the error
        is logged. What the steps below do not handle (a database error, their own release
        failing too) is released here; a database error spends no attempt, since it is not
        the task's failure. If even that release fails, release_forgotten frees the claim
        FORGOTTEN_AFTER_SECONDS after it was taken.
        """
        try:
            await self._submit(claim)
        except Exception as exc:
            logger.exception("task_submission_failed task=%s epoch=%s", claim.task_id, claim.epoch)
            await self._release(claim, repr(exc), count_attempt=not is_transient(exc))
        finally:
            self.submitting.discard(claim.task_id)

    async def _release(self, claim: Claim, error: str, *, count_attempt: bool) -> None:
        """Put a claimed task back in the queue after a failure; log if even that fails."""
        try:
            await _db(progress.do_schedule_retry)(claim, error, retry_delay(1),
                                                  count_attempt=count_attempt)  # fmt: skip
        except Exception:
            logger.exception("task_release_failed task=%s: release_forgotten frees it %s s "
                             "after its claim", claim.task_id,
                             claims.FORGOTTEN_AFTER_SECONDS)  # fmt: skip

    async def _submit(self, claim: Claim) -> None:
        task = await _db(_load)(claim.task_id)
        try:
            if not self.identity.trusted():
                # Our lease may have lapsed unseen: leave the task to whoever holds it next.
                await _db(progress.do_schedule_retry)(claim, "lease not renewed", 0,
                                                      count_attempt=False)  # fmt: skip
                return
            sent = await self._send(claim, task)
            if sent is None:
                return  # fenced: the task's new holder submits it
            upstream_id, job_ids = sent
        except CircuitOpen:
            # Not the task's failure: back in the queue without spending an attempt.
            await _db(progress.do_schedule_retry)(claim, "circuit open", 0, count_attempt=False)
            return
        except UpstreamError as exc:
            await self._failed(claim, task, exc)
            return
        except Exception as exc:
            if is_transient(exc):
                raise  # the database, not the task: submit() releases it, no attempt spent
            logger.exception("task_submit_crashed task=%s", claim.task_id)
            await self._failed(claim, task, UpstreamError(repr(exc), permanent=False))
            return
        try:
            outcome = await _db(progress.do_mark_submitted)(claim, upstream_id, job_ids)
        except Exception:
            # The upstream has the task; retrying resubmits with the same idempotency key and
            # gets the same upstream task back.
            logger.error("task_record_failed task=%s upstream=%s", claim.task_id, upstream_id)
            raise
        logger.info("task_submitted task=%s upstream=%s outcome=%s",
                    claim.task_id, upstream_id, outcome)  # fmt: skip
        if outcome == Submission.UNWANTED and task.kind != TaskKind.MOCKUP:
            await self.cancel_upstream(upstream_id)
        if outcome == Submission.RUNNING:
            self.on_submitted()  # deliveries that arrived before the id was recorded

    async def _failed(self, claim: Claim, task: Task, exc: UpstreamError) -> None:
        if exc.permanent or task.attempts + 1 >= MAX_ATTEMPTS:
            await _db(progress.do_fail_task)(task.pk, exc.code, str(exc), "submit", claim=claim)
            return
        delay = retry_delay(task.attempts + 1)
        logger.warning("task_submit_retry task=%s attempt=%s delay=%.1f error=%s",
                       task.pk, task.attempts + 1, delay, exc)  # fmt: skip
        await _db(progress.do_schedule_retry)(claim, str(exc), delay)

    async def _send(self, claim: Claim, task: Task) -> tuple[str, dict[int, str]] | None:
        """POST the task upstream (the stored body, if it was sent before); None if fenced."""
        body = await _db(progress.do_prepare_submission)(claim, self._body(task))
        if body is None:
            return None
        key = str(task.pk)  # the upstream creates one task per key, however often we ask
        if task.kind == TaskKind.MOCKUP:
            [created] = await self.client.create_mockups(body, idempotency_key=key)
            return str(created["id"]), {}
        created = await self.client.create_generation(body, idempotency_key=key)
        job_ids = {job["index"]: str(job["id"]) for job in created.get("jobs", [])}
        return str(created["id"]), job_ids

    def _body(self, task: Task) -> dict:
        params = task.params
        if task.kind == TaskKind.MOCKUP:
            return {
                "format": "png",
                "products": [{
                    "catalog_product_id": params["productId"],
                    "catalog_variant_ids": params["variantIds"],
                    "placements": [{"placement": params["placement"],
                                    "layers": [{"type": "file", "url": task.input_url}]}],
                }],
            }  # fmt: skip
        return {
            "app_id": self.client.app_id,
            "kind": task.kind,
            "style": params.get("style"),
            "number_images": params.get("numberImages") or 1,
            "seed": params.get("seed"),
            "image_url": task.input_url,
        }

    # --- cancellation and reconciliation ---------------------------------------------------

    async def cancel_upstream(self, upstream_id: str) -> None:
        """Cancel a generation upstream (late results are ignored either way)."""
        if upstream_id.startswith("mt_"):
            return  # mockup tasks have no cancel endpoint; their results are ignored
        try:
            await self.client.cancel_generation(upstream_id)
        except UpstreamError as exc:
            logger.warning("upstream_cancel_failed upstream=%s error=%s", upstream_id, exc)

    async def cancel_if_mine(self, task_id: str, upstream_id: str) -> None:
        """Cancel a cancelled task upstream when this worker followed it (one DELETE)."""
        if await _db(claims.is_owner)(task_id, self.identity.id):
            await self.cancel_upstream(upstream_id)

    async def adopt_orphans(self) -> int:
        """Take over running tasks of dead workers and read their state at once."""
        adopted = await _db(claims.adopt_orphans)(self.identity.id)
        if adopted:
            logger.warning("tasks_adopted worker=%s count=%s", self.identity.id, len(adopted))
            tasks = await _db(_tasks)([claim.task_id for claim in adopted])
            await self._read_upstream(tasks)
        return len(adopted)

    async def reconcile(self) -> None:
        """Read every task this worker follows from the upstream and apply what we missed."""
        self._last_reconcile = asyncio.get_running_loop().time()
        await self._read_upstream(await _db(claims.owned_running_tasks)(self.identity.id))

    async def _read_upstream(self, tasks: list[Task]) -> None:
        """Queue each task's upstream state on its lane (after the reports queued before)."""
        mockups = [t for t in tasks if t.kind == TaskKind.MOCKUP]
        for task in tasks:
            if task.kind == TaskKind.MOCKUP:
                continue
            try:
                data = await self.client.get_generation(task.upstream_id)
            except UpstreamError as exc:
                if exc.status == 404:
                    await self._lost(task)
                continue
            self.applier.in_lane(task.upstream_id, _apply(self.applier.apply_generation,
                                                          str(task.pk), data))  # fmt: skip
        for start in range(0, len(mockups), MOCKUP_IDS_PER_READ):
            batch = mockups[start : start + MOCKUP_IDS_PER_READ]
            try:
                found = await self.client.get_mockups([t.upstream_id for t in batch])
            except UpstreamError:
                continue
            by_id = {str(item["id"]): item for item in found}
            for task in batch:
                if task.upstream_id in by_id:
                    data = by_id[task.upstream_id]
                    self.applier.in_lane(task.upstream_id, _apply(self.applier.apply_mockup,
                                                                  str(task.pk), data))  # fmt: skip
                else:
                    # The list leaves unknown ids out (the 404 of a generation): no webhook
                    # will ever come for it, so waiting would only end at the deadline.
                    await self._lost(task)

    async def _lost(self, task: Task) -> None:
        await _db(progress.do_fail_task)(task.pk, "upstream_lost",
                                         "The upstream no longer knows this task.",
                                         "render")  # fmt: skip


def _apply(function, task_id: str, data: dict):
    async def report() -> None:
        await function(task_id, data)

    return report


# --- database steps (sync; run in the worker's database threads) ------------------------------


def _load(task_id: str) -> Task:
    task = Task.objects.select_related("upload", "source_job", "session").get(pk=task_id)
    task.input_url = _input_url(task)
    return task


def _tasks(task_ids: list[str]) -> list[Task]:
    return list(Task.objects.filter(pk__in=task_ids, upstream_id__isnull=False))


def _input_url(task: Task) -> str:
    if task.source_job_id:
        return settings.PUBLIC_BASE_URL + task.source_job.result_file.url
    return signed_upload_url(task.upload)
