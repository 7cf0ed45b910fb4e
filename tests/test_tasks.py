"""POST/GET /api/tasks, GET /api/tasks/<id>, POST /api/tasks/<id>/cancel."""

from __future__ import annotations

from datetime import timedelta

import pytest

from jobs_app.models import Event, Job, Task
from tests.conftest import generation_body, image_bytes

pytestmark = pytest.mark.django_db


def events_of(task_id: str) -> list[tuple[str, dict]]:
    return [(e.type, e.data) for e in Event.objects.filter(task_id=task_id).order_by("seq")]


class TestCreate:
    def test_it_queues_a_generation_with_one_job_per_image(self, owner, uploaded):
        response = owner.create_task(generation_body(uploaded["uploadId"], numberImages=16))
        assert response.status_code == 202, response.content
        task = response.json()
        assert task["kind"] == "generation" and task["status"] == "queued"
        assert task["clientAppId"] == "booth-1"
        assert [job["index"] for job in task["jobs"]] == list(range(16))
        assert {job["status"] for job in task["jobs"]} == {"pending"}
        assert task["queuePosition"] == 1 and task["etaSeconds"] > 0
        assert task["upstreamId"] is None and task["startedAt"] is None
        assert task["createdAt"].endswith("Z")
        assert task["input"] == {
            "style": "pop-art",
            "numberImages": 16,
            "seed": None,
            "uploadId": uploaded["uploadId"],
            "sourceJobId": None,
        }
        assert task["links"] == {
            "self": f"/api/tasks/{task['taskId']}",
            "events": f"/progress/{task['taskId']}",
            "cancel": f"/api/tasks/{task['taskId']}/cancel",
        }

    def test_it_writes_a_queued_event_with_position_and_eta(self, owner, uploaded):
        task = owner.create_task(generation_body(uploaded["uploadId"])).json()
        assert events_of(task["taskId"]) == [("queued", {"queuePosition": 1, "etaSeconds": 20})]

    def test_it_gives_the_cursor_just_before_the_first_event(self, owner, uploaded):
        first = owner.create_task(generation_body(uploaded["uploadId"], "a")).json()
        second = owner.create_task(generation_body(uploaded["uploadId"], "b")).json()
        events = owner.get("/api/events", {"after": second["cursor"]}).json()["events"]
        assert [(e["type"], e["taskId"]) for e in events] == [("queued", second["taskId"])]
        assert first["cursor"] != second["cursor"]

    def test_it_queues_behind_earlier_work_and_ahead_of_mockups(self, owner, uploaded):
        mockup = owner.create_task(
            {"clientAppId": "shop", "kind": "mockup", "uploadId": uploaded["uploadId"],
             "productId": 71, "variantIds": [7100, 7101]}
        ).json()  # fmt: skip
        first = owner.create_task(generation_body(uploaded["uploadId"], "a")).json()
        second = owner.create_task(generation_body(uploaded["uploadId"], "b")).json()
        assert mockup["queuePosition"] == 1
        assert (first["queuePosition"], second["queuePosition"]) == (1, 2)
        assert [job["index"] for job in mockup["jobs"]] == [0, 1]

    def test_it_creates_an_enhancement_of_an_upload(self, owner, uploaded):
        body = {"clientAppId": "booth-1", "kind": "enhancement", "uploadId": uploaded["uploadId"]}
        response = owner.create_task(body)
        assert response.status_code == 202
        assert len(response.json()["jobs"]) == 1

    def test_it_refuses_to_enhance_a_job_without_result(self, owner, uploaded):
        task = owner.create_task(generation_body(uploaded["uploadId"])).json()
        body = {"clientAppId": "booth-1", "kind": "enhancement",
                "sourceJobId": task["jobs"][0]["jobId"]}  # fmt: skip
        response = owner.create_task(body)
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "source_not_ready"

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            ({"numberImages": 0}, "numberImages"),
            ({"numberImages": 17}, "numberImages"),
            ({"style": "no-such-style"}, "style"),
            ({"kind": "painting"}, "kind"),
            ({"seed": -1}, "seed"),
            ({"productId": 71}, "productId"),
        ],
    )
    def test_it_rejects_an_invalid_generation_body(self, owner, uploaded, change, field):
        response = owner.create_task({**generation_body(uploaded["uploadId"]), **change})
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "validation_error"
        assert field in error["details"]["fields"]
        assert Task.objects.count() == 0

    @pytest.mark.parametrize("client_app_id", ["", "-starts-with-dash", "a" * 81, "has space", 7])
    def test_it_rejects_a_malformed_client_app_id(self, owner, uploaded, client_app_id):
        body = {**generation_body(uploaded["uploadId"]), "clientAppId": client_app_id}
        response = owner.create_task(body)
        assert response.status_code == 400
        assert "clientAppId" in response.json()["error"]["details"]["fields"]

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            ({"productId": 999}, "productId"),
            ({"variantIds": [1900]}, "variantIds"),
            ({"variantIds": []}, "variantIds"),
            ({"variantIds": [7100, 7100]}, "variantIds"),
            ({"placement": "sleeve"}, "placement"),
        ],
    )
    def test_it_rejects_an_invalid_mockup_body(self, owner, uploaded, change, field):
        body = {"clientAppId": "shop", "kind": "mockup", "uploadId": uploaded["uploadId"],
                "productId": 71, "variantIds": [7100], **change}  # fmt: skip
        response = owner.create_task(body)
        assert response.status_code == 400
        assert field in response.json()["error"]["details"]["fields"]

    def test_it_rejects_malformed_json(self, owner):
        response = owner.client.post(
            "/api/tasks",
            "{not json",
            content_type="application/json",
            headers={"Authorization": f"Bearer {owner.token}"},
        )
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "malformed_request"

    def test_it_answers_404_for_an_unknown_upload(self, owner):
        response = owner.create_task(generation_body("00000000-0000-0000-0000-000000000000"))
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "upload_not_found"


class TestReplaceRule:
    def test_a_new_generation_cancels_the_clients_unfinished_generation(self, owner, uploaded):
        first = owner.create_task(generation_body(uploaded["uploadId"])).json()
        second = owner.create_task(generation_body(uploaded["uploadId"])).json()
        old = owner.get(f"/api/tasks/{first['taskId']}").json()
        assert old["status"] == "cancelled" and old["cancelReason"] == "replaced"
        assert {job["status"] for job in old["jobs"]} == {"cancelled"}
        assert events_of(first["taskId"])[-1] == (
            "cancelled",
            {"reason": "replaced", "completedJobs": 0, "totalJobs": 4},
        )
        assert owner.get(f"/api/tasks/{second['taskId']}").json()["status"] == "queued"

    def test_it_leaves_other_clients_and_other_kinds_alone(self, owner, uploaded):
        other_client = owner.create_task(generation_body(uploaded["uploadId"], "kiosk")).json()
        enhancement = owner.create_task(
            {"clientAppId": "booth-1", "kind": "enhancement", "uploadId": uploaded["uploadId"]}
        ).json()
        owner.create_task(generation_body(uploaded["uploadId"], "booth-1"))
        owner.create_task(generation_body(uploaded["uploadId"], "booth-1"))
        for task in (other_client, enhancement):
            assert owner.get(f"/api/tasks/{task['taskId']}").json()["status"] == "queued"


class TestIdempotency:
    def test_the_same_key_and_body_return_the_same_task_with_200(self, owner, uploaded):
        body = generation_body(uploaded["uploadId"])
        first = owner.create_task(body, headers={"Idempotency-Key": "k-1"})
        again = owner.create_task(body, headers={"Idempotency-Key": "k-1"})
        assert (first.status_code, again.status_code) == (202, 200)
        assert again.json()["taskId"] == first.json()["taskId"]
        assert Task.objects.count() == 1
        # The repeat did not replace (cancel) the task it returns.
        assert again.json()["status"] == "queued"

    def test_the_same_key_with_another_body_is_a_conflict(self, owner, uploaded):
        body = generation_body(uploaded["uploadId"])
        owner.create_task(body, headers={"Idempotency-Key": "k-1"})
        response = owner.create_task(
            {**body, "numberImages": 2}, headers={"Idempotency-Key": "k-1"}
        )
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "idempotency_key_reused"
        assert Task.objects.count() == 1

    def test_keys_are_per_session(self, owner, stranger, uploaded):
        theirs = stranger.upload(image_bytes())
        body_mine = generation_body(uploaded["uploadId"])
        body_theirs = generation_body(theirs.json()["uploadId"], "their-booth")
        assert owner.create_task(body_mine, headers={"Idempotency-Key": "k"}).status_code == 202
        assert (
            stranger.create_task(body_theirs, headers={"Idempotency-Key": "k"}).status_code == 202
        )

    def test_an_overlong_key_is_refused(self, owner, uploaded):
        body = generation_body(uploaded["uploadId"])
        response = owner.create_task(body, headers={"Idempotency-Key": "k" * 256})
        assert response.status_code == 400
        assert "Idempotency-Key" in response.json()["error"]["details"]["fields"]
        assert Task.objects.count() == 0

    def test_a_key_older_than_a_day_starts_a_new_task(self, owner, uploaded):
        body = generation_body(uploaded["uploadId"])
        first = owner.create_task(body, headers={"Idempotency-Key": "k-1"}).json()
        Task.objects.update(created_at=Task.objects.get().created_at - timedelta(hours=25))
        again = owner.create_task(body, headers={"Idempotency-Key": "k-1"})
        assert again.status_code == 202
        assert again.json()["taskId"] != first["taskId"]


class TestReadAndList:
    def test_it_lists_the_sessions_tasks_newest_first_with_pages(self, owner, uploaded):
        ids = [
            owner.create_task(generation_body(uploaded["uploadId"], f"c{n}")).json()["taskId"]
            for n in range(5)
        ]
        page = owner.get("/api/tasks", {"limit": 3}).json()
        assert [t["taskId"] for t in page["results"]] == ids[::-1][:3]
        assert page["next"].startswith("http")
        rest = owner.get(page["next"]).json()
        assert [t["taskId"] for t in rest["results"]] == ids[::-1][3:]
        assert rest["next"] is None

    def test_it_filters_by_client_app_id(self, owner, uploaded):
        owner.create_task(generation_body(uploaded["uploadId"], "a"))
        b = owner.create_task(generation_body(uploaded["uploadId"], "b")).json()
        results = owner.get("/api/tasks", {"clientAppId": "b"}).json()["results"]
        assert [t["taskId"] for t in results] == [b["taskId"]]

    def test_listing_with_an_unused_client_app_id_claims_nothing(self, owner, stranger, uploaded):
        assert owner.get("/api/tasks", {"clientAppId": "free-id"}).json()["results"] == []
        theirs = stranger.upload(image_bytes()).json()
        response = stranger.create_task(generation_body(theirs["uploadId"], "free-id"))
        assert response.status_code == 202

    def test_it_answers_404_for_an_unknown_or_malformed_task_id(self, owner):
        response = owner.get("/api/tasks/00000000-0000-0000-0000-000000000000")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "task_not_found"
        assert owner.get("/api/tasks/not-a-uuid").json()["error"]["code"] == "not_found"


class TestCancel:
    def test_it_cancels_a_queued_task_and_is_idempotent(self, owner, uploaded):
        task = owner.create_task(generation_body(uploaded["uploadId"])).json()
        first = owner.post(f"/api/tasks/{task['taskId']}/cancel")
        again = owner.post(f"/api/tasks/{task['taskId']}/cancel")
        assert first.status_code == again.status_code == 202
        assert first.json() == {
            "taskId": task["taskId"],
            "status": "cancelled",
            "didCancel": True,
            "completedJobs": 0,
            "totalJobs": 4,
        }
        assert again.json()["didCancel"] is False
        assert [t for t, _ in events_of(task["taskId"])] == ["queued", "cancelled"]
        detail = owner.get(f"/api/tasks/{task['taskId']}").json()
        assert detail["finishedAt"] is not None and detail["queuePosition"] is None

    def test_it_counts_completed_jobs_when_cancelling_a_running_task(self, owner, uploaded):
        task = owner.create_task(generation_body(uploaded["uploadId"])).json()
        Task.objects.filter(pk=task["taskId"]).update(status="running")
        Job.objects.filter(task_id=task["taskId"], index=0).update(status="completed")
        body = owner.post(f"/api/tasks/{task['taskId']}/cancel").json()
        assert (body["didCancel"], body["completedJobs"], body["totalJobs"]) == (True, 1, 4)
        statuses = Job.objects.filter(task_id=task["taskId"]).order_by("index")
        assert [j.status for j in statuses] == ["completed", "cancelled", "cancelled", "cancelled"]

    def test_it_refuses_get_on_cancel(self, owner, uploaded):
        task = owner.create_task(generation_body(uploaded["uploadId"])).json()
        response = owner.get(f"/api/tasks/{task['taskId']}/cancel")
        assert response.status_code == 405
        assert response.json()["error"]["code"] == "method_not_allowed"


class TestOwnership:
    def test_a_stranger_cannot_see_or_cancel_the_owners_task(self, owner, stranger, uploaded):
        task = owner.create_task(generation_body(uploaded["uploadId"])).json()
        assert stranger.get(f"/api/tasks/{task['taskId']}").status_code == 404
        assert stranger.post(f"/api/tasks/{task['taskId']}/cancel").status_code == 404
        assert stranger.get("/api/tasks").json()["results"] == []
        assert Task.objects.get(pk=task["taskId"]).status == "queued"

    def test_a_stranger_cannot_use_the_owners_client_app_id(self, owner, stranger, uploaded):
        owner.create_task(generation_body(uploaded["uploadId"], "owners-booth"))
        theirs = stranger.upload(image_bytes()).json()
        response = stranger.create_task(generation_body(theirs["uploadId"], "owners-booth"))
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "client_app_forbidden"
        response = stranger.get("/api/tasks", {"clientAppId": "owners-booth"})
        assert response.status_code == 403

    def test_a_stranger_cannot_use_the_owners_upload_or_job(self, owner, stranger, uploaded):
        response = stranger.create_task(generation_body(uploaded["uploadId"], "their-booth"))
        assert response.status_code == 404
        task = owner.create_task(generation_body(uploaded["uploadId"])).json()
        body = {"clientAppId": "their-booth", "kind": "enhancement",
                "sourceJobId": task["jobs"][0]["jobId"]}  # fmt: skip
        assert stranger.create_task(body).json()["error"]["code"] == "job_not_found"
