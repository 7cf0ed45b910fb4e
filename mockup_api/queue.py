"""The shared FIFO render queue: every job of every task and app id, MOCKUP_API_WORKERS at a time.

A job holds its worker slot for its whole life (initiating, the steps, the render), as on a
real GPU worker. Slots are numbered, which gives the jobs their `worker-<n>` names.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from mockup_api.runner import runner

logger = logging.getLogger(__name__)


@dataclass(eq=False, kw_only=True)
class Ticket:
    """A job waiting for a worker."""

    task_id: str
    job_id: str
    run: Callable[[str], Coroutine[Any, Any, None]]  # called with the worker name
    announce: Callable[[int], None]  # told its 1-based queue position whenever it changes
    position: int = 0  # the last one announced


class RenderQueue:
    """Start waiting jobs in arrival order while worker slots are free."""

    def __init__(self) -> None:
        self._waiting: deque[Ticket] = deque()
        self._active: dict[int, asyncio.Task] = {}  # slot number -> the job's task

    def put(self, ticket: Ticket) -> None:
        """Queue a job behind every job already waiting."""
        self._waiting.append(ticket)
        self._announce_all()
        self.dispatch()

    def discard_task(self, task_id: str) -> None:
        """Drop the waiting jobs of a task (it was cancelled)."""
        before = len(self._waiting)
        self._waiting = deque(t for t in self._waiting if t.task_id != task_id)
        if len(self._waiting) != before:
            self._announce_all()

    def position(self, job_id: str) -> int | None:
        """Return the 1-based position of a waiting job, or None."""
        for n, ticket in enumerate(self._waiting, start=1):
            if ticket.job_id == job_id:
                return n
        return None

    def dispatch(self) -> None:
        """Start waiting jobs on free slots."""
        started = False
        while self._waiting and (slot := self._free_slot()) is not None:
            ticket = self._waiting.popleft()
            self._active[slot] = runner.spawn(
                self._run(slot, ticket), name=f"mockup-job-{ticket.job_id}"
            )
            started = True
        if started:
            self._announce_all()

    def _free_slot(self) -> int | None:
        # A slot whose task ended without cleaning up (its loop closed under it) is free again.
        for slot, task in list(self._active.items()):
            if task.done() or task.get_loop().is_closed():
                del self._active[slot]
        for slot in range(1, settings.MOCKUP_API_WORKERS + 1):
            if slot not in self._active:
                return slot
        return None

    def _announce_all(self) -> None:
        for n, ticket in enumerate(self._waiting, start=1):
            if ticket.position != n:
                ticket.position = n
                ticket.announce(n)

    async def _run(self, slot: int, ticket: Ticket) -> None:
        try:
            await ticket.run(f"worker-{slot}")
        except Exception:
            logger.exception("mockup_api job crashed job_id=%s", ticket.job_id)
        finally:
            if self._active.get(slot) is asyncio.current_task():
                del self._active[slot]
        self.dispatch()  # not reached when cancelled: shutdown must not start new jobs

    def reset(self) -> None:
        """Forget every waiting and running job (tests)."""
        self._waiting.clear()
        self._active.clear()


render_queue = RenderQueue()
