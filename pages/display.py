"""What the server-rendered pages show of a task: titles, labels and result images.

Templates get these frozen dataclasses instead of models, so the wording lives in one place
and a template never reaches into task params or the catalog itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from jobs_app.catalog import ProductDict, VariantDict, list_products
from jobs_app.models import Job, Task
from jobs_app.states import JobStatus, TaskKind, TaskStatus
from jobs_app.styles import STYLES
from photobooth.errors import PhotoboothError

logger = logging.getLogger(__name__)

STYLE_NAMES = {style["id"]: style["name"] for style in STYLES}
KIND_LABELS = {
    TaskKind.GENERATION: "Photobooth",
    TaskKind.ENHANCEMENT: "Enhancement",
    TaskKind.MOCKUP: "Mockup",
}
STATUS_LABELS = {
    TaskStatus.QUEUED: "In queue",
    TaskStatus.RUNNING: "Rendering",
    TaskStatus.COMPLETED: "Done",
    TaskStatus.FAILED: "Failed",
    TaskStatus.CANCELLED: "Cancelled",
}
JOB_STATUS_LABELS = {
    JobStatus.PENDING: "Waiting",
    JobStatus.INITIATING: "Starting",
    JobStatus.RUNNING: "Rendering",
    JobStatus.COMPLETED: "Ready",
    JobStatus.FAILED: "Failed",
    JobStatus.CANCELLED: "Cancelled",
}
CANCEL_REASONS = {
    "user": "You cancelled it.",
    "replaced": "A newer batch replaced it.",
    "timeout": "It took too long and was stopped.",
    "shutdown": "The service was shut down for maintenance.",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class ResultImage:
    """One job of a task as a page shows it: its image when there is one, else its state."""

    job_id: str
    index: int
    label: str  # "Image 2", "White / M"
    status: str
    status_label: str
    url: str | None
    width: int | None
    height: int | None
    download_name: str
    error: str | None
    swatch: str | None = None  # mockups: the variant's colour name


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskCard:
    """One task on the history or result page."""

    task_id: str
    kind: str
    kind_label: str
    status: str
    status_label: str
    created_at: datetime
    title: str
    detail: str
    images: list[ResultImage]
    note: str | None  # why it failed or was cancelled
    result_page: str | None  # mockups: their own page
    finished: bool
    client_app_id: str


def products_by_id() -> dict[int, ProductDict]:
    """Return the catalog by product id, or nothing when the upstream's catalog is unknown."""
    try:
        return {product["id"]: product for product in list_products()}
    except PhotoboothError as exc:
        # Pages still render (with bare ids) when a remote catalog is not cached yet.
        logger.info("catalog_unavailable_for_page error=%s", exc)
        return {}


def _variant(product: ProductDict | None, variant_id: str) -> VariantDict | None:
    if product is None:
        return None
    return next((v for v in product["variants"] if str(v["id"]) == variant_id), None)


def _image(job: Job, *, label: str, stem: str, swatch: str | None) -> ResultImage:
    done = job.status == JobStatus.COMPLETED and bool(job.result_file)
    extension = (job.result_content_type or "image/png").rsplit("/", 1)[-1].replace("jpeg", "jpg")
    return ResultImage(
        job_id=str(job.pk),
        index=job.index,
        label=label,
        status=job.status,
        status_label=JOB_STATUS_LABELS.get(job.status, job.status),
        url=job.result_file.url if done else None,
        width=job.result_width if done else None,
        height=job.result_height if done else None,
        download_name=f"{stem}.{extension}",
        error=job.error_message or None,
        swatch=swatch,
    )


def task_card(task: Task, products: dict[int, ProductDict]) -> TaskCard:
    """Return how a task is shown (its jobs should be prefetched)."""
    jobs = sorted(task.jobs.all(), key=lambda job: job.index)
    params = task.params or {}
    short_id = str(task.pk)[:8]
    images: list[ResultImage] = []
    result_page = None
    if task.kind == TaskKind.GENERATION:
        style = STYLE_NAMES.get(params.get("style", ""), params.get("style", "Unknown style"))
        title = f"{style} · {len(jobs)} image{'s' if len(jobs) != 1 else ''}"
        detail = "Styled images of your photo"
        for job in jobs:
            stem = f"photobooth-{params.get('style', 'image')}-{short_id}-{job.index + 1}"
            images.append(_image(job, label=f"Image {job.index + 1}", stem=stem,
                                 swatch=None))  # fmt: skip
    elif task.kind == TaskKind.ENHANCEMENT:
        title = "Enhanced image"
        source = task.source_job
        detail = (
            f"From image {source.index + 1} of an earlier batch"
            if source is not None
            else "From an uploaded photo"
        )
        for job in jobs:
            images.append(_image(job, label="Enhanced", stem=f"enhanced-{short_id}",
                                 swatch=None))  # fmt: skip
    else:
        product = products.get(params.get("productId"))
        name = product["name"] if product else f"Product {params.get('productId')}"
        placement = params.get("placement") or "front"
        title = f"{name} · {placement}"
        detail = f"{len(jobs)} variant{'s' if len(jobs) != 1 else ''}"
        result_page = f"/mockups/{task.pk}/"
        for job in jobs:
            variant = _variant(product, job.variant_id)
            label = variant["name"] if variant else f"Variant {job.variant_id}"
            images.append(
                _image(job, label=label, stem=f"mockup-{short_id}-{job.variant_id}",
                       swatch=variant["color"] if variant else None)
            )  # fmt: skip
    note = None
    if task.status == TaskStatus.FAILED:
        note = task.error_message or "Something went wrong while rendering."
    elif task.status == TaskStatus.CANCELLED:
        note = CANCEL_REASONS.get(task.cancel_reason, "It was cancelled.")
    return TaskCard(
        task_id=str(task.pk),
        kind=task.kind,
        kind_label=KIND_LABELS.get(task.kind, task.kind),
        status=task.status,
        status_label=STATUS_LABELS.get(task.status, task.status),
        created_at=task.created_at,
        title=title,
        detail=detail,
        images=images,
        note=note,
        result_page=result_page,
        finished=task.is_finished,
        client_app_id=task.client_app.client_app_id,
    )
