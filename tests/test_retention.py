"""Event retention: at least 24 h and 10,000 events per session; older cursors get a reset."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from jobs_app.models import Event
from jobs_app.retention import prune_events
from sessions_app.models import BoothSession
from tests.conftest import generation_body

pytestmark = pytest.mark.django_db


def make_events(owner, uploaded, count: int) -> list[str]:
    cursors = []
    for n in range(count):
        owner.create_task(generation_body(uploaded["uploadId"], f"c{n}"))
        cursors.append(owner.get("/api/events").json()["cursor"])
    return cursors


def age_events(hours: float) -> None:
    Event.objects.update(created_at=timezone.now() - timedelta(hours=hours))


def test_it_keeps_events_younger_than_the_retention_window(owner, uploaded, settings):
    settings.EVENT_RETENTION_MAX = 0
    make_events(owner, uploaded, 3)
    age_events(23)
    assert prune_events() == 0
    assert Event.objects.count() == 3


def test_it_keeps_the_newest_events_of_a_session_even_when_old(owner, uploaded, settings):
    settings.EVENT_RETENTION_MAX = 2
    cursors = make_events(owner, uploaded, 5)
    age_events(25)
    assert prune_events() == 3
    assert list(Event.objects.values_list("seq", flat=True).order_by("seq")) == [4, 5]
    # A cursor at the pruning boundary still replays exactly; an older one gets a reset.
    at_boundary = owner.get("/api/events", {"after": cursors[2]}).json()["events"]
    assert [e["id"] for e in at_boundary] == cursors[3:]
    assert owner.get("/api/events", {"after": cursors[1]}).json()["events"][0]["type"] == "reset"
    assert BoothSession.objects.get(pk=owner.session_id).pruned_seq == 3


def test_pruning_again_changes_nothing(owner, uploaded, settings):
    settings.EVENT_RETENTION_MAX = 1
    make_events(owner, uploaded, 3)
    age_events(48)
    assert prune_events() == 2
    assert prune_events() == 0


def test_the_command_reports_what_it_deleted(owner, uploaded, settings, capsys):
    settings.EVENT_RETENTION_MAX = 0
    make_events(owner, uploaded, 2)
    age_events(30)
    call_command("prune_events")
    assert "Deleted 2 event(s)" in capsys.readouterr().out


def test_housekeeping_prunes_events_and_week_old_webhook_deliveries(owner, uploaded, settings):
    from jobs_app.maintenance import housekeep
    from jobs_app.models import WebhookDelivery

    settings.EVENT_RETENTION_MAX = 0
    make_events(owner, uploaded, 2)
    age_events(30)
    old = WebhookDelivery.objects.create(webhook_id="old", verdict="verified", outcome="applied")
    recent = WebhookDelivery.objects.create(webhook_id="new", verdict="verified", outcome="applied")
    WebhookDelivery.objects.filter(pk=old.pk).update(received_at=timezone.now() - timedelta(days=8))
    WebhookDelivery.objects.filter(pk=recent.pk).update(
        received_at=timezone.now() - timedelta(days=4)  # deduplication lasts at least 3 days
    )
    assert housekeep() == (2, 1)
    assert list(WebhookDelivery.objects.values_list("webhook_id", flat=True)) == ["new"]
