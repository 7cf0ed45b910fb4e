"""Run mockup tasks: one design placed on every variant x placement of one catalog product.

Mockups send no socket messages; their only announcement is the mockup_task_finished webhook.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from mockup_api import files, render_jobs
from mockup_api.fetch import InputUnavailable, fetch_image
from mockup_api.runner import runner
from mockup_api.store import MockupTask, new_id, now, store
from mockup_api.webhooks import webhooks

chance = random.random  # the failure-rate draw; tests may swap it
MOCKUP_SIZE = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class MockupRequest:
    """One validated products entry of POST /v2/mockup-tasks."""

    product: dict[str, Any]
    variant_ids: list[int]
    layers: dict[str, str]  # placement -> URL of its file layer


def create_tasks(requests: list[MockupRequest], *, files_base: str) -> list[MockupTask]:
    """Record one task per products entry and start each in the background."""
    tasks = []
    for request in requests:
        task = MockupTask(
            id=new_id("mt"),
            product=request.product,
            variant_ids=request.variant_ids,
            layers=request.layers,
            files_base=files_base,
        )
        store.add(task)
        runner.spawn(_run_task(task), name=f"mockup-task-{task.id}")
        tasks.append(task)
    return tasks


async def _run_task(task: MockupTask) -> None:
    designs: dict[str, bytes] = {}
    try:
        for url in dict.fromkeys(task.layers.values()):  # each distinct URL once, in order
            designs[url] = await fetch_image(url)
    except InputUnavailable as exc:
        task.failure_reasons.append({"code": "input_unavailable", "message": str(exc)})
        _finish(task)
        return
    except Exception as exc:  # the render pool broke twice: fail the task, never hang it
        message = f"The renderer failed: {exc!r}"
        task.failure_reasons.append({"code": "render_failed", "message": message})
        _finish(task)
        return
    variants = {variant["id"]: variant for variant in task.product["variants"]}
    for variant_id in task.variant_ids:
        if (step_seconds := settings.MOCKUP_API_STEP_SECONDS) > 0:
            await asyncio.sleep(step_seconds)
        mockups = []
        for placement, url in task.layers.items():
            try:
                if chance() < settings.MOCKUP_API_FAILURE_RATE:
                    raise RuntimeError("simulated by MOCKUP_API_FAILURE_RATE")
                name = await runner.in_pool(
                    render_jobs.render_mockup,
                    designs[url],
                    task.product,
                    variants[variant_id],
                    placement,
                    size=MOCKUP_SIZE,
                    directory=files.storage_dir(),
                )
                files.sweep_now_and_then()
            except Exception as exc:  # one bad render fails the task, not the server
                task.failure_reasons.append(
                    {
                        "code": "render_failed",
                        "message": f"The renderer failed: {exc}",
                        "catalog_variant_id": variant_id,
                        "placement": placement,
                    }
                )
                continue
            mockups.append({"placement": placement, "mockup_url": task.files_base + name})
        if mockups:
            task.mockups[variant_id] = mockups
    _finish(task)


def _finish(task: MockupTask) -> None:
    task.status = "failed" if task.failure_reasons else "completed"
    task.finished_at = now()
    webhooks.task_finished("mockup_task_finished", task.id, task.to_dict())
