"""POST /webhooks/mockup-api through the ASGI application, as daphne serves it: the lean
endpoint routed ahead of Django (jobs_app.webhook_endpoint), its batched store
threads and the coalesced doorbell.

tests/test_webhooks.py covers the contract through Django's test client (same checks, same
storage); these tests cover what only the served path does. The store threads have
connections of their own, so the tests commit for real (transaction=True).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time

import pytest
from channels.layers import get_channel_layer
from channels.testing import ApplicationCommunicator, HttpCommunicator
from django.db import OperationalError, connection
from django.test import Client

from jobs_app import doorbell, webhook_endpoint, webhooks
from jobs_app.models import Task, WebhookDelivery
from photobooth.asgi import application
from tests.conftest import generation_body
from tests.test_webhooks import OTHER_SECRET, SECRET, generation_finished, signed

pytestmark = pytest.mark.django_db(transaction=True)

PATH = "/webhooks/mockup-api"
TIMEOUT = 10  # the store threads and the SQLite writer lock; normally milliseconds


@pytest.fixture(autouse=True)
def _secrets(settings):
    settings.WEBHOOK_SECRETS = [SECRET, OTHER_SECRET]


@pytest.fixture(autouse=True)
def _store_threads_released():
    """Stop the store threads after each test: their connections must not outlive it."""
    yield
    webhook_endpoint.endpoint.store.close()


@pytest.fixture
def known_task(owner, uploaded) -> str:
    """A task the upstream knows as up_1."""
    task = owner.create_task(generation_body(uploaded["uploadId"], numberImages=2)).json()
    Task.objects.filter(pk=task["taskId"]).update(status="running", upstream_id="up_1")
    return task["taskId"]


def _asgi_headers(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode(), v.encode()) for k, v in headers.items()] + [
        (b"content-type", b"application/json")
    ]


async def post(raw: bytes, headers: dict[str, str], method: str = "POST") -> dict:
    communicator = HttpCommunicator(application, method, PATH, raw, _asgi_headers(headers))
    try:
        return await communicator.get_response(timeout=TIMEOUT)
    finally:
        await communicator.wait(TIMEOUT)


def error_code(response: dict) -> str:
    return json.loads(response["body"])["error"]["code"]


def stored(webhook_id: str) -> list[WebhookDelivery]:
    return list(WebhookDelivery.objects.filter(webhook_id=webhook_id))


def checked(upstream_id: str) -> webhooks.Delivery:
    raw, headers = signed(generation_finished(upstream_id))
    return webhooks.check(headers, raw)


class TestAnswers:
    async def test_a_verified_delivery_for_a_known_task_is_204_and_stored_pending(self, known_task):
        raw, headers = signed(generation_finished("up_1"))
        response = await post(raw, headers)
        assert response["status"] == 204
        [delivery] = await asyncio.to_thread(stored, headers["webhook-id"])
        assert (delivery.verdict, delivery.outcome) == ("verified", "pending")
        assert str(delivery.task_id) == known_task
        assert delivery.body == raw.decode()
        assert delivery.headers["webhook-signature"] == headers["webhook-signature"]
        assert (delivery.event_type, delivery.upstream_task_id) == (
            "generation_task_finished",
            "up_1",
        )

    async def test_a_delivery_for_an_unknown_task_is_202(self, db):
        raw, headers = signed(generation_finished("up_nobody"))
        assert (await post(raw, headers))["status"] == 202
        [delivery] = await asyncio.to_thread(stored, headers["webhook-id"])
        assert delivery.task_id is None and delivery.outcome == "pending"

    async def test_a_bad_signature_is_401_in_the_error_format_and_kept_with_1_kib_of_body(self, db):
        raw, headers = signed({**generation_finished("up_1"), "pad": "x" * 5000},
                              secret="whsec_" + "A" * 32)  # fmt: skip
        response = await post(raw, headers)
        assert response["status"] == 401
        assert error_code(response) == "invalid_signature"
        assert (b"content-type", b"application/json") in response["headers"]
        [delivery] = await asyncio.to_thread(stored, headers["webhook-id"])
        assert (delivery.verdict, delivery.outcome) == ("bad_signature", "rejected")
        assert delivery.body == raw[:1024].decode()

    async def test_a_stale_timestamp_is_401(self, db):
        raw, headers = signed(generation_finished("up_1"), at=time.time() - 301)
        response = await post(raw, headers)
        assert (response["status"], error_code(response)) == (401, "stale_webhook")

    @pytest.mark.parametrize(
        "change",
        [
            {"webhook-signature": "v1,not*base64!"},
            {"webhook-timestamp": "\u00b2"},  # a digit to str.isdigit(), not to int()
            {"webhook-timestamp": "9" * 5000},
        ],
    )
    async def test_malformed_headers_are_400(self, db, change):
        raw, headers = signed(generation_finished("up_1"))
        headers.update(change)
        communicator_headers = [(k.encode(), v.encode("latin-1")) for k, v in headers.items()]
        communicator = HttpCommunicator(application, "POST", PATH, raw, communicator_headers)
        response = await communicator.get_response(timeout=TIMEOUT)
        assert (response["status"], error_code(response)) == (400, "malformed_webhook")

    @pytest.mark.parametrize(
        "body",
        [
            b"not json\x00",
            b"[" * 100_000,  # deeper than the JSON parser recurses
            json.dumps(generation_finished("u" * 101)).encode(),  # longer than the column
            json.dumps(generation_finished("a\u0000b")).encode(),  # NUL: not in PostgreSQL text
        ],
    )
    async def test_bodies_the_database_could_not_take_are_400_not_500(self, db, body):
        raw, headers = signed(body)
        response = await post(raw, headers)
        assert (response["status"], error_code(response)) == (400, "malformed_webhook")
        [delivery] = await asyncio.to_thread(stored, headers["webhook-id"])
        assert delivery.verdict == "malformed" and "\x00" not in delivery.body

    async def test_a_body_over_256_kib_is_413_without_reading_it_all(self, db):
        raw, headers = signed({**generation_finished("up_1"), "pad": "x" * 400_000})
        communicator = ApplicationCommunicator(application, {
            "type": "http", "http_version": "1.1", "method": "POST", "path": PATH,
            "query_string": b"", "headers": _asgi_headers(headers),
        })  # fmt: skip
        chunks = [raw[i : i + 64 * 1024] for i in range(0, len(raw), 64 * 1024)]
        for chunk in chunks:
            await communicator.send_input({"type": "http.request", "body": chunk,
                                           "more_body": chunk is not chunks[-1]})  # fmt: skip
        start = await communicator.receive_output(TIMEOUT)
        body = await communicator.receive_output(TIMEOUT)
        assert start["status"] == 413
        assert json.loads(body["body"])["error"]["code"] == "webhook_too_large"
        await communicator.wait(TIMEOUT)
        # It stopped reading as soon as the body passed the limit: the last chunks wait unread.
        assert not communicator.input_queue.empty()
        [delivery] = await asyncio.to_thread(stored, headers["webhook-id"])
        assert delivery.verdict == "too_large" and len(delivery.body) == 1024

    @pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
    async def test_other_methods_are_405_with_allow(self, method):
        response = await post(b"", {}, method=method)
        assert (response["status"], error_code(response)) == (405, "method_not_allowed")
        assert (b"allow", b"POST") in response["headers"]


class TestDuplicates:
    async def test_a_duplicate_is_202_while_pending_204_once_applied_202_after_a_failure(
        self, known_task
    ):
        raw, headers = signed(generation_finished("up_1"))
        assert (await post(raw, headers))["status"] == 204
        assert (await post(raw, headers))["status"] == 202  # stored, not applied yet
        [delivery] = await asyncio.to_thread(stored, headers["webhook-id"])

        def set_outcome(outcome: str) -> None:
            WebhookDelivery.objects.filter(pk=delivery.pk).update(outcome=outcome)

        await asyncio.to_thread(set_outcome, "applied")
        assert (await post(raw, headers))["status"] == 204
        await asyncio.to_thread(set_outcome, "failed")
        assert (await post(raw, headers))["status"] == 202  # the retry is our cue
        [delivery] = await asyncio.to_thread(stored, headers["webhook-id"])
        assert delivery.outcome == "pending"

    async def test_50_concurrent_identical_posts_store_the_delivery_once(self, known_task):
        raw, headers = signed(generation_finished("up_1"))
        responses = await asyncio.gather(*(post(raw, headers) for _ in range(50)))
        statuses = sorted(r["status"] for r in responses)
        assert statuses == [202] * 49 + [204]
        assert len(await asyncio.to_thread(stored, headers["webhook-id"])) == 1

    async def test_a_forged_copy_does_not_block_the_real_delivery(self, known_task):
        raw, headers = signed(generation_finished("up_1"))
        forged = {**headers, "webhook-signature": "v1," + "A" * 44}
        assert (await post(raw, forged))["status"] == 401
        assert (await post(raw, headers))["status"] == 204
        verdicts = {d.verdict for d in await asyncio.to_thread(stored, headers["webhook-id"])}
        assert verdicts == {"bad_signature", "verified"}


class TestStore:
    """The store itself: batches, and what a failing batch does."""

    def test_the_same_delivery_twice_in_one_batch_is_stored_once(self, known_task):
        raw, headers = signed(generation_finished("up_1"))
        delivery = webhooks.check(headers, raw)
        first, second = webhooks.store_deliveries([delivery, delivery])
        assert (first.status, first.ring) == (204, True)
        assert (second.status, second.ring) == (202, False)  # a duplicate of a pending one
        assert first.delivery_id == second.delivery_id
        assert len(stored(headers["webhook-id"])) == 1

    def test_a_batch_stores_each_delivery_with_its_own_answer(self, known_task):
        new = [checked("up_1"), checked("up_unknown")]
        raw, headers = signed(generation_finished("up_1"))
        forged = webhooks.check({**headers, "webhook-signature": "v1," + "A" * 44}, raw)
        answers = webhooks.store_deliveries([*new, forged])
        assert [a.status for a in answers] == [204, 202, 401]
        assert WebhookDelivery.objects.count() == 3

    def test_a_failing_batch_is_stored_one_by_one(self, known_task, monkeypatch):
        good, poison = checked("up_1"), checked("poison")
        insert = webhooks._insert_new

        def failing_on_poison(deliveries):
            if any(d.upstream_id == "poison" for d in deliveries):
                raise RuntimeError("the database refused it")
            return insert(deliveries)

        monkeypatch.setattr(webhooks, "_insert_new", failing_on_poison)
        answer, failure = webhooks.store_each([good, poison])
        assert answer.status == 204
        assert isinstance(failure, RuntimeError)
        assert WebhookDelivery.objects.get().upstream_task_id == "up_1"

    async def test_a_store_failure_is_500_in_the_error_format(self, db, monkeypatch):
        def broken(deliveries):
            raise RuntimeError("database down")

        monkeypatch.setattr(webhooks, "_insert_new", broken)
        raw, headers = signed(generation_finished("up_1"))
        response = await post(raw, headers)
        assert (response["status"], error_code(response)) == (500, "internal_error")


class TestDatabaseHiccups:
    """A database that is locked or away for a moment never costs a 5xx; one that stays away
    gets 503 with Retry-After (not stored, so not 2xx: the sender delivers it again)."""

    async def test_a_delivery_is_stored_and_answered_204_after_a_database_hiccup(
        self, known_task, monkeypatch, caplog
    ):
        store, failures = webhooks.store_deliveries, [OperationalError("database is locked")]

        def hiccup(deliveries):
            if failures:
                raise failures.pop()
            return store(deliveries)

        monkeypatch.setattr(webhooks, "store_deliveries", hiccup)
        raw, headers = signed(generation_finished("up_1"))
        assert (await post(raw, headers))["status"] == 204
        assert len(await asyncio.to_thread(stored, headers["webhook-id"])) == 1
        assert "webhook_store_retry" in caplog.text

    async def test_a_delivery_the_database_cannot_store_is_503_with_retry_after(
        self, known_task, monkeypatch, caplog
    ):
        def away(deliveries):
            raise OperationalError("database is locked")

        store = webhooks.store_deliveries
        monkeypatch.setattr(webhooks, "STORE_RETRY_SECONDS", 0.3)
        monkeypatch.setattr(webhooks, "store_deliveries", away)
        raw, headers = signed(generation_finished("up_1"))
        response = await post(raw, headers)
        assert (response["status"], error_code(response)) == (503, "storage_unavailable")
        assert (b"retry-after", b"5") in response["headers"]
        assert "webhook_store_unavailable" in caplog.text
        # The sender's retry, once the database is back, is stored like a first delivery.
        monkeypatch.setattr(webhooks, "store_deliveries", store)
        assert (await post(raw, headers))["status"] == 204
        assert len(await asyncio.to_thread(stored, headers["webhook-id"])) == 1

    async def test_a_rejected_delivery_gets_its_rejection_even_when_it_cannot_be_stored(
        self, db, monkeypatch
    ):
        def away(deliveries):
            raise OperationalError("database is locked")

        monkeypatch.setattr(webhooks, "STORE_RETRY_SECONDS", 0.1)
        monkeypatch.setattr(webhooks, "store_deliveries", away)
        raw, headers = signed(generation_finished("up_1"), secret="whsec_" + "A" * 32)
        response = await post(raw, headers)
        assert (response["status"], error_code(response)) == (401, "invalid_signature")

    @pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's writer lock")
    async def test_a_delivery_waits_out_a_writer_another_connection_holds_past_the_timeout(
        self, known_task, monkeypatch, caplog
    ):
        # The store threads connect anew with a busy timeout of 0.2 s; another connection
        # (another process, as far as this one knows) holds the writer for 1 s.
        monkeypatch.setitem(connection.settings_dict["OPTIONS"], "timeout", 0.2)
        other = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None,
                                check_same_thread=False)  # fmt: skip
        other.execute("BEGIN IMMEDIATE")
        ends = threading.Timer(1.0, other.execute, ["COMMIT"])
        ends.start()
        try:
            started = time.monotonic()
            raw, headers = signed(generation_finished("up_1"))
            assert (await post(raw, headers))["status"] == 204
            assert time.monotonic() - started >= 0.9
        finally:
            ends.join()
            other.close()
        assert len(await asyncio.to_thread(stored, headers["webhook-id"])) == 1
        assert "webhook_store_retry" in caplog.text and "database is locked" in caplog.text

    def test_the_django_view_answers_503_with_retry_after_too(self, db, monkeypatch):
        def away(deliveries):
            raise OperationalError("database is locked")

        monkeypatch.setattr(webhooks, "STORE_RETRY_SECONDS", 0.1)
        monkeypatch.setattr(webhooks, "store_deliveries", away)
        raw, headers = signed(generation_finished("up_1"))
        response = Client().post(PATH, raw, content_type="application/json", headers=headers)
        assert response.status_code == 503 and response["Retry-After"] == "5"
        assert response.json()["error"]["code"] == "storage_unavailable"


class TestDoorbell:
    async def test_a_stored_delivery_rings_the_workers_group(self, known_task):
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(doorbell.WORKERS_GROUP, channel)
        raw, headers = signed(generation_finished("up_1"))
        assert (await post(raw, headers))["status"] == 204
        message = await asyncio.wait_for(layer.receive(channel), TIMEOUT)
        assert message == {"type": doorbell.MESSAGE_TYPE, "what": doorbell.INBOX}

    async def test_a_duplicate_of_a_pending_delivery_does_not_ring(self, known_task):
        raw, headers = signed(generation_finished("up_1"))
        await post(raw, headers)
        await asyncio.sleep(2 * doorbell.COALESCE_SECONDS)  # its ring is gone
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(doorbell.WORKERS_GROUP, channel)
        assert (await post(raw, headers))["status"] == 202
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(layer.receive(channel), 5 * doorbell.COALESCE_SECONDS)

    async def test_rings_of_a_burst_are_merged_and_the_last_is_never_lost(self):
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(doorbell.WORKERS_GROUP, channel)
        for _ in range(10):
            doorbell.ring_soon(doorbell.INBOX)
        # The first goes at once; the other nine become one, sent when the window ends.
        first = await asyncio.wait_for(layer.receive(channel), 1)
        started = asyncio.get_running_loop().time()
        merged = await asyncio.wait_for(layer.receive(channel), 1)
        assert first == merged == {"type": doorbell.MESSAGE_TYPE, "what": doorbell.INBOX}
        assert asyncio.get_running_loop().time() - started >= doorbell.COALESCE_SECONDS / 2
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(layer.receive(channel), 4 * doorbell.COALESCE_SECONDS)


def test_daphne_leaves_post_bodies_unparsed_for_the_app():
    """Twisted's form parsing (email-package header parsing per POST, whole multipart bodies
    read into memory) is off for daphne's requests: the app gets the raw body either way."""
    import io
    from types import SimpleNamespace

    from daphne.http_protocol import WebRequest
    from twisted.web.test.requesthelper import DummyChannel

    from photobooth.twisted_forms import skip_form_parsing

    assert skip_form_parsing()  # photobooth.asgi did it already; doing it again changes nothing
    channel = DummyChannel()
    channel.factory = SimpleNamespace(server=SimpleNamespace(protocol_connected=lambda r: None))
    request = WebRequest(channel)
    request.process = lambda: None  # what daphne does with the body is not the point here
    request.requestHeaders.setRawHeaders(b"content-type", [b"application/x-www-form-urlencoded"])
    request.content = io.BytesIO()
    request.content.write(b"a=1")  # as Twisted does while the body arrives
    request.requestReceived(b"POST", b"/webhooks/mockup-api", b"HTTP/1.1")
    assert request.args == {}
    assert request.content.read() == b"a=1"
