"""The SSE streams: /progress/client, /progress/session, /progress/<taskId>, /api/sse/stream."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from django.test import Client

from jobs_app.events import format_cursor
from tests.streams import SSEClient, cancel, create_task, publish

pytestmark = pytest.mark.django_db(transaction=True)


@database_sync_to_async
def browser_session() -> tuple[tuple[bytes, bytes], str]:
    """Start a session as a browser does; return its cookie header and the session id."""
    client = Client()
    session_id = client.post("/api/sessions").json()["sessionId"]
    return (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()), session_id


async def opened(path: str, booth=None, headers=None) -> SSEClient:
    client = SSEClient(path, booth, headers)
    status, _, body = await client.open()
    assert status == 200, body
    return client


class TestFormat:
    async def test_it_sends_the_sse_headers_retry_and_a_connected_event_with_an_id(self, owner):
        client = SSEClient("/progress/client?clientAppId=booth-1", owner)
        status, headers, _ = await client.open()
        assert status == 200
        assert headers["content-type"].startswith("text/event-stream")
        assert headers["cache-control"] == "no-cache"
        assert headers["x-accel-buffering"] == "no"
        assert await client.frame() == {"retry": "3000"}
        connected = await client.event()
        assert connected["type"] == "connected"
        assert connected["_sse"] == {"id": connected["id"]}  # unnamed: no event: line
        assert connected["scope"] == {"kind": "client", "id": "booth-1"}
        assert connected["clientAppId"] == "booth-1"
        await client.close()

    async def test_events_are_unnamed_with_their_cursor_as_id(self, owner):
        client = await opened("/progress/client?clientAppId=booth-1", owner)
        await client.event()
        task = await create_task(owner, "booth-1")
        queued = await client.event()
        assert queued["type"] == "queued" and queued["taskId"] == str(task.pk)
        assert queued["_sse"] == {"id": queued["id"]}
        await client.close()

    async def test_it_sends_heartbeat_comments(self, owner, settings):
        settings.STREAM_HEARTBEAT_SECONDS = 0.2
        client = await opened("/progress/session", owner)
        await client.event()
        assert await client.frame() == {":": "heartbeat"}
        await client.close()

    async def test_it_ends_cleanly_after_its_lifetime(self, owner, settings):
        settings.STREAM_MAX_SECONDS = 0.5
        client = await opened("/progress/session", owner)
        await client.event()
        await client.until_end(timeout=3)
        assert client.ended


class TestResume:
    async def test_last_event_id_replays_what_came_after(self, owner):
        task = await create_task(owner, "a")
        cursors = await publish(task, count=3)
        client = await opened("/progress/client?clientAppId=a", owner,
                              [(b"last-event-id", cursors[0].encode())])  # fmt: skip
        connected = await client.event()
        assert connected["id"] == cursors[0]
        assert [(await client.event())["id"] for _ in range(2)] == cursors[1:]
        await client.close()

    async def test_the_header_wins_over_the_query_parameter(self, owner):
        task = await create_task(owner, "a")
        cursors = await publish(task, count=3)
        client = await opened(f"/progress/client?clientAppId=a&lastEventId={cursors[0]}", owner,
                              [(b"last-event-id", cursors[1].encode())])  # fmt: skip
        await client.event()
        assert (await client.event())["id"] == cursors[2]
        await client.close()

    async def test_an_unknown_cursor_gets_a_reset_with_an_id(self, owner):
        client = await opened("/progress/session?lastEventId=zzz-9", owner)
        connected, reset = await client.event(), await client.event()
        assert (connected["type"], reset["type"]) == ("connected", "reset")
        assert reset["_sse"]["id"] == reset["cursor"] == connected["id"]
        await client.close()


class TestTaskStream:
    async def test_it_replays_the_task_from_its_first_event_and_ends_after_the_last(self, owner):
        task = await create_task(owner, "a")
        await publish(task, count=2)
        client = await opened(f"/progress/{task.pk}", owner)
        assert (await client.event())["type"] == "connected"
        assert [(await client.event())["type"] for _ in range(3)] == [
            "queued", "progress", "progress",
        ]  # fmt: skip
        await publish(task, "completed", imageUrls=[], completedJobs=1, totalJobs=1)
        assert (await client.event())["type"] == "completed"
        await client.until_end()

    async def test_reopening_a_finished_task_past_its_end_is_204(self, owner):
        task = await create_task(owner, "a")
        last = await cancel(task)
        client = SSEClient(f"/progress/{task.pk}?lastEventId={last}", owner)
        status, _, body = await client.open()
        assert status == 204 and body == b""
        earlier = format_cursor(task.session, task.cursor_seq)
        client = await opened(f"/progress/{task.pk}?lastEventId={earlier}", owner)
        await client.event()
        assert [(await client.event())["type"] for _ in range(2)] == ["queued", "cancelled"]
        await client.until_end()


class TestAccess:
    @pytest.mark.parametrize(
        ("path", "status", "code"),
        [
            ("/progress/client?clientAppId=owners", 403, "client_app_forbidden"),
            ("/progress/client?clientAppId=-bad", 400, "invalid_client_app_id"),
            ("/progress/00000000-0000-0000-0000-000000000000", 404, "task_not_found"),
            ("/api/sse/stream?channels=nonsense", 400, "invalid_channels"),
        ],
    )
    async def test_it_refuses_with_the_error_format(self, owner, stranger, path, status, code):
        await create_task(owner, "owners")
        client = SSEClient(path, stranger)
        got_status, headers, body = await client.open()
        assert got_status == status
        assert headers["content-type"] == "application/json"
        assert code in body.decode()

    async def test_another_sessions_task_is_403_and_no_session_is_401(self, owner, stranger):
        task = await create_task(owner, "owners")
        assert (await SSEClient(f"/progress/{task.pk}", stranger).open())[0] == 403
        assert (await SSEClient("/progress/session").open())[0] == 401

    async def test_a_browser_opens_its_own_sessions_stream_with_the_session_cookie(self, owner):
        cookie, session_id = await browser_session()
        client = await opened("/progress/session", headers=[cookie])
        assert (await client.event())["sessionId"] == session_id
        await client.close()
        task = await create_task(owner, "owners")
        assert (await SSEClient(f"/progress/{task.pk}", headers=[cookie]).open())[0] == 403
        unknown = (b"cookie", b"sessionid=nosuchsessionkey")
        assert (await SSEClient("/progress/session", headers=[unknown]).open())[0] == 401

    async def test_the_stream_cap_is_429(self, owner, settings):
        settings.STREAM_MAX_PER_SESSION = 2
        first = await opened("/progress/session", owner)
        second = await opened("/progress/client?clientAppId=x", owner)
        status, headers, _ = await SSEClient("/progress/session", owner).open()
        assert status == 429 and headers["retry-after"]
        await first.close()
        await second.close()


class TestMultiplex:
    async def test_it_names_events_and_sends_a_shared_event_once(self, owner):
        task = await create_task(owner, "a")
        path = f"/api/sse/stream?channels=client:a,task:{task.pk},session"
        client = await opened(path, owner)
        connected = await client.event()
        assert connected["scope"]["kind"] == "multiplex"
        assert connected["_sse"]["event"] == "connected"
        cursors = await publish(task, count=2)
        first, second = await client.event(), await client.event()
        assert [first["id"], second["id"]] == cursors
        assert first["_sse"]["event"] == "progress"
        assert await client.nothing_more()
        await client.close()

    async def test_it_follows_tasks_of_other_clients_too(self, owner):
        mine = await create_task(owner, "a")
        elsewhere = await create_task(owner, "b")
        client = await opened(f"/api/sse/stream?channels=client:a,task:{elsewhere.pk}", owner)
        await client.event()
        await publish(elsewhere)
        await publish(mine)
        assert [(await client.event())["taskId"] for _ in range(2)] == [
            str(elsewhere.pk), str(mine.pk),
        ]  # fmt: skip
        await client.close()
