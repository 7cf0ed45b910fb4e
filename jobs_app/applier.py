"""Turn the upstream's reports (socket messages, webhooks, REST reads) into our actions.

The one place reports are applied, on the worker's loop: every report of an upstream task,
whatever its source, goes through that task's lane (`in_lane`), so they apply in order, one
at a time per task, while tasks never wait for each other. Downloads go through the one
upstream client, database work through the actions in jobs_app.progress (each idempotent and
forward-only): socket and webhook may report the same completion; whichever comes second finds
nothing to move and changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from jobs_app import progress
from jobs_app.files import delete_result, store_result
from jobs_app.models import Job
from jobs_app.states import JOB_TERMINAL, JobStatus, job_can_move
from jobs_app.supervision import spawn
from jobs_app.upstream.client import UpstreamClient
from jobs_app.upstream.errors import UpstreamError
from photobooth.db import in_db_thread, is_transient

logger = logging.getLogger(__name__)

PROGRESS_INTERVAL_SECONDS = progress.PROGRESS_MIN_INTERVAL.total_seconds()
LANE_IDLE_SECONDS = 30
UNKNOWN_TASK_RETRIES = 10
UNKNOWN_TASK_PAUSE_SECONDS = 0.2
# A report that met a database error (a locked SQLite database) is applied again, this often.
REPORT_ATTEMPTS = 3
REPORT_RETRY_SECONDS = 0.5

Report = Callable[[], Awaitable[object]]  # applies one report when awaited

_db = in_db_thread  # the worker's database threads (photobooth.db)


class UpstreamApplier:
    """Apply upstream reports for our tasks."""

    def __init__(self, client: UpstreamClient):
        self.client = client
        self._task_ids: dict[str, str] = {}  # upstream id -> our task id
        self._progress_sent: dict[tuple[str, int], float] = {}  # (task, job) -> monotonic time
        self._lanes: dict[str, asyncio.Queue] = {}  # upstream task id -> its pending reports
        self._lane_workers: set[asyncio.Task] = set()

    def _progress_due(self, task_id: str, index: int) -> bool:
        """Return whether a progress report may produce an event (250 ms per job, contract 7)."""
        now = time.monotonic()
        if now - self._progress_sent.get((task_id, index), -1.0) < PROGRESS_INTERVAL_SECONDS:
            return False
        self._progress_sent[(task_id, index)] = now
        if len(self._progress_sent) > 10_000:
            self._progress_sent.clear()  # bounded: forgetting only costs a transaction
        return True

    async def task_id_for(self, upstream_id: str | None) -> str | None:
        if not upstream_id:
            return None
        if upstream_id not in self._task_ids:
            task = await _db(progress.task_for_upstream)(upstream_id)
            if task is None:
                return None
            if len(self._task_ids) > 10_000:
                self._task_ids.clear()  # bounded: forgetting only costs a query
            self._task_ids[upstream_id] = str(task.pk)
        return self._task_ids[upstream_id]

    # --- the event socket ------------------------------------------------------------------

    async def on_socket_message(self, message: dict[str, Any]) -> None:
        """Queue a socket message on its task's lane and return at once."""
        self.in_lane(str(message.get("taskId") or ""), partial(self.apply_socket_message, message))

    def in_lane(self, upstream_id: str, report: Report) -> None:
        """Apply `report` after the reports of the same upstream task queued before it."""
        lane = self._lanes.get(upstream_id)
        if lane is None:
            lane = self._lanes[upstream_id] = asyncio.Queue()
            spawn(self._drain_lane(upstream_id, lane), name=f"photobooth-lane-{upstream_id}",
                  keep=self._lane_workers)  # fmt: skip
        lane.put_nowait(report)

    async def _drain_lane(self, upstream_id: str, lane: asyncio.Queue) -> None:
        """Apply a task's reports in order; end when the lane has been idle a while."""
        while True:
            try:
                report = await asyncio.wait_for(lane.get(), LANE_IDLE_SECONDS)
            except TimeoutError:
                if lane.empty():
                    self._lanes.pop(upstream_id, None)
                    return
                continue
            await self._apply_report(upstream_id, report)

    async def _apply_report(self, upstream_id: str, report: Report) -> None:
        """Apply one report; try again after a database error (reports are idempotent)."""
        for attempt in range(1, REPORT_ATTEMPTS + 1):
            try:
                await report()
                return
            except Exception as exc:
                if not is_transient(exc) or attempt == REPORT_ATTEMPTS:
                    # Supervised: one bad report must not end the lane (or lose the next
                    # ones); reconciliation and webhooks bring what it carried again.
                    logger.exception("upstream_report_failed upstream=%s attempt=%s",
                                     upstream_id, attempt)  # fmt: skip
                    return
                logger.warning("upstream_report_retry upstream=%s attempt=%s error=%r",
                               upstream_id, attempt, exc)  # fmt: skip
            await asyncio.sleep(REPORT_RETRY_SECONDS * attempt)

    async def apply_socket_message(self, message: dict[str, Any]) -> None:
        """Apply one socket message (jobState, jobProgress, jobPreview, jobResult, ...)."""
        kind = message.get("type")
        if kind == "jobState" and str(message.get("state")) not in progress.JOB_STATE_STEPS:
            # The upstream's own queue positions (`queued`) come every time its render queue
            # moves, dozens per job: they change nothing of ours, so they cost nothing.
            return
        task_id = await self.task_id_for(message.get("taskId"))
        for _ in range(UNKNOWN_TASK_RETRIES):
            if task_id is not None:
                break
            # A fast upstream reports before our submission's answer is recorded: wait a
            # little (this lane only); reconciliation covers anything later still.
            await asyncio.sleep(UNKNOWN_TASK_PAUSE_SECONDS)
            task_id = await self.task_id_for(message.get("taskId"))
        if task_id is None:
            return
        index = message.get("jobIndex")
        try:
            if kind == "jobState" and isinstance(index, int):
                await _db(progress.do_apply_job_state)(
                    task_id, index, message.get("state", ""), message.get("workerName") or ""
                )
            elif kind == "jobProgress" and isinstance(index, int):
                if not self._progress_due(task_id, index):
                    return  # would be throttled anyway: spare the transaction
                await _db(progress.do_apply_job_progress)(
                    task_id, index, int(message["step"]), int(message["stepCount"]),
                    message.get("etaSeconds"),
                )  # fmt: skip
            elif kind == "jobPreview" and isinstance(index, int):
                await self.preview(task_id, index, message["url"])
            elif kind == "jobResult" and isinstance(index, int):
                await self.complete_job(task_id, index, message["url"])
            elif kind == "jobError" and isinstance(index, int):
                await _db(progress.do_fail_job)(
                    task_id, index, message.get("code") or "render_failed",
                    message.get("message") or "The image could not be rendered.",
                )  # fmt: skip
            elif kind == "taskCompleted":
                await self.task_finished(task_id, message.get("taskId"))
        except (KeyError, TypeError, ValueError) as exc:
            logger.warning("upstream_message_malformed type=%s error=%r", kind, exc)

    # --- shared steps ----------------------------------------------------------------------

    async def complete_job(self, task_id: str, index: int, url: str) -> bool:
        """Copy a job's result into our storage and record it (once)."""
        if await _db(_job_is_final)(task_id, index):
            return False
        try:
            data, _ = await self.client.download(url)
            stored = await _db(store_result)(data)
        except (UpstreamError, ValueError) as exc:
            logger.warning("result_download_failed task=%s job=%s error=%s", task_id, index, exc)
            permanent = isinstance(exc, ValueError) or exc.permanent
            if permanent:
                await _db(progress.do_fail_job)(task_id, index, "result_unavailable", str(exc))
            return False
        applied = False
        try:
            applied = await _db(progress.do_complete_job)(task_id, index, stored)
        finally:
            if not applied:  # already final, or the write failed (the report is retried)
                await _db(delete_result)(stored.name)
        return applied

    async def preview(self, task_id: str, index: int, url: str) -> None:
        try:
            data, _ = await self.client.download(url)
            stored = await _db(store_result)(data)
        except (UpstreamError, ValueError) as exc:
            logger.info("preview_skipped task=%s job=%s error=%s", task_id, index, exc)
            return
        applied = False
        try:
            applied = await _db(progress.do_apply_job_preview)(task_id, index, stored)
        finally:
            if not applied:
                await _db(delete_result)(stored.name)

    async def task_finished(self, task_id: str, upstream_id: str | None) -> None:
        """The upstream says the task is done; fetch what the socket may not have told us."""
        await _db(progress.do_note_upstream_finished)(task_id)
        if upstream_id and await _db(progress.unfinished_job_indexes)(task_id):
            try:
                await self.apply_generation(task_id, await self.client.get_generation(upstream_id))
            except UpstreamError as exc:
                logger.warning("reconcile_failed task=%s error=%s", task_id, exc)

    # --- whole task objects (REST reads and webhooks) --------------------------------------

    async def apply_generation(self, task_id: str, data: dict[str, Any]) -> None:
        """Apply an upstream generation task object: every job's state, then the task's.

        One read first tells which jobs are behind what the upstream reports; only those get a
        transaction (a reconciliation of a 16-image task that missed nothing costs one query,
        not 16 locked transactions). The read takes no lock: statuses only move forward, so a
        stale read can only send an action that then finds nothing to move.
        """
        ours = await _db(_job_statuses)(task_id)
        for job in sorted(data.get("jobs", []), key=lambda j: j.get("index", 0)):
            index = job.get("index")
            if not isinstance(index, int) or index not in ours:
                continue
            current, status = ours[index], job.get("status")
            if current in JOB_TERMINAL:
                continue
            if status in ("initiating", "started", "completed", "failed") and job_can_move(
                current, JobStatus.INITIATING if status == "initiating" else JobStatus.RUNNING
            ):
                # Replay the steps the socket may have missed; a no-op when already past them.
                state = "initiating" if status == "initiating" else "started"
                await _db(progress.do_apply_job_state)(
                    task_id, index, state, job.get("worker_name") or ""
                )
            if status == "completed" and (job.get("result") or {}).get("url"):
                await self.complete_job(task_id, index, job["result"]["url"])
            elif status == "failed":
                error = job.get("error") or {}
                await _db(progress.do_fail_job)(
                    task_id, index, error.get("code") or "render_failed",
                    error.get("message") or "The image could not be rendered.",
                )  # fmt: skip
            elif status == "cancelled":
                # Cancelled upstream, not by us (ours finish the task first, so this changes
                # nothing then): the job will never come, so it ends now, not at the deadline.
                await _db(progress.do_fail_job)(
                    task_id, index, "upstream_cancelled", "The upstream cancelled this image."
                )
        if data.get("status") in ("completed", "failed", "cancelled"):
            await _db(progress.do_note_upstream_finished)(task_id)

    async def apply_mockup(self, task_id: str, data: dict[str, Any]) -> None:
        """Apply an upstream mockup task object: one job per variant."""
        status = data.get("status")
        if status == "failed":
            reasons = "; ".join(str(r) for r in data.get("failure_reasons") or []) or "failed"
            await _db(progress.do_fail_task)(task_id, "mockup_failed", reasons, "render")
            return
        if status != "completed":
            return
        jobs = await _db(_jobs_by_variant)(task_id)
        for variant in data.get("catalog_variant_mockups") or []:
            index = jobs.get(str(variant.get("catalog_variant_id")))
            mockups = variant.get("mockups") or []
            if index is None or not mockups:
                continue
            await self.complete_job(task_id, index, mockups[0]["mockup_url"])
        for index in await _db(progress.unfinished_job_indexes)(task_id):
            await _db(progress.do_fail_job)(
                task_id, index, "mockup_missing", "The upstream returned no mockup for it."
            )
        await _db(progress.do_note_upstream_finished)(task_id)


def _job_statuses(task_id: str) -> dict[int, str]:
    return dict(Job.objects.filter(task_id=task_id).values_list("index", "status"))


def _job_is_final(task_id: str, index: int) -> bool:
    return Job.objects.filter(task_id=task_id, index=index, status__in=JOB_TERMINAL).exists()


def _jobs_by_variant(task_id: str) -> dict[str, int]:
    return dict(Job.objects.filter(task_id=task_id).values_list("variant_id", "index"))
