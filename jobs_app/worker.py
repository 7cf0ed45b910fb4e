"""The background work of a server process: the task queue and the upstream event socket.

Started once per process on the server's event loop (by the ASGI application on its first
call, or at once by `manage.py serve`), never in AppConfig.ready(): management commands and
tests import the project without serving it.
"""

from __future__ import annotations

import asyncio
import logging

from django.conf import settings

from jobs_app import upstream
from jobs_app.applier import UpstreamApplier
from jobs_app.dispatcher import TaskQueue
from jobs_app.maintenance import run_maintenance
from jobs_app.upstream.socket import UpstreamSocket

logger = logging.getLogger(__name__)


class BackgroundWork:
    """The task queue and the upstream socket of this process, started at most once."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.queue: TaskQueue | None = None
        self.socket: UpstreamSocket | None = None
        self.tasks: list[asyncio.Task] = []
        self._applier: UpstreamApplier | None = None

    def applier(self) -> UpstreamApplier:
        """Return the process's applier of upstream reports (for webhooks and the admin too)."""
        if self._applier is None:
            self._applier = UpstreamApplier(upstream.get_client())
        return self._applier

    def ensure_started(self) -> None:
        """Start on the running loop unless already running there (single-flight)."""
        loop = asyncio.get_running_loop()
        if self.loop is loop or not settings.TASK_QUEUE_AUTOSTART:
            return
        self.start(loop)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        client = upstream.get_client()
        applier = self.applier()
        self.loop = loop
        self.queue = TaskQueue(client, applier)
        self.socket = UpstreamSocket(client, applier.on_socket_message, self.queue.reconcile)
        self.tasks = [
            loop.create_task(self.queue.run(), name="photobooth-task-queue"),
            loop.create_task(self.socket.run(), name="photobooth-upstream-socket"),
            loop.create_task(run_maintenance(), name="photobooth-housekeeping"),
        ]
        logger.info("background_work_started app_id=%s", client.app_id)

    async def stop(self) -> None:
        """Stop taking new work; let submissions in flight finish (graceful shutdown)."""
        if self.queue is not None:
            self.queue.stopping = True
            if self.queue.in_flight:
                await asyncio.wait(self.queue.in_flight, timeout=10)
        for task in self.tasks:
            task.cancel()
        self.tasks = []
        self.loop = None

    def status(self) -> dict[str, str]:
        """Return what /health reports about this process's background work."""
        if self.loop is None:
            return {"taskQueue": "not started", "upstreamSocket": "not started"}
        socket = self.socket
        return {
            "taskQueue": "running" if any(not t.done() for t in self.tasks) else "stopped",
            "upstreamSocket": "connected" if socket and socket.connected.is_set() else "down",
        }

    def wake_queue(self) -> None:
        """Tell the queue there is new work (thread-safe; a no-op when not running here)."""
        if self.loop is not None and self.queue is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.queue.wake.set)

    def cancel_upstream(self, upstream_id: str) -> None:
        """Cancel a task upstream from sync code (after the cancellation committed)."""
        if self.queue is None or self.loop is None or self.loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self.queue.cancel_upstream(upstream_id), self.loop)


background = BackgroundWork()
