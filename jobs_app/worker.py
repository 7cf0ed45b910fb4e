"""A worker: the background work of a process, wired together and started on its event loop.

`manage.py worker` runs only this; `manage.py serve` runs it beside the web server (the
embedded default); web processes (plain daphne, `serve --no-worker`) run none of it. Parts:

- the worker's identity and lease (jobs_app.leases), renewed every WORKER_RENEW_SECONDS; a
  worker that finds its lease expired takes a fresh identity (its old claims are adopted);
- the task queue (claims and submissions, reconciliation of its tasks, adoption of orphans);
- the upstream event socket and the applier of upstream reports;
- the inbox of stored webhook deliveries;
- the leader's singleton duties (positions, deadlines, catalog, housekeeping);
- the doorbell: rings from web processes and actions wake the right part at once.

State changes never import this module; they ring the doorbell (jobs_app.doorbell).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from django.conf import settings

from jobs_app import announcer, doorbell, leases, upstream
from jobs_app.applier import UpstreamApplier
from jobs_app.claims import release_forgotten
from jobs_app.dispatcher import TaskQueue
from jobs_app.inbox import Inbox
from jobs_app.leader import Leader
from jobs_app.leases import WorkerIdentity
from jobs_app.supervision import log_failure, spawn, supervise
from jobs_app.upstream.socket import UpstreamSocket
from photobooth.db import in_db_thread

logger = logging.getLogger(__name__)

_db = in_db_thread
REGISTER_RETRY_SECONDS = 2.0
DRAIN_SECONDS = 10
ANNOUNCE_DRAIN_SECONDS = 2  # at shutdown, for the last events to reach the channel layer


class BackgroundWork:
    """This process's worker, started at most once."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.identity: WorkerIdentity | None = None
        self.queue: TaskQueue | None = None
        self.socket: UpstreamSocket | None = None
        self.inbox: Inbox | None = None
        self.leader: Leader | None = None
        self.applier: UpstreamApplier | None = None
        self.tasks: list[asyncio.Task] = []
        self.cancels: set[asyncio.Task] = set()  # upstream cancellations in flight
        self._stopping = asyncio.Event()

    def start(self) -> None:
        """Start the worker on the running loop (once)."""
        if self.loop is not None:
            return
        loop = asyncio.get_running_loop()
        client = upstream.get_client()
        self.loop = loop
        self._stopping = asyncio.Event()
        self.identity = WorkerIdentity(id=leases.new_worker_id(), name=leases.worker_name())
        self.applier = UpstreamApplier(client)
        self.queue = TaskQueue(client, self.applier, self.identity)
        self.inbox = Inbox(self.applier, self.identity)
        self.queue.on_submitted = self.inbox.wake.set
        self.socket = UpstreamSocket(client, self.applier.on_socket_message, self.queue.reconcile)
        self.leader = Leader(client, self.identity)
        started = loop.create_task(self._run(), name="photobooth-worker")
        started.add_done_callback(log_failure)
        self.tasks = [started]

    async def _run(self) -> None:
        await self._register()
        loop = asyncio.get_running_loop()
        # Supervised: a part that raises is logged and starts again; the others go on.
        parts = {
            "lease": self._keep_lease,
            "claims": self._tend_claims,
            "task-queue": self.queue.run,
            "upstream-socket": self.socket.run,
            "inbox": self.inbox.run,
            "leader": self.leader.run,
            "doorbell": lambda: doorbell.listen(self._on_ring, self._stopping),
        }
        for name, run in parts.items():
            part = loop.create_task(supervise(name, run), name=f"photobooth-{name}")
            part.add_done_callback(log_failure)
            self.tasks.append(part)
        logger.info("worker_started worker=%s name=%s app_id=%s",
                    self.identity.id, self.identity.name, self.queue.client.app_id)  # fmt: skip

    async def _register(self) -> None:
        """Register this start's worker row, retrying while the database is away."""
        while True:
            try:
                await _db(leases.expire_dead_local_workers)()
                await _db(leases.register_worker)(self.identity, self.queue.client.app_id)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("worker_register_failed")
                await asyncio.sleep(REGISTER_RETRY_SECONDS)

    async def _tend_claims(self) -> None:
        """Adopt orphaned tasks and release forgotten claims, every renewal interval.

        It starts at once: after a restart the dead worker's tasks (expired at registration
        when its pid is gone) are taken over now, not a renewal interval later. It runs apart
        from the lease renewals: adoption reads the upstream, which must never delay one.
        """
        identity, queue = self.identity, self.queue
        while True:
            try:
                await queue.adopt_orphans()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("worker_adoption_failed worker=%s", identity.id)
            try:
                # A claim whose release failed: freed here, FORGOTTEN_AFTER_SECONDS after it
                # was taken (jobs_app.claims), whatever else failed this round.
                released = await _db(release_forgotten)(identity.id, set(queue.submitting))
                if released:
                    logger.warning("claims_released_forgotten worker=%s count=%s",
                                   identity.id, released)  # fmt: skip
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("worker_release_forgotten_failed worker=%s", identity.id)
            await asyncio.sleep(settings.WORKER_RENEW_SECONDS)

    async def _keep_lease(self) -> None:
        """Renew the lease every WORKER_RENEW_SECONDS; take a fresh identity if it expired."""
        identity, queue = self.identity, self.queue
        while True:
            await asyncio.sleep(settings.WORKER_RENEW_SECONDS)
            try:
                if not await _db(leases.renew_worker)(identity, queue.client.app_id):
                    logger.error("worker_lease_lost worker=%s: taking a fresh identity",
                                 identity.id)  # fmt: skip
                    identity.id = leases.new_worker_id()
                    await _db(leases.register_worker)(identity, queue.client.app_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("worker_lease_round_failed worker=%s", identity.id)

    def _on_ring(self, message: dict[str, Any]) -> None:
        what = message.get("what")
        if what == doorbell.QUEUE:
            self.queue.wake.set()
        elif what == doorbell.INBOX:
            self.inbox.wake.set()
        elif what == doorbell.CANCEL:
            task_id, upstream_id = message.get("taskId"), message.get("upstreamId")
            if isinstance(task_id, str) and isinstance(upstream_id, str):
                spawn(self.queue.cancel_if_mine(task_id, upstream_id),
                      name=f"photobooth-cancel-{task_id}", keep=self.cancels)  # fmt: skip

    async def stop(self) -> None:
        """Stop taking new work, let submissions in flight finish, give the claims back."""
        if self.loop is None:
            return
        self._stopping.set()
        if self.queue is not None:
            self.queue.stopping = True
            if self.queue.in_flight:
                await asyncio.wait(self.queue.in_flight, timeout=DRAIN_SECONDS)
        running = [*self.tasks, *self.cancels]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        self.tasks = []
        # What the last reports published reaches the streams now, not at their next heartbeat.
        await announcer.drain(ANNOUNCE_DRAIN_SECONDS)
        if self.identity is not None:
            try:
                # Our claims are free at once: another worker adopts them without waiting
                # for the lease to run out.
                await _db(leases.retire_worker)(self.identity)
            except Exception:
                logger.exception("worker_retire_failed worker=%s", self.identity.id)
        self.loop = None
        logger.info("worker_stopped pid=%s", os.getpid())

    def status(self) -> dict[str, Any]:
        """Return what /health reports about this process's worker."""
        if self.loop is None:
            return {"worker": "not in this process"}
        socket, leader = self.socket, self.leader
        return {
            "worker": "running" if any(not t.done() for t in self.tasks) else "stopped",
            "workerId": self.identity.id if self.identity else None,
            "leader": bool(leader and leader.is_leader),
            "upstreamSocket": "connected" if socket and socket.connected.is_set() else "down",
        }


background = BackgroundWork()
