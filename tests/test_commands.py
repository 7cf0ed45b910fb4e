"""Management commands an operator runs."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from jobs_app.models import Event, Task
from tests.conftest import generation_body

pytestmark = pytest.mark.django_db


def test_drain_tasks_cancels_unfinished_tasks_with_reason_shutdown(owner, uploaded, capsys):
    queued = owner.create_task(generation_body(uploaded["uploadId"], "a")).json()
    running = owner.create_task(generation_body(uploaded["uploadId"], "b")).json()
    Task.objects.filter(pk=running["taskId"]).update(status="running")
    call_command("drain_tasks")
    assert "Cancelled 2 task(s)" in capsys.readouterr().out
    for task_id in (queued["taskId"], running["taskId"]):
        assert Task.objects.get(pk=task_id).cancel_reason == "shutdown"
        last = Event.objects.filter(task_id=task_id).order_by("-seq").first()
        assert (last.type, last.data["reason"]) == ("cancelled", "shutdown")


def test_drain_tasks_can_leave_submitted_tasks_alone(owner, uploaded):
    queued = owner.create_task(generation_body(uploaded["uploadId"], "a")).json()
    running = owner.create_task(generation_body(uploaded["uploadId"], "b")).json()
    Task.objects.filter(pk=running["taskId"]).update(status="running")
    call_command("drain_tasks", "--queued-only")
    assert Task.objects.get(pk=queued["taskId"]).status == "cancelled"
    assert Task.objects.get(pk=running["taskId"]).status == "running"
