"""Idempotency keys for the creating POSTs, with Stripe's semantics (contract section 6).

Same credential + same `Idempotency-Key` + same fingerprint (method, path, raw body) within
24 h: the first response again, byte for byte, with `Idempotent-Replayed: true`, and no new
task. Same key, other fingerprint: 422. Only successful creations are remembered, so a request
that failed validation can be fixed and retried under the same key.

No "in progress" state (Stripe's 409) is needed: `create_once` is plain synchronous code on the
event loop, with no await between looking the key up and remembering the response, so a
concurrent request with the same key runs either wholly before or wholly after it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse

from mockup_api.errors import IdempotencyKeyReused, InvalidRequest
from mockup_api.store import GenerationTask, IdempotentResponse, MockupTask, store

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255  # Stripe's limit
REPLAYED_HEADER = "Idempotent-Replayed"


@dataclass(frozen=True, slots=True, kw_only=True)
class Created:
    """What a creating request made: the response body and the tasks behind it."""

    body: dict[str, Any]
    tasks: Sequence[GenerationTask | MockupTask]


def create_once(
    request: HttpRequest, credential: str, create: Callable[[HttpRequest], Created]
) -> HttpResponse:
    """Answer 201 with what `create` makes, or replay what the request's key made before.

    Must stay synchronous: the atomicity of lookup-then-remember rests on it (module docstring).
    """
    key = idempotency_key(request)
    if key is None:
        return JsonResponse(create(request).body, status=201)
    scope = (credential_scope(credential), key)
    fingerprint = request_fingerprint(request)
    if (earlier := store.recall(scope)) is not None:
        if earlier.fingerprint != fingerprint:
            raise IdempotencyKeyReused()
        store.stats.idempotent_replays += 1
        replay = HttpResponse(earlier.body, status=earlier.status, content_type="application/json")
        replay[REPLAYED_HEADER] = "true"
        return replay
    created = create(request)  # a validation error propagates before anything is remembered
    response = JsonResponse(created.body, status=201)
    store.remember(
        scope,
        IdempotentResponse(
            fingerprint=fingerprint,
            status=response.status_code,
            body=response.content,
            task_ids=tuple(task.id for task in created.tasks),
        ),
    )
    return response


def idempotency_key(request: HttpRequest) -> str | None:
    """Return the request's Idempotency-Key, None without one; raise on an unusable one."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise InvalidRequest(
            f"The {HEADER} header must be 1 to {MAX_KEY_LENGTH} characters.",
            details={"headers": {HEADER: f"1 to {MAX_KEY_LENGTH} characters."}},
        )
    return key


def request_fingerprint(request: HttpRequest) -> str:
    """Return the sha256 of the request's method, path and raw body."""
    digest = hashlib.sha256()
    # NUL-separated so that no method/path/body split can collide with another.
    for part in (request.method or "", request.path):
        digest.update(part.encode() + b"\0")
    digest.update(request.body)
    return digest.hexdigest()


def credential_scope(credential: str) -> str:
    """Return the owner name that `credential`'s keys are scoped by."""
    # Per account, like Stripe, without keeping the API key itself in the table.
    return hashlib.sha256(credential.encode()).hexdigest()
