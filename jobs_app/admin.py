"""Admin for task inspection. Read-only views; every change goes through jobs_app.actions."""

from __future__ import annotations

import json

from django.contrib import admin, messages
from django.db.models import Count, Q, QuerySet
from django.db.models.functions import Now
from django.http import HttpRequest
from django.utils.html import format_html

from jobs_app import doorbell
from jobs_app.actions import do_cancel_task, do_retry_task
from jobs_app.events import serialize_event
from jobs_app.inbox import do_requeue_delivery
from jobs_app.models import (
    Event,
    Job,
    Lease,
    Task,
    Upload,
    WebhookDelivery,
    WebhookVerdict,
    Worker,
)
from jobs_app.states import TaskStatus
from photobooth.errors import PhotoboothError
from sessions_app.admin import ReadOnlyAdminMixin


def _thumbnail(file_field, alt: str) -> str:
    if not file_field:
        return "—"
    return format_html(
        '<a href="{0}" target="_blank" rel="noopener">'
        '<img src="{0}" alt="{1}" style="max-height:96px;max-width:96px;border-radius:4px"></a>',
        file_field.url,
        alt,
    )


class JobInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = Job
    extra = 0
    fields = (
        "index",
        "status",
        "progress",
        "variant_id",
        "upstream_id",
        "thumbnail",
        "error_code",
        "finished_at",
    )
    readonly_fields = fields
    ordering = ("index",)

    @admin.display(description="result")
    def thumbnail(self, job: Job) -> str:
        return _thumbnail(job.result_file, f"result {job.index}")


class EventInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = Event
    extra = 0
    verbose_name_plural = "event timeline"
    fields = ("seq", "created_at", "type", "job_index", "details")
    readonly_fields = fields
    ordering = ("seq",)

    @admin.display(description="job")
    def job_index(self, event: Event):
        return event.data.get("jobIndex", "—")

    @admin.display(description="fields")
    def details(self, event: Event) -> str:
        return ", ".join(f"{key}={value}" for key, value in event.data.items()) or "—"

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("session", "client_app")


@admin.register(Task)
class TaskAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "kind",
        "status",
        "client_app",
        "created_at",
        "duration_display",
        "job_count",
    )
    list_filter = ("status", "kind", "created_at")
    date_hierarchy = "created_at"
    search_fields = (
        "id",
        "jobs__id",
        "client_app__client_app_id",
        "upstream_id",
        "jobs__upstream_id",
    )
    list_select_related = ("client_app",)
    inlines = [JobInline, EventInline]
    actions = ["cancel_tasks", "retry_tasks"]
    readonly_fields = (
        "id", "session", "client_app", "kind", "status", "priority", "params", "upload",
        "source_job", "created_at", "started_at", "finished_at", "deadline_at", "cursor_seq",
        "queue_position", "eta_seconds", "upstream_id", "error_code", "error_message",
        "cancel_reason", "idempotency_key", "claimed_by", "claim_epoch", "claimed_at",
        "attempts", "next_attempt_at", "last_error", "upstream_request",
    )  # fmt: skip
    exclude = ("request_digest",)

    def has_operate_permission(self, request: HttpRequest) -> bool:
        """Let staff who may change tasks run the actions; the task page stays view-only."""
        # Actions need no change permission to be offered (Django checks `permissions`), so
        # the page never gets a Save button that would write a stale row over a worker's update.
        return request.user.has_perm("jobs_app.change_task")

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).prefetch_related("jobs")

    @admin.display(description="duration")
    def duration_display(self, task: Task) -> str:
        duration = task.duration
        return f"{duration.total_seconds():.1f} s" if duration else "—"

    @admin.display(description="jobs")
    def job_count(self, task: Task) -> int:
        return len(task.jobs.all())

    @admin.action(permissions=["operate"], description="Cancel selected tasks")
    def cancel_tasks(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        cancelled = sum(do_cancel_task(task).did_cancel for task in queryset)
        self.message_user(request, f"Cancelled {cancelled} of {queryset.count()} task(s).")

    @admin.action(
        permissions=["operate"],
        description="Retry selected failed or cancelled tasks (as new tasks)",
    )
    def retry_tasks(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        tasks = list(queryset.select_related("client_app", "session"))
        retryable = [t for t in tasks if t.status in (TaskStatus.FAILED, TaskStatus.CANCELLED)]
        queued = 0
        for task in retryable:
            try:
                do_retry_task(task)
            except PhotoboothError as e:
                # E.g. the source job of an enhancement lost its result: report it, go on.
                message = f"Task {task.pk} not retried ({e.get_codes()}): {e.detail}"
                self.message_user(request, message, messages.ERROR)
            else:
                queued += 1
        skipped = len(tasks) - len(retryable)
        level = messages.WARNING if skipped or queued < len(retryable) else messages.SUCCESS
        self.message_user(
            request,
            f"Queued {queued} new task(s); skipped {skipped} not failed or cancelled.",
            level,
        )


@admin.register(Upload)
class UploadAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "session", "content_type", "width", "height", "size", "created_at")
    list_filter = ("content_type", "created_at")
    search_fields = ("id", "sha256")
    readonly_fields = (
        "id",
        "session",
        "file",
        "content_type",
        "width",
        "height",
        "size",
        "sha256",
        "created_at",
    )


@admin.register(Event)
class EventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("seq", "type", "created_at", "client_app", "task", "job")
    list_filter = ("type", "created_at")
    search_fields = ("task__id", "job__id", "client_app__client_app_id")
    list_select_related = ("client_app", "task", "job")
    readonly_fields = (
        "session",
        "seq",
        "type",
        "client_app",
        "task",
        "job",
        "created_at",
        "as_sent",
    )

    @admin.display(description="as clients receive it")
    def as_sent(self, event: Event) -> str:
        return format_html("<pre>{}</pre>", json.dumps(serialize_event(event), indent=2))


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("webhook_id", "received_at", "event_type", "verdict", "outcome", "task")
    list_filter = ("verdict", "outcome", "event_type", "received_at")
    search_fields = ("webhook_id", "upstream_task_id", "task__id")
    readonly_fields = (
        "webhook_id", "received_at", "headers", "body", "verdict", "outcome", "event_type",
        "upstream_task_id", "task", "applied_at", "error",
    )  # fmt: skip
    actions = ["reapply_deliveries"]

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("jobs_app.change_webhookdelivery")

    @admin.action(permissions=["operate"], description="Re-apply selected verified deliveries")
    def reapply_deliveries(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        verified = list(
            queryset.filter(verdict=WebhookVerdict.VERIFIED).values_list("pk", flat=True)
        )
        queued = sum(do_requeue_delivery(delivery_id) for delivery_id in verified)
        if queued:
            doorbell.ring_rollback_unsafe(doorbell.INBOX)  # committed: the workers apply them
        skipped = queryset.count() - len(verified)
        self.message_user(
            request,
            f"Queued {queued} delivery(ies) for the workers to re-apply (their outcome shows "
            f"here within seconds); skipped {skipped} unverified.",
            messages.WARNING if skipped else messages.SUCCESS,
        )


@admin.register(Worker)
class WorkerAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Worker starts: who is alive (lease ahead, database time), what each one holds."""

    list_display = ("name", "id", "alive", "started_at", "heartbeat_at", "lease_expires_at",
                    "app_id", "claims")  # fmt: skip
    ordering = ("-started_at",)
    readonly_fields = ("id", "name", "started_at", "heartbeat_at", "lease_expires_at", "app_id")

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        live = Q(tasks__status__in=[TaskStatus.QUEUED, TaskStatus.RUNNING])
        return (
            super()
            .get_queryset(request)
            .annotate(
                live_claims=Count("tasks", filter=live), alive_now=Q(lease_expires_at__gt=Now())
            )
        )

    @admin.display(boolean=True, description="alive", ordering="lease_expires_at")
    def alive(self, worker: Worker) -> bool:
        return bool(worker.alive_now)

    @admin.display(description="queued and running tasks held")
    def claims(self, worker: Worker) -> int:
        return worker.live_claims


@admin.register(Lease)
class LeaseAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Singleton leases (the leader): holder (a worker id), epoch, expiry."""

    list_display = ("name", "holder", "epoch", "expires_at")
    readonly_fields = ("name", "holder", "epoch", "expires_at")
