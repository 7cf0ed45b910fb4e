"""Request validation and response shapes of the jobs API (contract section 2)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from jobs_app.actions import TaskRequest
from jobs_app.catalog import find_product
from jobs_app.events import format_cursor
from jobs_app.models import Job, Task, Upload
from jobs_app.states import TaskKind
from jobs_app.styles import STYLE_IDS
from sessions_app.models import CLIENT_APP_ID_PATTERN
from sessions_app.timefmt import iso_ms

MAX_IMAGES_PER_GENERATION = 16
MAX_SEED = 2**63 - 1


def upload_to_dict(upload: Upload) -> dict[str, Any]:
    return {
        "uploadId": str(upload.pk),
        "width": upload.width,
        "height": upload.height,
        "contentType": upload.content_type,
        "size": upload.size,
    }


def job_to_dict(job: Job) -> dict[str, Any]:
    result = None
    if job.result_file:
        result = {
            "url": job.result_file.url,
            "width": job.result_width,
            "height": job.result_height,
            "contentType": job.result_content_type,
            "size": job.result_size,
        }
    error = {"code": job.error_code, "message": job.error_message} if job.error_code else None
    body = {
        "jobId": str(job.pk),
        "index": job.index,
        "status": job.status,
        "progress": round(job.progress, 4),
        "result": result,
        "error": error,
    }
    if job.variant_id:  # mockup jobs: which product variant and placement the image shows
        body.update(variantId=int(job.variant_id), placement=job.placement)
    return body


def task_to_dict(task: Task) -> dict[str, Any]:
    """Return the contract's task object (jobs should be prefetched)."""
    path = f"/api/tasks/{task.pk}"
    return {
        "taskId": str(task.pk),
        "kind": task.kind,
        "status": task.status,
        "clientAppId": task.client_app.client_app_id,
        "createdAt": iso_ms(task.created_at),
        "startedAt": iso_ms(task.started_at),
        "finishedAt": iso_ms(task.finished_at),
        "queuePosition": task.queue_position,
        "etaSeconds": task.eta_seconds,
        "cursor": format_cursor(task.session, task.cursor_seq),
        "jobs": [job_to_dict(job) for job in task.jobs.all()],
        "upstreamId": task.upstream_id,
        "error": (
            {"code": task.error_code, "message": task.error_message} if task.error_code else None
        ),
        "cancelReason": task.cancel_reason or None,
        # What the task was asked to do (beyond the contract: pages show it).
        "input": {
            **task.params,
            "uploadId": str(task.upload_id) if task.upload_id else None,
            "sourceJobId": str(task.source_job_id) if task.source_job_id else None,
        },
        "links": {"self": path, "events": f"/progress/{task.pk}", "cancel": f"{path}/cancel"},
    }


class ClientAppIdField(serializers.RegexField):
    """A clientAppId: a JSON string of the contract's pattern (numbers are not coerced)."""

    def __init__(self, **kwargs: Any):
        super().__init__(CLIENT_APP_ID_PATTERN, max_length=80, **kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class TaskCreateSerializer(serializers.Serializer):
    """Validate a task creation body into a TaskRequest."""

    clientAppId = ClientAppIdField()
    kind = serializers.ChoiceField(choices=TaskKind.choices)
    uploadId = serializers.UUIDField(required=False)
    sourceJobId = serializers.UUIDField(required=False)
    style = serializers.ChoiceField(choices=sorted(STYLE_IDS), required=False)
    numberImages = serializers.IntegerField(
        min_value=1, max_value=MAX_IMAGES_PER_GENERATION, required=False
    )
    seed = serializers.IntegerField(
        min_value=0, max_value=MAX_SEED, required=False, allow_null=True
    )
    productId = serializers.IntegerField(required=False)
    variantIds = serializers.ListField(
        child=serializers.IntegerField(), required=False, min_length=1, max_length=50
    )
    placement = serializers.CharField(required=False, max_length=32)

    _REQUIRED = {
        TaskKind.GENERATION: ("uploadId", "style", "numberImages"),
        TaskKind.ENHANCEMENT: (),
        TaskKind.MOCKUP: ("uploadId", "productId", "variantIds"),
    }
    _ALLOWED = {
        TaskKind.GENERATION: {"uploadId", "style", "numberImages", "seed"},
        TaskKind.ENHANCEMENT: {"uploadId", "sourceJobId"},
        TaskKind.MOCKUP: {"uploadId", "productId", "variantIds", "placement"},
    }

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        kind = TaskKind(attrs["kind"])
        errors: dict[str, str] = {}
        for name in self._REQUIRED[kind]:
            if name not in attrs:
                errors[name] = f"This field is required for {kind} tasks."
        common = {"clientAppId", "kind"}
        for name in set(attrs) - common - self._ALLOWED[kind]:
            errors[name] = f"This field does not apply to {kind} tasks."
        if kind == TaskKind.ENHANCEMENT and ("uploadId" in attrs) == ("sourceJobId" in attrs):
            errors["sourceJobId"] = "Give exactly one of sourceJobId and uploadId."
        if kind == TaskKind.MOCKUP and not errors:
            errors.update(self._check_product(attrs))
        if errors:
            raise serializers.ValidationError(errors)
        return attrs

    @staticmethod
    def _check_product(attrs: dict[str, Any]) -> dict[str, str]:
        product = find_product(attrs["productId"])
        if product is None:
            return {"productId": "No product with this id in the catalog (GET /api/products)."}
        known = {variant["id"] for variant in product["variants"]}
        unknown = [v for v in attrs["variantIds"] if v not in known]
        if unknown:
            return {"variantIds": f"Not variants of product {product['id']}: {unknown}."}
        if len(set(attrs["variantIds"])) != len(attrs["variantIds"]):
            return {"variantIds": "Each variant may appear once."}
        attrs.setdefault("placement", product["placements"][0])
        if attrs["placement"] not in product["placements"]:
            return {"placement": f"Choose one of {product['placements']}."}
        return {}

    def to_task_request(self) -> TaskRequest:
        data = self.validated_data
        return TaskRequest(
            client_app_id=data["clientAppId"],
            kind=TaskKind(data["kind"]),
            upload_id=data.get("uploadId"),
            source_job_id=data.get("sourceJobId"),
            style=data.get("style"),
            number_images=data.get("numberImages", 1),
            seed=data.get("seed"),
            product_id=data.get("productId"),
            variant_ids=data.get("variantIds", []),
            placement=data.get("placement"),
        )
