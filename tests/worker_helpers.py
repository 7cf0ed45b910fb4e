"""A worker inside the test process: its identity, the tasks it follows, its inbox.

Tests that call services directly use these instead of a running worker process: a registered
worker row (as `manage.py worker` has), claims pointing at it, and one round of its inbox.
"""

from __future__ import annotations

from asgiref.sync import async_to_sync
from django.db.models import F

from jobs_app import leases, upstream
from jobs_app.applier import UpstreamApplier
from jobs_app.claims import Claim
from jobs_app.inbox import Inbox
from jobs_app.leases import WorkerIdentity
from jobs_app.models import Task


def a_worker(name: str = "test-worker") -> WorkerIdentity:
    """Register a live worker row and return its identity."""
    identity = WorkerIdentity(id=leases.new_worker_id(), name=name)
    leases.register_worker(identity)
    return identity


def follow(task_id: str, identity: WorkerIdentity) -> Claim:
    """Make `identity` the task's claim holder (as a claim or an adoption would)."""
    held = {"claimed_by_id": identity.id, "claim_epoch": F("claim_epoch") + 1}
    Task.objects.filter(pk=task_id).update(**held)
    epoch = Task.objects.values_list("claim_epoch", flat=True).get(pk=task_id)
    return Claim(task_id=str(task_id), worker_id=identity.id, epoch=epoch)


def run_inbox(identity: WorkerIdentity) -> None:
    """Apply every stored delivery `identity` should apply, and wait for the outcomes."""

    async def settle() -> None:
        await Inbox(UpstreamApplier(upstream.get_client()), identity).settle()

    async_to_sync(settle)()
