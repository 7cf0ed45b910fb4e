"""`POST /webhooks/mockup-api`: verify (Standard Webhooks), store, deduplicate, answer.

The request only verifies, stores and commits, then rings the workers' doorbell and answers
(204 for a known task, 202 while the task is not known yet): applying a delivery (result
downloads included) is the workers' business (jobs_app.inbox), so a stored delivery is applied
even if this process dies right after answering.

Verification is written out here rather than taken from the `standardwebhooks` package (which
the built-in API signs with, and our tests verify against): the contract needs its outcomes
told apart (malformed headers 400, bad signature or stale timestamp 401), several secrets for
rotation and a configurable tolerance, which the package's single `verify()` does not offer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from jobs_app import doorbell
from jobs_app.models import Task, WebhookDelivery, WebhookOutcome, WebhookVerdict
from photobooth.db import durable_transaction
from photobooth.errors import error_body, method_not_allowed

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 256 * 1024
EVENT_TYPES = {"mockup_task_finished", "generation_task_finished", "generation_job_progress"}
STORED_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature", "content-type",
                  "user-agent")  # fmt: skip


class WebhookRejected(Exception):
    """A delivery that is not applied: its verdict, HTTP status and reason."""

    def __init__(self, verdict: WebhookVerdict, status: int, code: str, message: str):
        super().__init__(message)
        self.verdict, self.status, self.code = verdict, status, code


def _malformed(message: str) -> WebhookRejected:
    return WebhookRejected(WebhookVerdict.MALFORMED, 400, "malformed_webhook", message)


def verify(headers: dict[str, str], body: bytes, *, now: float | None = None) -> None:
    """Check a delivery's Standard Webhooks signature; raise WebhookRejected when it fails."""
    webhook_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    signature_header = headers.get("webhook-signature", "")
    if not webhook_id or not timestamp or not signature_header:
        raise _malformed("webhook-id, webhook-timestamp and webhook-signature are required.")
    if len(webhook_id) > 255 or not timestamp.isdigit():
        raise _malformed("webhook-id is too long or webhook-timestamp is not Unix seconds.")
    signatures = _parse_signatures(signature_header)
    now = time.time() if now is None else now
    if abs(now - int(timestamp)) > settings.WEBHOOK_TOLERANCE_SECONDS:
        raise WebhookRejected(WebhookVerdict.STALE, 401, "stale_webhook",
                              "webhook-timestamp is outside the tolerance.")  # fmt: skip
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    for secret in settings.WEBHOOK_SECRETS:
        key = base64.b64decode(secret.removeprefix("whsec_"))
        expected = hmac.new(key, signed, hashlib.sha256).digest()
        if any(hmac.compare_digest(expected, candidate) for candidate in signatures):
            return
    raise WebhookRejected(WebhookVerdict.BAD_SIGNATURE, 401, "invalid_signature",
                          "No v1 signature matches.")  # fmt: skip


def _parse_signatures(header: str) -> list[bytes]:
    """Return the decoded v1 signatures; other versions are ignored, bad shapes refused."""
    found = []
    for entry in header.split():
        version, sep, value = entry.partition(",")
        if not sep or not version or not value:
            raise _malformed("webhook-signature entries are '<version>,<base64>'.")
        try:
            decoded = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise _malformed("A webhook-signature entry is not valid base64.") from None
        if version == "v1":
            found.append(decoded)
    return found


@dataclass(frozen=True, slots=True, kw_only=True)
class Received:
    status: int
    delivery_id: int | None = None
    ring: bool = False  # a delivery now waits for the workers


def receive(headers: dict[str, str], body: bytes) -> Received:
    """Verify and store a delivery; say whether it needs applying (sync, in one thread)."""
    stored_headers = {k: headers[k] for k in STORED_HEADERS if k in headers}
    webhook_id = headers.get("webhook-id", "")[:255]
    try:
        if len(body) > MAX_BODY_BYTES:
            raise WebhookRejected(WebhookVerdict.TOO_LARGE, 413, "webhook_too_large",
                                  "The body is over 256 KiB.")  # fmt: skip
        verify(headers, body)
        payload = _parse_body(body)
    except WebhookRejected as rejected:
        _store_rejected(webhook_id, stored_headers, body, rejected)
        raise
    return _store_verified(webhook_id, stored_headers, body, payload)


@durable_transaction
def _store_rejected(
    webhook_id: str, headers: dict[str, str], body: bytes, rejected: WebhookRejected
) -> None:
    WebhookDelivery.objects.create(
        webhook_id=webhook_id, headers=headers,
        body=body[:MAX_BODY_BYTES].decode("utf-8", "replace"),
        verdict=rejected.verdict, outcome=WebhookOutcome.REJECTED, error=str(rejected),
    )  # fmt: skip
    logger.warning("webhook_rejected id=%s verdict=%s", webhook_id, rejected.verdict)


@durable_transaction
def _store_verified(
    webhook_id: str, headers: dict[str, str], body: bytes, payload: dict[str, Any]
) -> Received:
    earlier = WebhookDelivery.objects.filter(
        webhook_id=webhook_id, verdict=WebhookVerdict.VERIFIED
    ).first()
    if earlier is not None:
        return _duplicate(earlier)
    upstream_id = str(payload["data"]["id"])
    task = Task.objects.filter(upstream_id=upstream_id).first()
    try:
        with transaction.atomic():
            delivery = WebhookDelivery.objects.create(
                webhook_id=webhook_id, headers=headers, body=body.decode(),
                verdict=WebhookVerdict.VERIFIED, outcome=WebhookOutcome.PENDING,
                event_type=payload["type"], upstream_task_id=upstream_id, task=task,
            )  # fmt: skip
    except IntegrityError:
        # The same delivery raced in on another request; that one decides.
        return _duplicate(WebhookDelivery.objects.get(webhook_id=webhook_id, verdict="verified"))
    # 202: applied as soon as the task is known (its submission is being recorded).
    return Received(status=204 if task else 202, delivery_id=delivery.pk, ring=True)


def _duplicate(earlier: WebhookDelivery) -> Received:
    if earlier.outcome == WebhookOutcome.FAILED:
        # Applying failed (e.g. a download): the sender's retry is our cue to try again.
        WebhookDelivery.objects.filter(pk=earlier.pk).update(outcome=WebhookOutcome.PENDING)
        return Received(status=202, delivery_id=earlier.pk, ring=True)
    if earlier.outcome == WebhookOutcome.PENDING:
        return Received(status=202, delivery_id=earlier.pk)
    return Received(status=204, delivery_id=earlier.pk)


def _parse_body(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise _malformed("The body is not JSON.") from None
    if not isinstance(payload, dict) or payload.get("type") not in EVENT_TYPES:
        raise _malformed(f"type must be one of {sorted(EVENT_TYPES)}.")
    data = payload.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("id"), str | int):
        raise _malformed("data must be the upstream task object with its id.")
    return payload


@csrf_exempt
async def mockup_api_webhook_view(request: HttpRequest) -> HttpResponse:
    """Receive a webhook of the mockup API."""
    if request.method != "POST":
        return method_not_allowed(["POST"])
    headers = {k.lower(): v for k, v in request.headers.items()}
    try:
        received = await sync_to_async(receive)(headers, request.body)
    except WebhookRejected as rejected:
        return JsonResponse(error_body(rejected.code, str(rejected)), status=rejected.status)
    if received.ring:
        await doorbell.aring(doorbell.INBOX)
    return HttpResponse(status=received.status)
