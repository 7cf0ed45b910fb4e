"""Uploads, tasks, jobs, the durable event log, webhook deliveries, workers and leases."""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.utils import timezone

from jobs_app.states import TASK_TERMINAL, CancelReason, JobStatus, TaskKind, TaskStatus
from sessions_app.models import BoothSession, ClientApp


class Upload(models.Model):
    """A photo or design a session uploaded: validated, re-encoded, stored under a random name."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    session = models.ForeignKey(BoothSession, on_delete=models.CASCADE, related_name="uploads")
    file = models.FileField(max_length=200)
    content_type = models.CharField(max_length=32)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    size = models.PositiveBigIntegerField(help_text="Stored size in bytes.")
    sha256 = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["session", "-created_at"], name="upload_session_recent")]

    def __str__(self) -> str:
        return f"upload {self.id}"


class Worker(models.Model):
    """One start of a process doing background work (`manage.py worker` or `serve`).

    Each start gets a fresh id (never the host or pod name: a restarted process must not
    inherit a dead one's claims). The worker is alive while `lease_expires_at` (database
    time) lies ahead; it renews the lease every few seconds. Tasks it claimed point at it, so
    one UPDATE of this row keeps all its claims alive, and an expired row frees them all.
    """

    id = models.CharField(primary_key=True, max_length=64, editable=False)
    name = models.CharField(max_length=200, help_text="host:pid, for people")
    started_at = models.DateTimeField(default=timezone.now)
    heartbeat_at = models.DateTimeField(default=timezone.now)
    lease_expires_at = models.DateTimeField()
    # The upstream app id its event socket uses (changes after a 4015 takeover).
    app_id = models.CharField(max_length=120, blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"worker {self.name} ({self.id[:8]})"


class Lease(models.Model):
    """A named singleton duty held by one worker at a time (jobs_app.leases).

    A row, not a PostgreSQL advisory lock: a session lock dies silently with a pooled
    connection. `epoch` grows with every new holder, so an old holder can never renew or act
    on a newer holder's term.
    """

    name = models.CharField(primary_key=True, max_length=64)
    holder = models.CharField(max_length=64)
    epoch = models.PositiveBigIntegerField(default=0)
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"lease {self.name} (epoch {self.epoch})"


class Task(models.Model):
    """One unit of work for the upstream: a generation, an enhancement or a mockup."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    session = models.ForeignKey(BoothSession, on_delete=models.CASCADE, related_name="tasks")
    client_app = models.ForeignKey(ClientApp, on_delete=models.CASCADE, related_name="tasks")
    kind = models.CharField(max_length=16, choices=TaskKind.choices)
    status = models.CharField(max_length=16, choices=TaskStatus.choices, default=TaskStatus.QUEUED)
    # Higher runs first: interactive photobooth work ahead of batch mockups.
    priority = models.SmallIntegerField(default=0)
    params = models.JSONField(default=dict, help_text="style, numberImages, seed, product ...")
    upload = models.ForeignKey(
        Upload, null=True, blank=True, on_delete=models.PROTECT, related_name="tasks"
    )
    source_job = models.ForeignKey(
        "Job", null=True, blank=True, on_delete=models.PROTECT, related_name="enhancements"
    )
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    deadline_at = models.DateTimeField(null=True, blank=True)
    # Session log position just before this task's first event (the late subscriber's cursor).
    cursor_seq = models.BigIntegerField()
    # Sequence number of this task's newest event (written by publish_event; see ClientApp).
    last_event_seq = models.BigIntegerField(default=0)
    queue_position = models.PositiveIntegerField(null=True, blank=True)
    eta_seconds = models.PositiveIntegerField(null=True, blank=True)
    # NULL, not "": the API shows `upstreamId: null` until the upstream accepts the task.
    upstream_id = models.CharField(max_length=100, null=True, blank=True)  # noqa: DJ001
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    cancel_reason = models.CharField(max_length=16, choices=CancelReason.choices, blank=True)
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    request_digest = models.CharField(max_length=64, blank=True)
    # The dispatcher's bookkeeping (jobs_app.claims): which worker holds the task (to submit
    # it, then to follow it upstream), the fencing token of that claim, how often submission
    # failed, and when it may be tried again. `claim_epoch` grows with every claim, and every
    # write by a holder is conditional on it, so a worker whose claim was taken over can no
    # longer write.
    claimed_by = models.ForeignKey(
        Worker, null=True, blank=True, on_delete=models.SET_NULL, related_name="tasks"
    )
    claim_epoch = models.PositiveBigIntegerField(default=0)
    claimed_at = models.DateTimeField(null=True, blank=True)
    # The body of the creating POST, stored before it is first sent: a resubmission after a
    # takeover or a retry repeats it exactly, as the upstream's idempotency key requires (a
    # new worker would otherwise send its own socket app id and a fresh signed URL).
    upstream_request = models.JSONField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    # The upstream reported the task finished; `completed` waits for every job's final event.
    upstream_finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["session", "-created_at"], name="task_session_recent"),
            models.Index(fields=["client_app", "-created_at"], name="task_client_recent"),
            models.Index(fields=["upstream_id"], name="task_upstream_id"),
            models.Index(fields=["status", "-created_at"], name="task_status_recent"),
            # Reconciliation and deadlines read the tasks that are out with the upstream.
            models.Index(fields=["created_at"], name="task_running", condition=Q(status="running")),
            # The queue: dispatch order and queue positions read only queued tasks.
            models.Index(
                fields=["-priority", "created_at"],
                name="task_queue_order",
                condition=Q(status="queued"),
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["session", "idempotency_key"],
                name="task_idempotency_key_per_session",
                condition=Q(idempotency_key__isnull=False),
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} task {self.id}"

    @property
    def is_finished(self) -> bool:
        return self.status in TASK_TERMINAL

    @property
    def duration(self):
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None


class Job(models.Model):
    """One output image of a task."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="jobs")
    index = models.PositiveSmallIntegerField()
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.PENDING)
    progress = models.FloatField(default=0.0)
    upstream_id = models.CharField(max_length=100, null=True, blank=True)  # noqa: DJ001
    worker_name = models.CharField(max_length=100, blank=True)
    # Mockup jobs: which product variant and placement this image shows.
    variant_id = models.CharField(max_length=64, blank=True)
    placement = models.CharField(max_length=32, blank=True)
    result_file = models.FileField(max_length=200, blank=True)
    result_width = models.PositiveIntegerField(null=True, blank=True)
    result_height = models.PositiveIntegerField(null=True, blank=True)
    result_content_type = models.CharField(max_length=32, blank=True)
    result_size = models.PositiveBigIntegerField(null=True, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # When the last `progress` event went out: they are at least 250 ms apart (contract 7).
    last_progress_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["task", "index"]
        constraints = [models.UniqueConstraint(fields=["task", "index"], name="job_index_per_task")]
        indexes = [models.Index(fields=["upstream_id"], name="job_upstream_id")]

    def __str__(self) -> str:
        return f"job {self.index} of {self.task_id}"


class Event(models.Model):
    """One stored state change of a task or job: the durable log that streams replay.

    `seq` counts up per session without gaps or reordering: jobs_app.events.publish_event
    allocates it under the session's row lock. If you add a field, update
    jobs_app.events.serialize_event.
    """

    id = models.BigAutoField(primary_key=True)
    session = models.ForeignKey(BoothSession, on_delete=models.CASCADE, related_name="events")
    seq = models.BigIntegerField()
    type = models.CharField(max_length=32)
    client_app = models.ForeignKey(ClientApp, on_delete=models.CASCADE, related_name="events")
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="events")
    job = models.ForeignKey(
        Job, null=True, blank=True, on_delete=models.CASCADE, related_name="events"
    )
    data = models.JSONField(default=dict, help_text="The fields of the event type.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["session", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["session", "seq"], name="event_seq_per_session")
        ]
        indexes = [
            models.Index(fields=["client_app", "seq"], name="event_client_seq"),
            models.Index(fields=["task", "seq"], name="event_task_seq"),
            models.Index(fields=["created_at"], name="event_created"),  # retention pruning
        ]

    def __str__(self) -> str:
        return f"{self.type} #{self.seq}"


class WebhookVerdict(models.TextChoices):
    VERIFIED = "verified"
    BAD_SIGNATURE = "bad_signature"
    STALE = "stale"
    MALFORMED = "malformed"
    TOO_LARGE = "too_large"


class WebhookOutcome(models.TextChoices):
    PENDING = "pending", "pending (task not known yet)"
    APPLIED = "applied"
    NO_CHANGE = "no_change", "no change (nothing to move forward)"
    REJECTED = "rejected"
    FAILED = "failed"


class WebhookDelivery(models.Model):
    """One webhook call from the upstream, stored whatever its verdict."""

    webhook_id = models.CharField(max_length=255, blank=True)
    received_at = models.DateTimeField(default=timezone.now)
    headers = models.JSONField(default=dict)
    body = models.TextField(blank=True)
    verdict = models.CharField(max_length=16, choices=WebhookVerdict.choices)
    outcome = models.CharField(max_length=16, choices=WebhookOutcome.choices)
    event_type = models.CharField(max_length=64, blank=True)
    upstream_task_id = models.CharField(max_length=100, blank=True)
    task = models.ForeignKey(
        Task, null=True, blank=True, on_delete=models.SET_NULL, related_name="webhook_deliveries"
    )
    applied_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-received_at"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            # Deduplication: one verified delivery per webhook-id. Unverified ones do not count,
            # so a forged request cannot block the real delivery.
            models.UniqueConstraint(
                fields=["webhook_id"],
                name="webhook_verified_once",
                condition=Q(verdict="verified"),
            )
        ]
        indexes = [
            models.Index(
                fields=["upstream_task_id"],
                name="webhook_pending_by_task",
                condition=Q(outcome="pending"),
            ),
            models.Index(fields=["received_at"], name="webhook_received"),
        ]

    def __str__(self) -> str:
        return f"webhook {self.webhook_id or '?'} ({self.verdict}, {self.outcome})"
