"""POST /webhooks/mockup-api: Standard Webhooks verification, storage, deduplication; then the
workers' inbox applies what was stored (tests.worker_helpers.run_inbox plays the worker).

Deliveries are signed with the `standardwebhooks` package (what the built-in API uses), so
these tests also show our verifier accepts the reference implementation's signatures.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook

from jobs_app.models import Job, Task, WebhookDelivery
from tests.conftest import generation_body
from tests.worker_helpers import a_worker, follow, run_inbox

pytestmark = pytest.mark.django_db

SECRET = "whsec_" + base64.b64encode(b"test-webhook-secret-0123456789ab").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"rotated-webhook-secret-987654321").decode()


@pytest.fixture(autouse=True)
def _secrets(settings):
    settings.WEBHOOK_SECRETS = [SECRET, OTHER_SECRET]


def signed(body: dict | bytes, *, secret: str = SECRET, webhook_id: str | None = None,
           at: float | None = None) -> tuple[bytes, dict[str, str]]:  # fmt: skip
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    webhook_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    moment = datetime.fromtimestamp(at if at is not None else time.time(), UTC)
    signature = Webhook(secret).sign(webhook_id, moment, raw.decode())
    headers = {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": signature,
    }
    return raw, headers


def post(client, raw: bytes, headers: dict[str, str]):
    return client.post("/webhooks/mockup-api", raw, content_type="application/json",
                       headers=headers)  # fmt: skip


def generation_finished(upstream_id: str, jobs: list[dict] | None = None, status="completed"):
    return {
        "type": "generation_task_finished",
        "timestamp": "2026-11-26T03:00:00.000Z",
        "data": {"id": upstream_id, "status": status, "jobs": jobs or []},
    }


@pytest.fixture
def worker(db):
    return a_worker()


@pytest.fixture
def submitted(owner, uploaded, worker):
    """A task the upstream accepted as up_1, with two jobs, followed by `worker`."""
    task = owner.create_task(generation_body(uploaded["uploadId"], numberImages=2)).json()
    Task.objects.filter(pk=task["taskId"]).update(status="running", upstream_id="up_1")
    follow(task["taskId"], worker)
    return task


class TestVerification:
    def test_a_valid_delivery_for_a_known_task_is_204_stored_then_applied_by_its_worker(
        self, client, submitted, worker
    ):
        failed_jobs = [{"id": "j0", "index": 0, "status": "failed",
                        "error": {"code": "render_failed", "message": "boom"}}]  # fmt: skip
        raw, headers = signed(generation_finished("up_1", failed_jobs))
        response = post(client, raw, headers)
        assert response.status_code == 204
        delivery = WebhookDelivery.objects.get(webhook_id=headers["webhook-id"])
        # Answered once stored: nothing applied inside the request.
        assert (delivery.verdict, delivery.outcome) == ("verified", "pending")
        assert Job.objects.get(task_id=submitted["taskId"], index=0).status == "pending"
        run_inbox(worker)
        delivery.refresh_from_db()
        assert delivery.outcome == "applied" and delivery.task_id is not None
        assert Job.objects.get(task_id=submitted["taskId"], index=0).status == "failed"

    def test_a_delivery_for_a_task_another_live_worker_follows_is_left_to_it(
        self, client, submitted
    ):
        raw, headers = signed(generation_finished("up_1"))
        assert post(client, raw, headers).status_code == 204
        run_inbox(a_worker("bystander"))
        assert WebhookDelivery.objects.get(verdict="verified").outcome == "pending"

    def test_any_configured_secret_verifies_for_rotation(self, client, submitted):
        raw, headers = signed(generation_finished("up_1"), secret=OTHER_SECRET)
        assert post(client, raw, headers).status_code == 204

    def test_a_bad_signature_is_401_and_stored_as_rejected(self, client, submitted):
        raw, headers = signed(generation_finished("up_1"),
                              secret="whsec_" + base64.b64encode(b"x" * 32).decode())  # fmt: skip
        response = post(client, raw, headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_signature"
        delivery = WebhookDelivery.objects.get()
        assert (delivery.verdict, delivery.outcome) == ("bad_signature", "rejected")

    def test_a_body_changed_after_signing_is_401(self, client, submitted):
        raw, headers = signed(generation_finished("up_1"))
        assert post(client, raw.replace(b"completed", b"failed"), headers).status_code == 401

    def test_only_unknown_signature_versions_is_401(self, client, submitted):
        raw, headers = signed(generation_finished("up_1"))
        headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v2,")
        assert post(client, raw, headers).status_code == 401

    @pytest.mark.parametrize("offset", [-301, 301])
    def test_stale_and_future_timestamps_are_401(self, client, submitted, offset):
        raw, headers = signed(generation_finished("up_1"), at=time.time() + offset)
        response = post(client, raw, headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "stale_webhook"
        assert WebhookDelivery.objects.get().verdict == "stale"

    def test_the_tolerance_is_configurable(self, client, submitted, settings):
        settings.WEBHOOK_TOLERANCE_SECONDS = 1000
        raw, headers = signed(generation_finished("up_1"), at=time.time() - 900)
        assert post(client, raw, headers).status_code == 204

    @pytest.mark.parametrize(
        "change",
        [
            {"webhook-signature": "v1"},
            {"webhook-signature": "v1,not*base64!"},
            {"webhook-signature": ",abc"},
            {"webhook-timestamp": "yesterday"},
            {"webhook-id": ""},
        ],
    )
    def test_malformed_headers_are_400_never_500(self, client, submitted, change):
        raw, headers = signed(generation_finished("up_1"))
        headers.update(change)
        response = post(client, raw, headers)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "malformed_webhook"

    @pytest.mark.parametrize(
        "body",
        [
            b"not json",
            b"[]",
            b'{"type": "other", "data": {}}',
            b'{"type": "generation_task_finished", "data": 7}',
        ],
    )
    def test_a_malformed_body_is_400(self, client, submitted, body):
        raw, headers = signed(body)
        assert post(client, raw, headers).status_code == 400

    def test_an_oversized_body_is_413(self, client, submitted):
        raw, headers = signed({"type": "generation_task_finished", "pad": "x" * 300_000,
                               "data": {"id": "up_1"}})  # fmt: skip
        response = post(client, raw, headers)
        assert response.status_code == 413
        assert WebhookDelivery.objects.get().verdict == "too_large"

    def test_get_is_405(self, client):
        assert client.get("/webhooks/mockup-api").status_code == 405


class TestIdempotency:
    def test_a_duplicate_of_an_applied_delivery_is_204_and_changes_nothing(
        self, client, submitted, worker
    ):
        jobs = [{"id": "j0", "index": 0, "status": "failed",
                 "error": {"code": "render_failed", "message": "boom"}}]  # fmt: skip
        raw, headers = signed(generation_finished("up_1", jobs))
        assert post(client, raw, headers).status_code == 204
        assert post(client, raw, headers).status_code == 202  # stored, not applied yet
        run_inbox(worker)
        events = Task.objects.get(pk=submitted["taskId"]).last_event_seq
        assert post(client, raw, headers).status_code == 204
        run_inbox(worker)
        assert Task.objects.get(pk=submitted["taskId"]).last_event_seq == events
        assert WebhookDelivery.objects.filter(verdict="verified").count() == 1

    def test_an_unknown_task_is_202_then_applied_once_known(self, client, owner, uploaded, worker):
        jobs = [{"id": "j0", "index": 0, "status": "failed",
                 "error": {"code": "render_failed", "message": "boom"}}]  # fmt: skip
        raw, headers = signed(generation_finished("up_later", jobs))
        assert post(client, raw, headers).status_code == 202
        assert post(client, raw, headers).status_code == 202  # still waiting: a duplicate
        run_inbox(worker)  # nobody knows the task yet: it waits
        assert WebhookDelivery.objects.get(verdict="verified").outcome == "pending"

        task = owner.create_task(generation_body(uploaded["uploadId"], numberImages=1)).json()
        from jobs_app.progress import Submission, do_mark_submitted

        claim = follow(task["taskId"], worker)
        assert do_mark_submitted(claim, "up_later", {0: "j0"}) == Submission.RUNNING
        run_inbox(worker)
        assert WebhookDelivery.objects.get(verdict="verified").outcome == "applied"
        detail = owner.get(f"/api/tasks/{task['taskId']}").json()
        assert detail["status"] == "failed"
        assert post(client, raw, headers).status_code == 204

    def test_late_and_out_of_order_deliveries_never_move_state_back(
        self, client, submitted, worker
    ):
        done = [{"id": "j0", "index": 0, "status": "failed",
                 "error": {"code": "render_failed", "message": "boom"}},
                {"id": "j1", "index": 1, "status": "failed",
                 "error": {"code": "render_failed", "message": "boom"}}]  # fmt: skip
        raw, headers = signed(generation_finished("up_1", done, status="failed"))
        assert post(client, raw, headers).status_code == 204
        run_inbox(worker)
        assert Task.objects.get(pk=submitted["taskId"]).status == "failed"
        earlier = {
            "type": "generation_job_progress",
            "timestamp": "2026-11-26T02:59:00.000Z",
            "data": {"id": "up_1", "status": "running",
                     "jobs": [{"id": "j0", "index": 0, "status": "started"}]},
        }  # fmt: skip
        raw, headers = signed(earlier)
        response = post(client, raw, headers)
        assert response.status_code == 204
        run_inbox(a_worker("anyone"))  # a finished task's deliveries: any worker may apply them
        assert WebhookDelivery.objects.get(webhook_id=headers["webhook-id"]).outcome == "no_change"
        task = Task.objects.get(pk=submitted["taskId"])
        assert task.status == "failed"
        assert set(task.jobs.values_list("status", flat=True)) == {"failed"}


def test_the_admin_reapplies_a_stored_delivery(admin_client, submitted, worker):
    jobs = [{"id": "j0", "index": 0, "status": "failed",
             "error": {"code": "render_failed", "message": "boom"}}]  # fmt: skip
    raw, headers = signed(generation_finished("up_1", jobs))
    delivery = WebhookDelivery.objects.create(
        webhook_id=headers["webhook-id"], headers=headers, body=raw.decode(),
        verdict="verified", outcome="failed", event_type="generation_task_finished",
        upstream_task_id="up_1",
    )  # fmt: skip
    response = admin_client.post(
        "/admin/jobs_app/webhookdelivery/",
        {"action": "reapply_deliveries", "_selected_action": [delivery.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert "Queued 1 delivery(ies) for the workers to re-apply" in response.content.decode()
    run_inbox(worker)
    delivery.refresh_from_db()
    assert delivery.outcome == "applied"
    assert Job.objects.get(task_id=submitted["taskId"], index=0).status == "failed"


def test_jobs_cancelled_upstream_by_someone_else_end_the_task(client, submitted, worker):
    jobs = [{"id": f"j{n}", "index": n, "status": "cancelled"} for n in range(2)]
    raw, headers = signed(generation_finished("up_1", jobs, status="cancelled"))
    assert post(client, raw, headers).status_code == 204
    run_inbox(worker)
    task = Task.objects.get(pk=submitted["taskId"])
    assert task.status == "failed"
    assert task.error_code == "upstream_cancelled"
