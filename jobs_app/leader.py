"""Duties done once per deployment, by whichever worker holds the `leader` lease.

Queue positions and ETAs, deadlines, the catalog cache and housekeeping (event retention, old
webhook deliveries, dead worker rows). Each is idempotent (conditional updates), so a moment
with two leaders (an old one paused past its term) costs duplicate effort, never a wrong
state; the lease keeps N workers from doing N times the reads against one upstream limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from jobs_app import progress
from jobs_app.actions import do_cancel_task
from jobs_app.catalog import CACHE_SECONDS, refresh_products
from jobs_app.leases import (
    HeldLease,
    WorkerIdentity,
    acquire_or_renew,
    prune_dead_workers,
    release_lease,
)
from jobs_app.maintenance import housekeep
from jobs_app.models import Task
from jobs_app.queue import dispatch_order, eta_seconds
from jobs_app.states import TASK_TERMINAL, CancelReason
from jobs_app.upstream.client import UpstreamClient
from photobooth.db import in_db_thread

logger = logging.getLogger(__name__)

_db = in_db_thread

LEASE_NAME = "leader"
TICK_SECONDS = 1.0
POSITIONS_EVERY_SECONDS = 1.0
DEADLINES_EVERY_SECONDS = 5.0
HOUSEKEEPING_EVERY_SECONDS = 3600
CATALOG_REFRESH_SECONDS = CACHE_SECONDS
# After a failed catalog read: sooner, since /api/products and mockups wait for it.
CATALOG_RETRY_SECONDS = 15


class Leader:
    """Hold (or wait for) the leader lease and do the deployment's singleton duties."""

    def __init__(self, client: UpstreamClient, identity: WorkerIdentity) -> None:
        self.client = client
        self.identity = identity
        self.held: HeldLease | None = None
        self._next_election = 0.0
        self._next = {"positions": 0.0, "deadlines": 0.0, "housekeeping": 0.0, "catalog": 0.0}

    @property
    def is_leader(self) -> bool:
        return self.held is not None and self.held.trusted()

    async def run(self) -> None:
        """Work until cancelled; a failed duty is logged and the others go on."""
        try:
            while True:
                await self.tick()
                await asyncio.sleep(TICK_SECONDS)
        finally:
            if self.held is not None:
                with contextlib.suppress(Exception):  # stopping anyway; it expires on its own
                    await _db(release_lease)(self.held, self.identity.id)

    async def tick(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() >= self._next_election:
            self._next_election = loop.time() + settings.WORKER_RENEW_SECONDS
            try:
                was = self.held
                self.held = await _db(acquire_or_renew)(LEASE_NAME, self.identity.id, self.held)
                if self.held and not was:
                    self._next = dict.fromkeys(self._next, 0.0)  # a new term: do everything now
            except Exception:
                logger.exception("leader_election_failed")
        if not self.is_leader:
            return
        for duty, run in (
            ("deadlines", self.expire_deadlines),
            ("positions", self.refresh_positions),
            ("catalog", self.refresh_catalog),
            ("housekeeping", self.housekeep),
        ):
            if loop.time() < self._next[duty]:
                continue
            try:
                pause = await run()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("leader_duty_failed duty=%s", duty)
                pause = TICK_SECONDS * 5
            self._next[duty] = loop.time() + pause

    async def expire_deadlines(self) -> float:
        for task_id in await _db(expire_deadlines)():
            logger.warning("task_timed_out task=%s", task_id)
        return DEADLINES_EVERY_SECONDS

    async def refresh_positions(self) -> float:
        # Positions move with every claim; telling clients once a second is plenty.
        await _db(refresh_queue_positions)()
        return POSITIONS_EVERY_SECONDS

    async def refresh_catalog(self) -> float:
        """Read the product catalog into the shared cache; after a failure, try again soon."""
        ok = await refresh_products(self.client)
        return CATALOG_REFRESH_SECONDS if ok else CATALOG_RETRY_SECONDS

    async def housekeep(self) -> float:
        events, deliveries = await _db(housekeep)()
        workers = await _db(prune_dead_workers)()
        if events or deliveries or workers:
            logger.info("housekeeping events=%s deliveries=%s workers=%s",
                        events, deliveries, workers)  # fmt: skip
        return HOUSEKEEPING_EVERY_SECONDS


def expire_deadlines() -> list[str]:
    """Cancel (reason `timeout`) the tasks past their deadline; return their ids.

    The cancellation rings the workers, and the task's worker cancels it upstream.
    """
    horizon = timezone.now() - timedelta(seconds=settings.TASK_DEADLINE_SECONDS)
    late = Task.objects.exclude(status__in=TASK_TERMINAL).filter(created_at__lt=horizon)
    return [
        str(task.pk)
        for task in late.select_related("client_app")
        if do_cancel_task(task, CancelReason.TIMEOUT).did_cancel
    ]


def refresh_queue_positions() -> None:
    """Emit `queued` with the new position for every queued task whose place changed."""
    for position, task in enumerate(dispatch_order().only("id", "kind", "queue_position"), 1):
        if task.queue_position != position:
            progress.do_update_queue_position(task.pk, position, eta_seconds(task, position))
