"""The stand-in's records, kept in memory: it runs in one process, like a toy remote service.

Tasks, the responses remembered per Idempotency-Key, and counts of what was created. Every
mutation happens on the event loop in plain (non-async) code, so records never need locks.
If you add a field to a record, add it to its `to_dict()` too.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NotRequired, TypedDict

from django.conf import settings

TaskStatus = Literal["pending", "running", "completed", "failed", "cancelled"]
JobStatus = Literal["queued", "initiating", "started", "completed", "failed", "cancelled"]
FINAL_JOB_STATUSES = frozenset({"completed", "failed", "cancelled"})
FINAL_TASK_STATUSES = frozenset({"completed", "failed", "cancelled"})
IDEMPOTENCY_KEY_TTL_SECONDS = 24 * 3600  # Stripe's window: a retry a day later is a new request


def iso(moment: datetime) -> str:
    """Return `moment` as ISO-8601 UTC with milliseconds and Z."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def now() -> datetime:
    """Return the current UTC time."""
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """Return a fresh string id such as gt_3f2a...."""
    return f"{prefix}_{secrets.token_hex(12)}"


class ResultDict(TypedDict):
    url: str
    width: int
    height: int
    content_type: str


class ErrorDict(TypedDict):
    code: str
    message: str


class JobDict(TypedDict):
    id: str
    index: int
    status: JobStatus
    progress: float
    worker_name: str | None
    result: ResultDict | None
    preview_url: str | None
    error: ErrorDict | None


class GenerationTaskDict(TypedDict):
    id: str
    app_id: str
    kind: Literal["generation", "enhancement"]
    style: str | None
    number_images: int
    seed: int
    status: TaskStatus
    created_at: str
    finished_at: str | None
    jobs: list[JobDict]


@dataclass(eq=False, kw_only=True)
class Job:
    """One output image of a generation task."""

    id: str
    index: int
    status: JobStatus = "queued"
    progress: float = 0.0
    worker_name: str | None = None
    result: ResultDict | None = None
    preview_url: str | None = None
    error: ErrorDict | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL_JOB_STATUSES

    def to_dict(self) -> JobDict:
        return {
            "id": self.id,
            "index": self.index,
            "status": self.status,
            "progress": self.progress,
            "worker_name": self.worker_name,
            "result": self.result.copy() if self.result else None,
            "preview_url": self.preview_url,
            "error": self.error.copy() if self.error else None,
        }


@dataclass(eq=False, kw_only=True)
class GenerationTask:
    """A generation (1-16 styled images) or an enhancement (one 2x image) of one input photo."""

    id: str
    app_id: str
    kind: Literal["generation", "enhancement"]
    style: str | None
    number_images: int
    seed: int
    image_url: str
    files_base: str  # absolute URL prefix of result files, as the creating client reached us
    status: TaskStatus = "pending"
    created_at: datetime = field(default_factory=now)
    finished_at: datetime | None = None
    jobs: list[Job] = field(default_factory=list)

    @property
    def final(self) -> bool:
        return self.status in FINAL_TASK_STATUSES

    def to_dict(self) -> GenerationTaskDict:
        return {
            "id": self.id,
            "app_id": self.app_id,
            "kind": self.kind,
            "style": self.style,
            "number_images": self.number_images,
            "seed": self.seed,
            "status": self.status,
            "created_at": iso(self.created_at),
            "finished_at": iso(self.finished_at) if self.finished_at else None,
            "jobs": [job.to_dict() for job in self.jobs],
        }


class MockupDict(TypedDict):
    placement: str
    mockup_url: str


class VariantMockupsDict(TypedDict):
    catalog_variant_id: int
    mockups: list[MockupDict]


class FailureDict(TypedDict):
    code: str
    message: str
    catalog_variant_id: NotRequired[int]
    placement: NotRequired[str]


class MockupTaskDict(TypedDict):
    id: str
    status: Literal["pending", "completed", "failed"]
    catalog_product_id: int
    catalog_variant_mockups: list[VariantMockupsDict]
    failure_reasons: list[FailureDict]
    created_at: str
    finished_at: str | None


@dataclass(eq=False, kw_only=True)
class MockupTask:
    """One products entry of a mockup request: a design on every variant x placement."""

    id: str
    product: dict[str, Any]  # the catalog entry
    variant_ids: list[int]
    layers: dict[str, str]  # placement -> design URL
    files_base: str
    status: Literal["pending", "completed", "failed"] = "pending"
    created_at: datetime = field(default_factory=now)
    finished_at: datetime | None = None
    mockups: dict[int, list[MockupDict]] = field(default_factory=dict)
    failure_reasons: list[FailureDict] = field(default_factory=list)

    def to_dict(self) -> MockupTaskDict:
        return {
            "id": self.id,
            "status": self.status,
            "catalog_product_id": self.product["id"],
            "catalog_variant_mockups": [
                {"catalog_variant_id": variant_id, "mockups": [m.copy() for m in mockups]}
                for variant_id, mockups in self.mockups.items()
            ],
            "failure_reasons": [reason.copy() for reason in self.failure_reasons],
            "created_at": iso(self.created_at),
            "finished_at": iso(self.finished_at) if self.finished_at else None,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class IdempotentResponse:
    """The response of the first successful request with an Idempotency-Key, kept for replays."""

    fingerprint: str  # sha256 of method, path and raw body: a reuse must match it
    status: int
    body: bytes  # exactly what the first request got, so a replay is byte-identical
    task_ids: tuple[str, ...]
    created_at: datetime = field(default_factory=now)


IdempotencyScope = tuple[str, str]  # (credential digest, Idempotency-Key): keys are per account


class CreationStatsDict(TypedDict):
    generationTasksCreated: int
    mockupTasksCreated: int
    idempotentReplays: int
    createdByKey: dict[str, int]


@dataclass(kw_only=True)
class CreationStats:
    """Count what the API created, so tests in other processes can prove "exactly once"."""

    generation_tasks: int = 0
    mockup_tasks: int = 0
    idempotent_replays: int = 0
    # Cumulative, not pruned with the keys: a key reused after 24 h must show up as 2, not 1.
    by_key: dict[IdempotencyScope, int] = field(default_factory=dict)

    def to_dict(self, owner: str) -> CreationStatsDict:
        """Return the totals, and the per-key counts of one owner's (credential digest's) keys."""
        return {
            "generationTasksCreated": self.generation_tasks,
            "mockupTasksCreated": self.mockup_tasks,
            "idempotentReplays": self.idempotent_replays,
            "createdByKey": {
                key: count for (holder, key), count in self.by_key.items() if holder == owner
            },
        }


class TaskStore:
    """Hold every task by id; finished ones are forgotten after MOCKUP_API_RESULT_TTL_SECONDS.

    Idempotency keys are forgotten IDEMPOTENCY_KEY_TTL_SECONDS after their first use.
    """

    def __init__(self) -> None:
        self.generation: dict[str, GenerationTask] = {}
        self.mockup: dict[str, MockupTask] = {}
        self.idempotency: dict[IdempotencyScope, IdempotentResponse] = {}
        self.stats = CreationStats()

    def add(self, task: GenerationTask | MockupTask) -> None:
        """Keep `task`, pruning expired ones on the way (there is no other reaper)."""
        self.prune()
        if isinstance(task, GenerationTask):
            self.generation[task.id] = task
            self.stats.generation_tasks += 1
        else:
            self.mockup[task.id] = task
            self.stats.mockup_tasks += 1

    def recall(self, scope: IdempotencyScope) -> IdempotentResponse | None:
        """Return the response remembered for `scope`, unless it is older than the key window."""
        remembered = self.idempotency.get(scope)
        # prune() only runs when something is added, so a stale entry may still be here.
        if remembered is None or remembered.created_at < self._key_horizon():
            return None
        return remembered

    def remember(self, scope: IdempotencyScope, response: IdempotentResponse) -> None:
        """Keep the first response of `scope` and count the tasks it created under that key."""
        self.prune()
        self.idempotency[scope] = response
        self.stats.by_key[scope] = self.stats.by_key.get(scope, 0) + len(response.task_ids)

    def _key_horizon(self) -> datetime:
        return now() - timedelta(seconds=IDEMPOTENCY_KEY_TTL_SECONDS)

    def prune(self) -> None:
        """Forget the tasks whose results have expired, and the idempotency keys past 24 h."""
        horizon = now() - timedelta(seconds=settings.MOCKUP_API_RESULT_TTL_SECONDS)
        for tasks in (self.generation, self.mockup):
            expired = [
                task_id
                for task_id, task in tasks.items()
                if task.finished_at is not None and task.finished_at < horizon
            ]
            for task_id in expired:
                del tasks[task_id]
        key_horizon = self._key_horizon()
        stale = [s for s, r in self.idempotency.items() if r.created_at < key_horizon]
        for scope in stale:
            del self.idempotency[scope]

    def reset(self) -> None:
        """Forget every task, key and count (tests)."""
        self.generation.clear()
        self.mockup.clear()
        self.idempotency.clear()
        self.stats = CreationStats()


store = TaskStore()
