"""`POST /webhooks/mockup-api`: verify (Standard Webhooks), store, deduplicate, answer.

The request only verifies, stores and commits, then rings the workers' doorbell and answers
(204 for a known task, 202 while the task is not known yet): applying a delivery (result
downloads included) is the workers' business (jobs_app.inbox), so a stored delivery is applied
even if this process dies right after answering.

Two ways in, one check and one store: `jobs_app.webhook_endpoint` serves the path in
production (a plain ASGI app ahead of Django, storing in batches: one web process takes over
1,000 deliveries a second), and `mockup_api_webhook_view` serves it through Django's URLconf
(the test client), one delivery per request.

Verification is written out here rather than taken from the `standardwebhooks` package (which
the built-in API signs with, and our tests verify against): the contract needs its outcomes
told apart (malformed headers 400, bad signature or stale timestamp 401), several secrets for
rotation and a configurable tolerance, which the package's single `verify()` does not offer.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from jobs_app import doorbell
from jobs_app.models import Task, WebhookDelivery, WebhookOutcome, WebhookVerdict
from photobooth.db import drop_connection_if_broken, durable_transaction, is_transient
from photobooth.errors import error_body, method_not_allowed

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 256 * 1024
REJECTED_BODY_BYTES = 1024  # contract section 5: a rejected delivery keeps at most 1 KiB
UPSTREAM_ID_MAX = 100  # WebhookDelivery.upstream_task_id and Task.upstream_id columns
# A database hiccup while storing (a locked SQLite database, a lost connection) is retried for
# this long, the pauses doubling up to a second; then the delivery is answered 503 with
# Retry-After (StorageUnavailable). The senders time out after 10 s (the built-in API) to 15 s
# (Svix, Standard Webhooks).
STORE_RETRY_SECONDS = 5.0
STORE_RETRY_FIRST_PAUSE = 0.05
STORE_RETRY_MAX_PAUSE = 1.0
EVENT_TYPES = {"mockup_task_finished", "generation_task_finished", "generation_job_progress"}
STORED_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature", "content-type",
                  "user-agent")  # fmt: skip


class StorageUnavailable(Exception):
    """The database cannot store a delivery right now: 503, and the sender sends it again."""

    status = 503
    code = "storage_unavailable"
    retry_after_seconds = 5

    def __init__(self, message: str = "") -> None:
        super().__init__(message or "The delivery could not be stored right now; send it again.")


class DeliveriesVanished(LookupError):
    """Deliveries deleted between their insert and their deduplication (retention)."""


class WebhookRejected(Exception):
    """A delivery that is not applied: its verdict, HTTP status and reason."""

    def __init__(self, verdict: WebhookVerdict, status: int, code: str, message: str):
        super().__init__(message)
        self.verdict, self.status, self.code = verdict, status, code


def _malformed(message: str) -> WebhookRejected:
    return WebhookRejected(WebhookVerdict.MALFORMED, 400, "malformed_webhook", message)


def _too_large() -> WebhookRejected:
    return WebhookRejected(WebhookVerdict.TOO_LARGE, 413, "webhook_too_large",
                           "The body is over 256 KiB.")  # fmt: skip


def verify(headers: dict[str, str], body: bytes, *, now: float | None = None) -> None:
    """Check a delivery's Standard Webhooks signature; raise WebhookRejected when it fails."""
    webhook_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    signature_header = headers.get("webhook-signature", "")
    if not webhook_id or not timestamp or not signature_header:
        raise _malformed("webhook-id, webhook-timestamp and webhook-signature are required.")
    # isascii: str.isdigit() also accepts digits int() refuses ("²", read as latin-1).
    unix_seconds = timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12
    if len(webhook_id) > 255 or "\x00" in webhook_id or not unix_seconds:
        raise _malformed("webhook-id is too long or webhook-timestamp is not Unix seconds.")
    signatures = _parse_signatures(signature_header)
    now = time.time() if now is None else now
    if abs(now - int(timestamp)) > settings.WEBHOOK_TOLERANCE_SECONDS:
        raise WebhookRejected(WebhookVerdict.STALE, 401, "stale_webhook",
                              "webhook-timestamp is outside the tolerance.")  # fmt: skip
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    for key in _keys(tuple(settings.WEBHOOK_SECRETS)):
        expected = hmac.digest(key, signed, "sha256")  # one-shot: C all the way
        if any(hmac.compare_digest(expected, candidate) for candidate in signatures):
            return
    raise WebhookRejected(WebhookVerdict.BAD_SIGNATURE, 401, "invalid_signature",
                          "No v1 signature matches.")  # fmt: skip


@functools.lru_cache(maxsize=4)
def _keys(secrets: tuple[str, ...]) -> list[bytes]:
    """Return the HMAC keys of `whsec_<base64>` secrets (decoded once, not per delivery)."""
    return [base64.b64decode(secret.removeprefix("whsec_")) for secret in secrets]


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


def _parse_body(body: bytes) -> tuple[str, dict[str, Any]]:
    """Return the body as text and as the event it must be; raise WebhookRejected if not."""
    try:
        text = body.decode()  # stored as text: UTF-8 only (json.loads would take UTF-16 too)
        payload = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _malformed("The body is not JSON.") from None
    if not isinstance(payload, dict) or payload.get("type") not in EVENT_TYPES:
        raise _malformed(f"type must be one of {sorted(EVENT_TYPES)}.")
    data = payload.get("data")
    upstream_id = data.get("id") if isinstance(data, dict) else None
    # isprintable: no NUL or lone surrogate (JSON escapes), which the database cannot store.
    if not isinstance(upstream_id, str | int) or not (
        len(str(upstream_id)) <= UPSTREAM_ID_MAX and str(upstream_id).isprintable()
    ):
        raise _malformed("data must be the upstream task object with its id.")
    return text, payload


# --- Checking and storing -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    """A delivery as checked on arrival, ready to be stored."""

    webhook_id: str
    headers: dict[str, str]  # the STORED_HEADERS it came with
    body: str
    rejected: WebhookRejected | None = None
    event_type: str = ""
    upstream_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Received:
    """What storing a delivery came to: the HTTP status to answer, and whether to ring."""

    status: int
    delivery_id: int | None = None
    ring: bool = False  # a delivery now waits for the workers


def check(headers: dict[str, str], body: bytes, *, too_large: bool = False) -> Delivery:
    """Verify and parse a delivery (headers lower-cased); `too_large`: its body was cut."""
    # PostgreSQL text cannot hold NUL; what we keep of a delivery is for people to read.
    kept = {k: headers[k].replace("\x00", "\ufffd") for k in STORED_HEADERS if k in headers}
    webhook_id = kept.get("webhook-id", "")[:255]
    try:
        if too_large or len(body) > MAX_BODY_BYTES:
            raise _too_large()
        verify(headers, body)
        text, payload = _parse_body(body)
    except WebhookRejected as rejected:
        sample = body[:REJECTED_BODY_BYTES].decode("utf-8", "replace").replace("\x00", "\ufffd")
        return Delivery(webhook_id=webhook_id, headers=kept, body=sample, rejected=rejected)
    return Delivery(webhook_id=webhook_id, headers=kept, body=text, event_type=payload["type"],
                    upstream_id=str(payload["data"]["id"]))  # fmt: skip


def store_deliveries(deliveries: Sequence[Delivery]) -> list[Received]:
    """Store checked deliveries; return each one's answer, in order.

    On PostgreSQL each statement commits on its own (autocommit): each is atomic alone and none
    depends on another's uncommitted rows, while BEGIN and COMMIT would cost two more round
    trips per batch, each also waiting for the GIL the event loop holds. Elsewhere in one
    durable transaction, which on SQLite queues on the process's writer lock (photobooth/db.py).
    """
    if connection.vendor == "postgresql":
        return _store(deliveries)
    return durable_transaction(_store)(deliveries)


def _store(deliveries: Sequence[Delivery]) -> list[Received]:
    rejected = [d for d in deliveries if d.rejected is not None]
    if rejected:
        rows = [
            WebhookDelivery(webhook_id=d.webhook_id, headers=d.headers, body=d.body,
                            verdict=d.rejected.verdict, outcome=WebhookOutcome.REJECTED,
                            error=str(d.rejected))
            for d in rejected
        ]  # fmt: skip
        WebhookDelivery.objects.bulk_create(rows)
        for d in rejected:
            logger.warning("webhook_rejected id=%s verdict=%s", d.webhook_id, d.rejected.verdict)
    verified = [d for d in deliveries if d.rejected is None]
    by_id = _store_verified(verified) if verified else {}
    answers = []
    seen: set[str] = set()
    for d in deliveries:
        if d.rejected is not None:
            answers.append(Received(status=d.rejected.status))
        elif d.webhook_id in seen:
            # The same delivery twice in one batch: the second is a duplicate of the first.
            first = by_id[d.webhook_id]
            answers.append(Received(status=202 if first.ring else first.status,
                                    delivery_id=first.delivery_id))  # fmt: skip
        else:
            seen.add(d.webhook_id)
            answers.append(by_id[d.webhook_id])
    return answers


def _store_verified(deliveries: list[Delivery]) -> dict[str, Received]:
    """Insert the new deliveries, settle the duplicates; return the answer per webhook-id."""
    firsts: dict[str, Delivery] = {}
    for d in deliveries:
        firsts.setdefault(d.webhook_id, d)  # as if one after another: the first one counts
    inserted = _insert_new(list(firsts.values()))
    answers = {
        webhook_id: Received(status=204 if has_task else 202, delivery_id=pk, ring=True)
        for pk, webhook_id, has_task in inserted
    }
    duplicates = [webhook_id for webhook_id in firsts if webhook_id not in answers]
    if duplicates:
        answers.update(_settle_duplicates(duplicates))
    return answers


# The task lookup is a subquery of the insert: no round trip of its own. Like the ORM's
# `.first()` it takes the newest task (upstream ids are unique in practice).
_TASK_OF = "(SELECT t.id FROM {task} t WHERE t.upstream_id = {upstream_id} " \
           "ORDER BY t.created_at DESC LIMIT 1)"  # fmt: skip
_INSERT = "INSERT INTO {delivery} (webhook_id, received_at, headers, body, verdict, outcome, " \
          "event_type, upstream_task_id, task_id, error) {rows} " \
          "ON CONFLICT (webhook_id) WHERE verdict = 'verified' DO NOTHING " \
          "RETURNING id, webhook_id, task_id"  # fmt: skip


def _insert_new(deliveries: list[Delivery]) -> list[tuple[int, str, bool]]:
    """Insert the deliveries whose webhook-id is new, in one statement; return (id, webhook-id,
    task known) of those inserted.

    ON CONFLICT names the partial unique index `webhook_verified_once`. On PostgreSQL a
    concurrent insert of the same id waits for the other transaction, then counts as a
    duplicate; on SQLite writers never overlap (photobooth/db.py).
    """
    if connection.vendor == "postgresql":
        return _insert_new_postgresql(deliveries)
    # SQLite >= 3.35 (or another database with ON CONFLICT ... RETURNING; partial unique
    # indexes, which deduplication needs, rule out MySQL): a VALUES row per delivery.
    task_of = _TASK_OF.format(task=Task._meta.db_table, upstream_id="%s")
    row = f"(%s, %s, %s, %s, '{WebhookVerdict.VERIFIED}', '{WebhookOutcome.PENDING}', %s, %s, " \
          f"{task_of}, '')"  # fmt: skip
    rows = "VALUES " + ", ".join([row] * len(deliveries))
    sql = _INSERT.format(delivery=WebhookDelivery._meta.db_table, rows=rows)
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    params: list[Any] = []
    for d in deliveries:
        params += [d.webhook_id, now, json.dumps(d.headers), d.body, d.event_type, d.upstream_id,
                   d.upstream_id]  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [(pk, webhook_id, task_id is not None) for pk, webhook_id, task_id in cursor]


@functools.cache
def _postgresql_insert() -> str:
    task_of = _TASK_OF.format(task=Task._meta.db_table, upstream_id="d.upstream_id")
    rows = f"SELECT d.webhook_id, %s, d.headers::jsonb, d.body, '{WebhookVerdict.VERIFIED}', " \
           f"'{WebhookOutcome.PENDING}', d.event_type, d.upstream_id, {task_of}, '' FROM " \
           "unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[]) " \
           "AS d(webhook_id, headers, body, event_type, upstream_id)"  # fmt: skip
    return _INSERT.format(delivery=WebhookDelivery._meta.db_table, rows=rows)


def _insert_new_postgresql(deliveries: list[Delivery]) -> list[tuple[int, str, bool]]:
    """Insert through one statement whose text is the same for any batch size (arrays).

    It runs on a psycopg cursor that binds parameters on the server: Django's cursor quotes
    every value into the SQL text in Python (client-side binding), which cost more CPU than
    anything else in storing a batch.
    """
    import psycopg

    params = [
        timezone.now(),
        [d.webhook_id for d in deliveries],
        [json.dumps(d.headers) for d in deliveries],
        [d.body for d in deliveries],
        [d.event_type for d in deliveries],
        [d.upstream_id for d in deliveries],
    ]
    connection.ensure_connection()
    # wrap_database_errors: Django's exceptions, and errors_occurred for _drop_if_broken.
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(_postgresql_insert(), params)
        return [(pk, webhook_id, task_id is not None) for pk, webhook_id, task_id in cursor]


def _settle_duplicates(webhook_ids: list[str]) -> dict[str, Received]:
    """Answer deliveries already stored: 202 while pending, 204 once applied; a failed one is
    set pending again (the sender's retry is our cue to try again)."""
    earlier = WebhookDelivery.objects.filter(
        webhook_id__in=webhook_ids, verdict=WebhookVerdict.VERIFIED
    ).values_list("webhook_id", "pk", "outcome")
    answers = {}
    for webhook_id, pk, outcome in earlier:
        if outcome == WebhookOutcome.FAILED:
            failed = WebhookDelivery.objects.filter(pk=pk, outcome=WebhookOutcome.FAILED)
            failed.update(outcome=WebhookOutcome.PENDING)  # 0 rows: the admin was first
            answers[webhook_id] = Received(status=202, delivery_id=pk, ring=True)
        elif outcome == WebhookOutcome.PENDING:
            answers[webhook_id] = Received(status=202, delivery_id=pk)
        else:
            answers[webhook_id] = Received(status=204, delivery_id=pk)
    if missing := set(webhook_ids) - answers.keys():
        # Deleted between the insert and this read (retention): the sender retries.
        raise DeliveriesVanished(f"deliveries vanished while being deduplicated: {sorted(missing)}")
    return answers


type Outcome = Received | BaseException


def store_each(
    deliveries: Sequence[Delivery], *, retry_seconds: float | None = None
) -> list[Outcome]:
    """Store a batch; return each delivery's answer, or the exception that stands for it.

    A database hiccup is retried for up to `retry_seconds` (STORE_RETRY_SECONDS), then every
    delivery of the batch gets StorageUnavailable (503: the sender sends it again). Any other
    failure stores the deliveries one by one, so one bad delivery fails alone.
    """
    if retry_seconds is None:
        retry_seconds = STORE_RETRY_SECONDS
    try:
        return list(_store_retrying(deliveries, retry_seconds))
    except Exception as exc:
        if _retryable(exc):
            logger.error("webhook_store_unavailable count=%s ids=%s error=%r", len(deliveries),
                         [d.webhook_id for d in deliveries[:5]], exc)  # fmt: skip
            return [StorageUnavailable() for _ in deliveries]
        if len(deliveries) == 1:
            logger.exception("webhook_store_failed id=%s", deliveries[0].webhook_id)
            return [exc]
    outcomes: list[Outcome] = []
    for delivery in deliveries:
        outcomes += store_each([delivery], retry_seconds=0)
    return outcomes


def _retryable(exc: BaseException) -> bool:
    return is_transient(exc) or isinstance(exc, DeliveriesVanished)


def _store_retrying(deliveries: Sequence[Delivery], retry_seconds: float) -> list[Received]:
    deadline = time.monotonic() + retry_seconds
    pause = STORE_RETRY_FIRST_PAUSE
    while True:
        try:
            return store_deliveries(deliveries)
        except Exception as exc:
            if not _retryable(exc) or time.monotonic() + pause > deadline:
                raise
            logger.warning("webhook_store_retry count=%s in=%.2f error=%r",
                           len(deliveries), pause, exc)  # fmt: skip
        drop_connection_if_broken()  # a lost connection: the next try reconnects
        time.sleep(pause)
        pause = min(pause * 2, STORE_RETRY_MAX_PAUSE)


@csrf_exempt
async def mockup_api_webhook_view(request: HttpRequest) -> HttpResponse:
    """Receive a webhook of the mockup API through Django (the test client, WSGI)."""
    if request.method != "POST":
        return method_not_allowed(["POST"])
    headers = {k.lower(): v for k, v in request.headers.items()}
    delivery = check(headers, request.body)
    # One delivery, on asgiref's thread: in tests that is where the test's transaction is.
    [received] = await sync_to_async(store_each)([delivery])
    if delivery.rejected is not None:
        # Answered whether or not its record could be kept: the sender must not retry it.
        rejected = delivery.rejected
        return JsonResponse(error_body(rejected.code, str(rejected)), status=rejected.status)
    if isinstance(received, StorageUnavailable):
        response = JsonResponse(error_body(received.code, str(received)), status=received.status)
        response["Retry-After"] = str(received.retry_after_seconds)
        return response
    if isinstance(received, BaseException):
        raise received  # a bug, not the database: the 500 handler logs it
    if received.ring:
        await doorbell.aring(doorbell.INBOX)
    return HttpResponse(status=received.status)
