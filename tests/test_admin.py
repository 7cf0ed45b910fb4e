"""The admin: task inspection (list, filters, search, jobs, timeline) and its actions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import Client
from django.urls import reverse

from jobs_app.actions import do_cancel_task
from jobs_app.models import Event, Job, Task, Upload, WebhookDelivery
from sessions_app.models import AccessToken, BoothSession, ClientApp
from tests.conftest import generation_body, image_bytes

pytestmark = pytest.mark.django_db

TASKS = reverse("admin:jobs_app_task_changelist")


def task_page(task_id: str) -> str:
    return reverse("admin:jobs_app_task_change", args=[task_id])


def listed(response) -> set[str]:
    """Return the ids of the rows a changelist response shows."""
    assert response.status_code == 200, response.content
    return {str(obj.pk) for obj in response.context["cl"].result_list}


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def complete_with_result(task_id: str, index: int) -> Job:
    """Store a small PNG as the result of one job of the task and mark the job completed."""
    name = default_storage.save(f"results/{task_id}-{index}.png", ContentFile(image_bytes("PNG")))
    Job.objects.filter(task_id=task_id, index=index).update(
        status="completed",
        progress=1.0,
        result_file=name,
        result_width=64,
        result_height=48,
        result_content_type="image/png",
        result_size=default_storage.size(name),
    )
    return Job.objects.get(task_id=task_id, index=index)


def run_action(client: Client, action: str, *ids: str, url: str = TASKS):
    return client.post(url, {"action": action, "_selected_action": list(ids)})


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """Hash the staff personas' passwords cheaply; these tests are not about logging in."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def create_task(owner, uploaded):
    """Return a factory of the owner's generation tasks (one client app each, so none replaces
    another)."""

    def create(client_app_id: str = "booth-1", **extra) -> str:
        body = generation_body(uploaded["uploadId"], client_app_id, **extra)
        response = owner.create_task(body)
        assert response.status_code == 202, response.content
        return response.json()["taskId"]

    return create


@pytest.fixture
def viewer(db) -> Client:
    """A staff member who may look at tasks but not act on them."""
    user = User.objects.create_user("viewer", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(codename__in=["view_task", "view_job", "view_event"])
    )
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def visitor(db) -> Client:
    """A signed-in user who is not staff."""
    client = Client()
    client.force_login(User.objects.create_user("booth-visitor"))
    return client


class TestTaskList:
    def test_it_shows_a_task_with_its_id_kind_and_status(self, admin_client, create_task):
        task_id = create_task()
        response = admin_client.get(TASKS)
        assert response.status_code == 200
        content = response.content.decode()
        assert task_id in content
        assert '<td class="field-kind">Generation</td>' in content
        assert '<td class="field-status">Queued</td>' in content
        assert '<td class="field-client_app nowrap">booth-1</td>' in content

    def test_it_shows_how_long_a_finished_task_ran(self, admin_client, create_task):
        task_id = create_task()
        started = Task.objects.get(pk=task_id).created_at
        Task.objects.filter(pk=task_id).update(
            status="completed", started_at=started, finished_at=started + timedelta(seconds=2.5)
        )
        content = admin_client.get(TASKS).content.decode()
        assert '<td class="field-duration_display">2.5 s</td>' in content

    def test_it_filters_by_status(self, admin_client, create_task):
        queued, cancelled = create_task("booth-1"), create_task("booth-2")
        do_cancel_task(Task.objects.get(pk=cancelled))
        assert listed(admin_client.get(TASKS, {"status__exact": "queued"})) == {queued}
        assert listed(admin_client.get(TASKS, {"status__exact": "cancelled"})) == {cancelled}

    def test_it_filters_by_kind(self, admin_client, owner, uploaded, create_task):
        generation = create_task()
        body = {"clientAppId": "booth-2", "kind": "enhancement", "uploadId": uploaded["uploadId"]}
        enhancement = owner.create_task(body).json()["taskId"]
        assert listed(admin_client.get(TASKS, {"kind__exact": "generation"})) == {generation}
        assert listed(admin_client.get(TASKS, {"kind__exact": "enhancement"})) == {enhancement}

    def test_it_filters_by_creation_date(self, admin_client, create_task):
        task_id = create_task()
        created = Task.objects.get(pk=task_id).created_at
        day = {"created_at__year": created.year, "created_at__month": created.month}
        assert listed(admin_client.get(TASKS, day)) == {task_id}
        assert listed(admin_client.get(TASKS, {"created_at__year": created.year - 1})) == set()

    def test_it_finds_a_task_by_its_id(self, admin_client, create_task):
        task_id, _other = create_task("booth-1"), create_task("booth-2")
        assert listed(admin_client.get(TASKS, {"q": task_id})) == {task_id}

    def test_it_finds_a_task_by_one_of_its_job_ids(self, admin_client, create_task):
        task_id, _other = create_task("booth-1"), create_task("booth-2")
        job_id = str(Job.objects.filter(task_id=task_id).values_list("pk", flat=True)[2])
        assert listed(admin_client.get(TASKS, {"q": job_id})) == {task_id}

    def test_it_finds_a_task_by_client_app_id(self, admin_client, create_task):
        task_id, _other = create_task("kiosk-7"), create_task("booth-2")
        assert listed(admin_client.get(TASKS, {"q": "kiosk-7"})) == {task_id}

    def test_it_finds_a_task_by_upstream_id(self, admin_client, create_task):
        task_id, _other = create_task("booth-1"), create_task("booth-2")
        Task.objects.filter(pk=task_id).update(upstream_id="up-123")
        assert listed(admin_client.get(TASKS, {"q": "up-123"})) == {task_id}

    def test_it_finds_a_task_by_the_upstream_id_of_a_job(self, admin_client, create_task):
        task_id, _other = create_task("booth-1"), create_task("booth-2")
        Job.objects.filter(task_id=task_id, index=1).update(upstream_id="upjob-9")
        assert listed(admin_client.get(TASKS, {"q": "upjob-9"})) == {task_id}

    def test_it_lists_a_task_once_when_several_of_its_jobs_match(self, admin_client, create_task):
        task_id = create_task()
        Job.objects.filter(task_id=task_id).update(upstream_id="up-shared")
        response = admin_client.get(TASKS, {"q": "up-shared"})
        assert [str(task.pk) for task in response.context["cl"].result_list] == [task_id]


class TestTaskPage:
    def test_it_shows_one_row_per_job(self, admin_client, create_task):
        task_id = create_task(numberImages=4)
        response = admin_client.get(task_page(task_id))
        assert response.status_code == 200
        formset = next(
            inline
            for inline in response.context["inline_admin_formsets"]
            if inline.opts.model is Job
        )
        assert [form.original.index for form in formset] == [0, 1, 2, 3]

    def test_it_shows_the_event_timeline(self, admin_client, create_task):
        task_id = create_task()
        response = admin_client.get(task_page(task_id))
        content = response.content.decode()
        assert "event timeline" in content.lower()
        assert ">queued<" in content
        assert "queuePosition=1" in content

    def test_it_shows_a_thumbnail_of_a_job_result(self, admin_client, create_task):
        task_id = create_task()
        job = complete_with_result(task_id, 0)
        content = admin_client.get(task_page(task_id)).content.decode()
        assert f'<img src="{job.result_file.url}" alt="result 0"' in content
        assert content.count("<img src=") == 1  # the pending jobs have no result yet

    def test_it_offers_no_editable_fields(self, admin_client, create_task):
        task_id = create_task()
        content = admin_client.get(task_page(task_id)).content.decode()
        assert 'name="status"' not in content
        assert 'name="params"' not in content
        assert 'name="_save"' not in content

    def test_it_refuses_a_post_that_would_change_the_status(self, admin_client, create_task):
        task_id = create_task()
        response = admin_client.post(task_page(task_id), {"status": "completed", "_save": "Save"})
        assert response.status_code == 403
        task = Task.objects.get(pk=task_id)
        assert task.status == "queued" and task.finished_at is None

    def test_it_sends_an_unknown_task_back_to_the_admin_index(self, admin_client):
        response = admin_client.get(task_page("00000000-0000-0000-0000-000000000000"))
        assert response.status_code == 302
        assert response["Location"] == reverse("admin:index")
        [message] = messages_of(response)
        assert "00000000-0000-0000-0000-000000000000" in message


class TestCancelAction:
    def test_it_cancels_a_queued_task_for_the_user(self, admin_client, create_task):
        task_id = create_task()
        response = run_action(admin_client, "cancel_tasks", task_id)
        assert response.status_code == 302
        task = Task.objects.get(pk=task_id)
        assert task.status == "cancelled" and task.cancel_reason == "user"
        assert set(task.jobs.values_list("status", flat=True)) == {"cancelled"}
        cancelled = Event.objects.get(task_id=task_id, type="cancelled")
        assert cancelled.data["reason"] == "user"
        assert messages_of(response) == ["Cancelled 1 of 1 task(s)."]

    def test_it_leaves_a_finished_task_and_its_timeline_alone(self, admin_client, create_task):
        task_id = create_task()
        do_cancel_task(Task.objects.get(pk=task_id))
        response = run_action(admin_client, "cancel_tasks", task_id)
        assert Event.objects.filter(task_id=task_id, type="cancelled").count() == 1
        assert messages_of(response) == ["Cancelled 0 of 1 task(s)."]

    def test_it_is_not_offered_to_staff_who_may_only_view_tasks(self, viewer, create_task):
        task_id = create_task()
        response = viewer.get(TASKS)
        assert response.status_code == 200
        assert "cancel_tasks" not in response.content.decode()
        run_action(viewer, "cancel_tasks", task_id)
        assert Task.objects.get(pk=task_id).status == "queued"


class TestRetryAction:
    def test_it_queues_a_new_task_with_the_params_of_a_cancelled_one(
        self, admin_client, create_task
    ):
        task_id = create_task(numberImages=3, seed=7)
        do_cancel_task(Task.objects.get(pk=task_id))
        original = Task.objects.get(pk=task_id)
        response = run_action(admin_client, "retry_tasks", task_id)
        retried = Task.objects.exclude(pk=task_id).get()
        assert retried.status == "queued"
        assert (retried.kind, retried.params) == (original.kind, original.params)
        assert (retried.client_app_id, retried.upload_id) == (
            original.client_app_id,
            original.upload_id,
        )
        assert retried.jobs.count() == 3
        assert Event.objects.filter(task=retried, type="queued").exists()
        assert Task.objects.get(pk=task_id).status == "cancelled"  # state never goes back
        assert messages_of(response) == ["Queued 1 new task(s); skipped 0 not failed or cancelled."]

    def test_it_skips_a_task_that_is_still_queued(self, admin_client, create_task):
        task_id = create_task()
        response = run_action(admin_client, "retry_tasks", task_id)
        assert Task.objects.get().status == "queued"  # and no other task
        [message] = messages_of(response)
        assert "skipped 1" in message

    def test_it_reports_a_task_it_cannot_retry_and_goes_on(self, admin_client, owner, create_task):
        source = complete_with_result(create_task("booth-1"), 0)
        body = {"clientAppId": "booth-2", "kind": "enhancement", "sourceJobId": str(source.pk)}
        enhancement = owner.create_task(body).json()["taskId"]
        generation = create_task("booth-3")
        for task in Task.objects.filter(pk__in=[enhancement, generation]):
            do_cancel_task(task)
        Job.objects.filter(pk=source.pk).update(result_file="")  # nothing left to enhance
        response = run_action(admin_client, "retry_tasks", enhancement, generation)
        assert messages_of(response) == [
            f"Task {enhancement} not retried (source_not_ready): "
            "The source job has no result to enhance yet.",
            "Queued 1 new task(s); skipped 0 not failed or cancelled.",
        ]
        assert Task.objects.filter(client_app__client_app_id="booth-2").count() == 1
        assert Task.objects.filter(client_app__client_app_id="booth-3").count() == 2


class TestOtherPages:
    @pytest.fixture
    def rows(self, owner, uploaded, create_task) -> dict[str, str]:
        """Return the primary key of one row of every registered model, by URL name prefix."""
        task_id = create_task()
        delivery = WebhookDelivery.objects.create(
            webhook_id="msg_1",
            headers={"webhook-id": "msg_1"},
            body='{"type":"generation_task_finished"}',
            verdict="verified",
            outcome="pending",
            event_type="generation_task_finished",
            upstream_task_id="up-123",
        )
        return {
            "jobs_app_task": task_id,
            "jobs_app_upload": uploaded["uploadId"],
            "jobs_app_event": str(Event.objects.get(task_id=task_id).pk),
            "jobs_app_webhookdelivery": str(delivery.pk),
            "sessions_app_clientapp": str(ClientApp.objects.get().pk),
            "sessions_app_boothsession": owner.session_id,
        }

    @pytest.mark.parametrize(
        "model",
        [
            "jobs_app_task",
            "jobs_app_upload",
            "jobs_app_event",
            "jobs_app_webhookdelivery",
            "sessions_app_clientapp",
            "sessions_app_boothsession",
        ],
    )
    def test_it_renders_the_list_and_the_page_of_each_model(self, admin_client, rows, model):
        response = admin_client.get(reverse(f"admin:{model}_changelist"))
        assert response.status_code == 200
        assert len(response.context["cl"].result_list) == 1
        response = admin_client.get(reverse(f"admin:{model}_change", args=[rows[model]]))
        assert response.status_code == 200

    def test_it_renders_the_index(self, admin_client):
        assert admin_client.get(reverse("admin:index")).status_code == 200

    def test_it_shows_an_event_as_clients_receive_it(self, admin_client, create_task):
        task_id = create_task()
        event = Event.objects.get(task_id=task_id)
        content = admin_client.get(reverse("admin:jobs_app_event_change", args=[event.pk]))
        text = content.content.decode()
        assert f"&quot;taskId&quot;: &quot;{task_id}&quot;" in text
        assert "&quot;type&quot;: &quot;queued&quot;" in text

    @pytest.mark.parametrize(
        "model", [Task, Upload, Event, WebhookDelivery, ClientApp, BoothSession]
    )
    def test_it_offers_no_add_or_delete(self, admin_client, model):
        opts = model._meta
        add = admin_client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_add"))
        assert add.status_code == 403
        changelist = admin_client.get(
            reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        )
        assert "delete_selected" not in changelist.content.decode()

    def test_it_refuses_to_delete_a_session_and_its_event_log(self, admin_client, owner):
        url = reverse("admin:sessions_app_boothsession_delete", args=[owner.session_id])
        assert admin_client.post(url, {"post": "yes"}).status_code == 403
        assert BoothSession.objects.filter(pk=owner.session_id).exists()

    def test_it_does_not_save_a_session_over_its_log_head(self, admin_client, owner):
        url = reverse("admin:sessions_app_boothsession_change", args=[owner.session_id])
        assert admin_client.post(url, {"_save": "Save"}).status_code == 403

    def test_it_revokes_every_token_of_a_selected_session(self, admin_client, owner, stranger):
        url = reverse("admin:sessions_app_boothsession_changelist")
        response = run_action(admin_client, "revoke_tokens", owner.session_id, url=url)
        assert messages_of(response) == ["Revoked 1 token(s)."]
        assert owner.get("/api/tasks").status_code == 401
        assert stranger.get("/api/tasks").status_code == 200
        assert AccessToken.objects.filter(revoked_at__isnull=False).count() == 1


class TestAccess:
    @pytest.mark.parametrize(
        "url",
        [
            reverse("admin:index"),
            TASKS,
            reverse("admin:jobs_app_webhookdelivery_changelist"),
            reverse("admin:sessions_app_boothsession_changelist"),
        ],
    )
    def test_it_sends_a_user_who_is_not_staff_to_the_login_page(self, visitor, url):
        response = visitor.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))

    def test_it_sends_an_anonymous_visitor_to_the_login_page(self, client):
        response = client.get(TASKS)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))

    def test_it_does_not_let_a_non_staff_user_run_an_action(self, visitor, create_task):
        task_id = create_task()
        response = run_action(visitor, "cancel_tasks", task_id)
        assert response.status_code == 302
        assert Task.objects.get(pk=task_id).status == "queued"


class TestWorkers:
    def test_it_lists_live_and_dead_workers_with_the_claims_they_hold(
        self, admin_client, create_task
    ):
        from django.db.models.functions import Now

        from jobs_app.claims import claim_next
        from jobs_app.models import Worker
        from tests.worker_helpers import a_worker

        living, dead = a_worker("host-a:11"), a_worker("host-b:22")
        create_task()
        claim_next(living.id)
        Worker.objects.filter(pk=dead.id).update(lease_expires_at=Now())
        page = admin_client.get(reverse("admin:jobs_app_worker_changelist")).content.decode()
        assert "host-a:11" in page and "host-b:22" in page
        assert page.count('alt="True"') == 1 and page.count('alt="False"') == 1
        assert '<td class="field-claims">1</td>' in page

    def test_a_tasks_page_shows_which_worker_holds_it(self, admin_client, create_task):
        from jobs_app.claims import claim_next
        from tests.worker_helpers import a_worker

        worker = a_worker("host-c:33")
        task = create_task()
        claim_next(worker.id)
        page = admin_client.get(task_page(task)).content.decode()
        assert "host-c:33" in page
