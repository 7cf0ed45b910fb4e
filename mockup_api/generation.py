"""Run generation and enhancement tasks: fetch the input, queue the jobs, stream their messages.

Every state change updates the task record first (what GET shows), then publishes the socket
message of the task's app id; webhooks go out when a job or the task reaches a final state.
Nothing is delivered for a task once it is cancelled: each await is followed by a check.
"""

from __future__ import annotations

import asyncio
import functools
import random
import secrets
from dataclasses import dataclass
from typing import Any, Literal

from django.conf import settings

from mockup_api import files, render_jobs
from mockup_api.connections import registry
from mockup_api.fetch import InputUnavailable, fetch_image
from mockup_api.queue import Ticket, render_queue
from mockup_api.runner import runner
from mockup_api.store import GenerationTask, Job, new_id, now, store
from mockup_api.webhooks import webhooks

chance = random.random  # the failure-rate draw; tests may swap it
SEED_MAX = 2**31 - 1
PREVIEW_SIZE = 192
RESULT_SIZE = 768


@dataclass(frozen=True, slots=True, kw_only=True)
class GenerationRequest:
    """A validated body of POST /v2/generation-tasks."""

    app_id: str
    kind: Literal["generation", "enhancement"]
    style: str | None
    number_images: int
    seed: int | None
    image_url: str


def create_task(request: GenerationRequest, *, files_base: str) -> GenerationTask:
    """Record a new task and start it in the background."""
    task = GenerationTask(
        id=new_id("gt"),
        app_id=request.app_id,
        kind=request.kind,
        style=request.style,
        number_images=request.number_images,
        seed=request.seed if request.seed is not None else secrets.randbelow(SEED_MAX),
        image_url=request.image_url,
        files_base=files_base,
    )
    task.jobs = [Job(id=new_id("gj"), index=n) for n in range(request.number_images)]
    store.add(task)
    runner.spawn(_run_task(task), name=f"mockup-task-{task.id}")
    return task


def cancel_task(task: GenerationTask) -> None:
    """Cancel `task` unless it has finished; running jobs notice at their next step."""
    if task.final:
        return
    task.status = "cancelled"
    task.finished_at = now()
    for job in task.jobs:
        if not job.final:
            job.status = "cancelled"
    render_queue.discard_task(task.id)
    _finish(task)


async def _run_task(task: GenerationTask) -> None:
    try:
        source = await fetch_image(task.image_url)
    except InputUnavailable as exc:
        _fail_every_job(task, "input_unavailable", str(exc))
        return
    except Exception as exc:  # the render pool broke twice: fail the jobs, never hang them
        _fail_every_job(task, "render_failed", f"The renderer failed: {exc!r}")
        return
    if task.final:
        return  # cancelled while the input was downloading
    task.status = "running"
    for job in task.jobs:
        render_queue.put(
            Ticket(
                task_id=task.id,
                job_id=job.id,
                run=functools.partial(_run_job, task, job, source),
                announce=functools.partial(_announce_position, task, job),
            )
        )


def _announce_position(task: GenerationTask, job: Job, position: int) -> None:
    if job.status == "queued" and not task.final:
        _publish(task, job, "jobState", state="queued", queuePosition=position)


async def _run_job(task: GenerationTask, job: Job, source: bytes, worker_name: str) -> None:
    if task.final:
        return
    job.status, job.worker_name = "initiating", worker_name
    _publish(task, job, "jobState", state="initiating", workerName=worker_name)
    job.status = "started"
    _publish(task, job, "jobState", state="started", workerName=worker_name)
    # Read once per job, so one job's messages agree with each other.
    steps, step_seconds = settings.MOCKUP_API_STEPS, settings.MOCKUP_API_STEP_SECONDS
    failure: str | None = None
    if chance() < settings.MOCKUP_API_FAILURE_RATE:
        failure = "The renderer failed (simulated by MOCKUP_API_FAILURE_RATE)."
    preview_at = max(1, steps // 2)
    rendered: render_jobs.GenerationRender | None = None
    for step in range(1, steps + 1):
        if step_seconds > 0:
            await asyncio.sleep(step_seconds)
        if task.final:
            return
        job.progress = step / steps
        _publish(task, job, "jobProgress", step=step, stepCount=steps)
        if step == preview_at and failure is None:
            try:
                rendered = await _render(task, job, source)
            except Exception as exc:  # a render bug must fail the job, not hang the task
                failure = f"The renderer failed: {exc.__class__.__name__}: {exc}"
                continue
            if task.final:
                return  # cancelled during the render: the orphan files expire with the others
            job.preview_url = task.files_base + rendered.preview
            _publish(task, job, "jobPreview", url=job.preview_url)
    if task.final:
        return
    if failure is not None or rendered is None:
        _fail_job(task, job, "render_failed", failure or "The renderer produced nothing.")
        return
    # The result was saved with the preview; its URL is told only now, at the job's end.
    width, height = rendered.width, rendered.height
    url = task.files_base + rendered.result
    job.result = {"url": url, "width": width, "height": height, "content_type": "image/png"}
    job.status, job.progress = "completed", 1.0
    _publish(task, job, "jobResult", url=url, width=width, height=height)
    _job_finished(task)


async def _render(task: GenerationTask, job: Job, source: bytes) -> render_jobs.GenerationRender:
    """Render the job's image in the render pool; host its preview and its result."""
    rendered = await runner.in_pool(
        render_jobs.render_generation,
        source,
        kind=task.kind,
        style=task.style or "",
        seed=task.seed + job.index,
        size=RESULT_SIZE,
        preview_size=PREVIEW_SIZE,
        directory=files.storage_dir(),
    )
    files.sweep_now_and_then()
    return rendered


def _fail_every_job(task: GenerationTask, code: str, message: str) -> None:
    for job in task.jobs:
        if not task.final:
            _fail_job(task, job, code, message)


def _fail_job(task: GenerationTask, job: Job, code: str, message: str) -> None:
    job.status, job.error = "failed", {"code": code, "message": message}
    _publish(task, job, "jobError", code=code, message=message)
    _job_finished(task)


def _job_finished(task: GenerationTask) -> None:
    webhooks.job_progress(task.id, task.to_dict())
    if all(job.final for job in task.jobs):
        failed = all(job.status == "failed" for job in task.jobs)
        task.status = "failed" if failed else "completed"
        task.finished_at = now()
        _finish(task)


def _finish(task: GenerationTask) -> None:
    registry.publish(
        task.app_id, {"type": "taskCompleted", "taskId": task.id, "status": task.status}
    )
    webhooks.task_finished("generation_task_finished", task.id, task.to_dict())


def _publish(task: GenerationTask, job: Job, kind: str, **fields: Any) -> None:
    message = {"type": kind, "taskId": task.id, "jobId": job.id, "jobIndex": job.index, **fields}
    registry.publish(task.app_id, message)
