"""Worker identities and named singleton leases, timed by the database clock.

A worker registers a row with a lease and renews it every WORKER_RENEW_SECONDS; its task claims
point at that row, so they live and die with it (procrastinate's heartbeat table, River's
leader row). Singleton duties (queue positions, deadlines, catalog, housekeeping) run under a
`Lease` row with an epoch, elected with a conditional UPDATE: it works behind any connection
pool, unlike a session advisory lock, and an old holder can never renew a newer term.

Every time here is the database's `now()`, never a process clock: workers on several machines
disagree about the time, the database does not.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import DateTimeField, ExpressionWrapper, F
from django.db.models.functions import Now

from jobs_app.models import Lease, Worker
from photobooth.db import durable_transaction

logger = logging.getLogger(__name__)

# Worker rows whose lease ended this long ago are deleted (their claims were taken over).
DEAD_WORKER_KEEP = timedelta(hours=1)


def db_now_plus(seconds: float) -> ExpressionWrapper:
    """Return the SQL expression `now() + seconds` (database time)."""
    return ExpressionWrapper(Now() + timedelta(seconds=seconds), output_field=DateTimeField())


def lease_seconds() -> float:
    return settings.WORKER_LEASE_SECONDS


@dataclass(slots=True)
class WorkerIdentity:
    """This process's worker row, and how far it may trust its own lease.

    `trusted_until` (monotonic) is the start of the last successful renewal plus the lease
    minus a second: past it, the row may have expired without us knowing (a long pause, a
    lost connection), so the worker stops acting until a renewal succeeds (River's rule).
    """

    id: str
    name: str
    trusted_until: float = 0.0

    def trusted(self) -> bool:
        return time.monotonic() < self.trusted_until


def new_worker_id() -> str:
    return secrets.token_hex(16)


def worker_name() -> str:
    return f"{socket.gethostname().split('.')[0][:60]}:{os.getpid()}"


@durable_transaction
def register_worker(identity: WorkerIdentity, app_id: str = "") -> None:
    """Insert this start's worker row with a fresh lease."""
    started = time.monotonic()
    Worker.objects.create(
        id=identity.id,
        name=identity.name,
        lease_expires_at=db_now_plus(lease_seconds()),
        heartbeat_at=Now(),
        started_at=Now(),
        app_id=app_id,
    )
    identity.trusted_until = started + lease_seconds() - 1
    logger.info("worker_registered worker=%s name=%s", identity.id, identity.name)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


@durable_transaction
def expire_dead_local_workers() -> int:
    """End the leases of this host's workers whose process is gone; return how many.

    A worker restarted after a crash on the same machine need not wait out the dead one's
    lease: a pid that no longer runs here cannot renew it. Only rows named after this host are
    judged, and only by absence of the pid, so a live worker is never expired.
    """
    host = socket.gethostname().split(".")[0][:60]
    expired = 0
    for worker_id, name in Worker.objects.filter(
        name__startswith=f"{host}:", lease_expires_at__gt=Now()
    ).values_list("id", "name"):
        pid_text = name.rpartition(":")[2]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and not _pid_alive(int(pid_text)):
            expired += Worker.objects.filter(pk=worker_id).update(lease_expires_at=Now())
            logger.warning("worker_expired_dead_pid worker=%s name=%s", worker_id, name)
    return expired


@durable_transaction
def renew_worker(identity: WorkerIdentity, app_id: str | None = None) -> bool:
    """Extend this worker's lease if it has not expired; return False when it had.

    An expired lease is never revived: another worker may already have taken our claims, and
    their epochs fence us out; the caller registers a fresh identity instead.
    """
    started = time.monotonic()
    fields = {"lease_expires_at": db_now_plus(lease_seconds()), "heartbeat_at": Now()}
    if app_id is not None:
        fields["app_id"] = app_id
    renewed = Worker.objects.filter(pk=identity.id, lease_expires_at__gt=Now()).update(**fields)
    if renewed:
        identity.trusted_until = started + lease_seconds() - 1
    return bool(renewed)


@durable_transaction
def retire_worker(identity: WorkerIdentity) -> None:
    """Delete this worker's row on a clean stop: its claims are free at once (SET NULL)."""
    Worker.objects.filter(pk=identity.id).delete()
    identity.trusted_until = 0.0


@durable_transaction
def prune_dead_workers() -> int:
    """Delete worker rows whose lease ended long ago; return how many."""
    horizon = ExpressionWrapper(Now() - DEAD_WORKER_KEEP, output_field=DateTimeField())
    deleted, _ = Worker.objects.filter(lease_expires_at__lt=horizon).delete()
    return deleted


# --- Singleton leases ---------------------------------------------------------------------------


@dataclass(slots=True)
class HeldLease:
    """A lease this process holds: its name, its epoch and how long to trust it."""

    name: str
    epoch: int
    trusted_until: float

    def trusted(self) -> bool:
        return time.monotonic() < self.trusted_until


@durable_transaction
def acquire_or_renew(name: str, holder: str, held: HeldLease | None) -> HeldLease | None:
    """Renew `held`, or try to take the lease `name` if free or expired; None when not ours.

    Renewal matches holder and epoch and needs the lease unexpired (River's reelect), so a
    holder that paused past its term cannot extend the next holder's.
    """
    trust = time.monotonic() + lease_seconds() - 1
    expires = db_now_plus(lease_seconds())
    if held is not None:
        renewed = Lease.objects.filter(
            name=name, holder=holder, epoch=held.epoch, expires_at__gt=Now()
        ).update(expires_at=expires)
        if renewed:
            return HeldLease(name=name, epoch=held.epoch, trusted_until=trust)
        logger.warning("lease_lost name=%s holder=%s epoch=%s", name, holder, held.epoch)
    taken = Lease.objects.filter(name=name, expires_at__lte=Now()).update(
        holder=holder, epoch=F("epoch") + 1, expires_at=expires
    )
    if not taken:
        try:
            with transaction.atomic():
                Lease.objects.create(name=name, holder=holder, epoch=1, expires_at=expires)
        except IntegrityError:
            return None  # held by someone else, and not expired
    epoch = Lease.objects.values_list("epoch", flat=True).get(name=name)
    logger.info("lease_acquired name=%s holder=%s epoch=%s", name, holder, epoch)
    return HeldLease(name=name, epoch=epoch, trusted_until=trust)


@durable_transaction
def release_lease(held: HeldLease, holder: str) -> None:
    """Give the lease up on a clean stop, so another worker takes over at once."""
    Lease.objects.filter(name=held.name, holder=holder, epoch=held.epoch).update(expires_at=Now())
