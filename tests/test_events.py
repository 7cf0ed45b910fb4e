"""The event log and GET /api/events: cursors, exact reads under concurrent writers, long-poll."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from asgiref.sync import sync_to_async
from django.db import connection, transaction
from django.test import AsyncClient

from jobs_app.actions import TaskRequest, check_create_task
from jobs_app.events import publish_event, read_events
from jobs_app.models import Event, Task
from jobs_app.states import TaskKind
from sessions_app.models import BoothSession
from tests.conftest import generation_body, image_bytes


def bearer(booth) -> dict[str, str]:
    return {"Authorization": f"Bearer {booth.token}"}


def poll(booth, **params) -> dict:
    response = booth.get("/api/events", params)
    assert response.status_code == 200, response.content
    return response.json()


@pytest.mark.django_db
class TestPolling:
    def test_it_returns_every_event_with_the_contract_envelope(self, owner, uploaded):
        task = owner.create_task(generation_body(uploaded["uploadId"])).json()
        body = poll(owner)
        [event] = body["events"]
        assert event["type"] == "queued"
        assert event["id"] == body["cursor"]
        assert event["sessionId"] == owner.session_id
        assert event["clientAppId"] == "booth-1"
        assert event["taskId"] == task["taskId"] and event["jobId"] is None
        assert event["timestamp"].endswith("Z")
        assert (event["queuePosition"], event["etaSeconds"]) == (1, 20)

    def test_it_returns_only_events_after_the_cursor(self, owner, uploaded):
        owner.create_task(generation_body(uploaded["uploadId"]))
        cursor = poll(owner)["cursor"]
        assert poll(owner, after=cursor) == {"events": [], "cursor": cursor}
        owner.create_task(generation_body(uploaded["uploadId"]))  # replaces: cancelled + queued
        types = [e["type"] for e in poll(owner, after=cursor)["events"]]
        assert types == ["cancelled", "queued"]

    def test_it_filters_by_client_app_id(self, owner, uploaded):
        owner.create_task(generation_body(uploaded["uploadId"], "a"))
        owner.create_task(generation_body(uploaded["uploadId"], "b"))
        events = poll(owner, clientAppId="b")["events"]
        assert [e["clientAppId"] for e in events] == ["b"]

    def test_polling_with_an_unused_client_app_id_claims_nothing(self, owner, stranger):
        assert poll(owner, clientAppId="free")["events"] == []
        theirs = stranger.upload(image_bytes()).json()
        assert stranger.create_task(generation_body(theirs["uploadId"], "free")).status_code == 202

    @pytest.mark.parametrize("cursor", ["garbage", "abc-1", "-5", ""])
    def test_an_unknown_cursor_gets_a_reset(self, owner, uploaded, cursor):
        owner.create_task(generation_body(uploaded["uploadId"]))
        head = poll(owner)["cursor"]
        body = poll(owner, after=cursor) if cursor else {"events": [{"type": "reset"}]}
        [reset] = body["events"]
        assert reset["type"] == "reset"
        if cursor:
            assert reset["cursor"] == body["cursor"] == head == reset["id"]

    def test_a_cursor_from_the_future_gets_a_reset(self, owner, uploaded):
        owner.create_task(generation_body(uploaded["uploadId"]))
        head = poll(owner)["cursor"]
        prefix, seq = head.rsplit("-", 1)
        assert poll(owner, after=f"{prefix}-{int(seq) + 5}")["events"][0]["type"] == "reset"

    def test_another_sessions_cursor_counts_as_unknown(self, owner, stranger, uploaded):
        owner.create_task(generation_body(uploaded["uploadId"]))
        theirs = stranger.upload(image_bytes()).json()
        stranger.create_task(generation_body(theirs["uploadId"], "theirs"))
        their_cursor = poll(stranger)["cursor"]
        body = poll(owner, after=their_cursor)
        assert [e["type"] for e in body["events"]] == ["reset"]
        assert body["events"][0]["sessionId"] == owner.session_id

    def test_a_cursor_older_than_retention_gets_a_reset(self, owner, uploaded):
        owner.create_task(generation_body(uploaded["uploadId"]))
        start = poll(owner)["cursor"]
        owner.create_task(generation_body(uploaded["uploadId"]))
        session = BoothSession.objects.get(pk=owner.session_id)
        Event.objects.filter(session=session, seq__lte=2).delete()
        BoothSession.objects.filter(pk=session.pk).update(pruned_seq=2)
        assert poll(owner, after=start)["events"][0]["type"] == "reset"

    def test_a_stranger_cannot_poll_the_owners_client(self, owner, stranger, uploaded):
        owner.create_task(generation_body(uploaded["uploadId"], "mine"))
        response = stranger.get("/api/events", {"clientAppId": "mine"})
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "client_app_forbidden"
        assert poll(stranger)["events"] == []

    @pytest.mark.parametrize("wait", ["soon", "-1", "nan"])
    def test_it_rejects_a_bad_wait(self, owner, wait):
        response = owner.get("/api/events", {"wait": wait})
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "validation_error"

    def test_it_needs_a_session(self, client):
        response = client.get("/api/events")
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "no_session"

    def test_it_refuses_post(self, owner):
        response = owner.post("/api/events")
        assert response.status_code == 405
        assert response.json()["error"]["code"] == "method_not_allowed"

    def test_a_long_read_comes_in_pages_that_continue_exactly(self, owner, uploaded, settings):
        for n in range(7):
            owner.create_task(generation_body(uploaded["uploadId"], f"c{n}"))
        session = BoothSession.objects.get(pk=owner.session_id)
        first = read_events(session, None, limit=4)
        second = read_events(session, first.cursor, limit=4)
        assert [e.seq for e in first.events] == [1, 2, 3, 4]
        assert [e.seq for e in second.events] == [5, 6, 7]


@pytest.mark.django_db(transaction=True)
class TestLongPoll:
    async def test_it_returns_as_soon_as_an_event_arrives(self, owner, uploaded):
        cursor = (await sync_to_async(poll)(owner))["cursor"]
        started = time.monotonic()
        params = {"after": cursor, "wait": "3", "clientAppId": "booth-1"}
        waiting = asyncio.create_task(
            AsyncClient().get("/api/events", params, headers=bearer(owner))
        )
        await asyncio.sleep(0.3)
        assert not waiting.done()
        await asyncio.to_thread(owner.create_task, generation_body(uploaded["uploadId"]))
        response = await asyncio.wait_for(waiting, 10)
        elapsed = time.monotonic() - started
        assert response.status_code == 200
        assert [e["type"] for e in response.json()["events"]] == ["queued"]
        assert elapsed < 20  # woken by the event, not by the end of the wait

    async def test_it_answers_empty_when_the_wait_ends(self, owner):
        response = await AsyncClient().get("/api/events", {"wait": "0.5"}, headers=bearer(owner))
        assert response.status_code == 200
        assert response.json()["events"] == []


def _make_tasks(session: BoothSession, count: int) -> list[Task]:
    upload_owner = session
    from django.core.files.uploadedfile import SimpleUploadedFile

    from jobs_app.uploads import do_store_upload

    upload = do_store_upload(upload_owner, SimpleUploadedFile("p.jpg", image_bytes()))
    return [
        check_create_task(
            session,
            TaskRequest(client_app_id=f"w{n}", kind=TaskKind.ENHANCEMENT, upload_id=upload.pk),
        ).task
        for n in range(count)
    ]


@pytest.mark.django_db(transaction=True)
def test_reads_under_concurrent_writers_miss_nothing_and_repeat_nothing(owner):
    """Writers in several threads append to one session's log while a reader follows it."""
    session = BoothSession.objects.get(pk=owner.session_id)
    # SQLite serializes writers with a coarse sleeping backoff, so it gets a smaller load; the
    # commit-order race this guards against needs PostgreSQL's row locks to show up at all.
    writers_count, per_writer = (4, 30) if connection.vendor == "postgresql" else (2, 10)
    tasks = _make_tasks(session, writers_count)
    errors: list[BaseException] = []

    def write(task: Task) -> None:
        try:
            for n in range(per_writer):
                with transaction.atomic():
                    publish_event(task, "progress", jobIndex=0, progress=n / per_writer)
                    time.sleep(0.001)  # hold the transaction open a little: widen the race
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    writers = [threading.Thread(target=write, args=(task,)) for task in tasks]
    cursor = read_events(session, None).cursor
    seen: list[int] = []
    for thread in writers:
        thread.start()
    while any(thread.is_alive() for thread in writers):
        page = read_events(session, cursor)
        seen.extend(event.seq for event in page.events)
        cursor = page.cursor
    page = read_events(session, cursor)
    seen.extend(event.seq for event in page.events)
    assert not errors
    assert seen == sorted(seen) and len(seen) == len(set(seen)) == len(tasks) * per_writer
    progress = Event.objects.filter(session=session, type="progress").order_by("seq")
    assert seen == list(progress.values_list("seq", flat=True))


@pytest.mark.django_db
def test_publishing_takes_two_statements_and_names_each_groups_previous_event(
    owner, monkeypatch, django_capture_on_commit_callbacks
):
    """One UPDATE ... RETURNING for the head, one for both pointers and the INSERT (PostgreSQL).

    SQLite has no data-modifying CTE: the pointers and the row take four in-process
    statements there.
    """
    from django.test.utils import CaptureQueriesContext

    from jobs_app import events

    session = BoothSession.objects.get(pk=owner.session_id)
    first, second = _make_tasks(session, 2)  # clients w0 and w1, one `queued` event each
    announced: list[tuple[tuple[str, ...], dict]] = []
    monkeypatch.setattr(events, "announce", lambda session_id, cursor, send: announced.append(send))
    with django_capture_on_commit_callbacks(execute=True):
        with transaction.atomic(), CaptureQueriesContext(connection) as queries:
            event = publish_event(first, "progress", jobIndex=0, progress=0.5)
        with transaction.atomic():
            publish_event(second, "progress", jobIndex=0, progress=0.5)
    assert len(queries) == (2 if connection.vendor == "postgresql" else 5), queries.captured_queries
    session.refresh_from_db()
    assert (event.seq, session.event_seq) == (3, 4)
    (groups, one), (_, two) = announced
    assert groups == (f"session.{session.pk}", "client.w0", f"task.{first.pk}")
    assert list(one["prevs"].items()) == list(zip(groups, [2, 1, 1], strict=True))
    assert list(two["prevs"].values()) == [3, 2, 2]
    assert one["event"]["id"] == f"{session.cursor_prefix}-3"
    assert one["event"]["clientAppId"] == "w0"
    assert one["event"] == events.serialize_event(Event.objects.get(seq=3, session=session))
    first.refresh_from_db()
    assert first.last_event_seq == 3
    stored = Event.objects.get(pk=event.pk)
    assert [(f.attname, getattr(event, f.attname)) for f in Event._meta.concrete_fields] == [
        (f.attname, getattr(stored, f.attname)) for f in Event._meta.concrete_fields
    ]
    assert not event._state.adding


@pytest.mark.django_db
@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's server-side binding")
def test_the_statements_of_a_publish_send_their_values_apart_from_the_sql(owner):
    from django.test.utils import CaptureQueriesContext

    session = BoothSession.objects.get(pk=owner.session_id)
    [task] = _make_tasks(session, 1)
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        event = publish_event(task, "progress", jobIndex=0, progress=0.25)
    # Logged as Django logs any statement: here with the server's placeholders ($1, ...), the
    # values travelling apart, where client-side binding shows them quoted into the text.
    statements = [q["sql"] for q in queries.captured_queries]
    assert len(statements) == 2 and all("$1" in sql for sql in statements), statements
    assert not any(session.pk.hex in sql for sql in statements), statements
    stored = Event.objects.get(pk=event.pk)
    assert (stored.data, stored.created_at) == ({"jobIndex": 0, "progress": 0.25}, event.created_at)
