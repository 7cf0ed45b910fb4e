"""The WebSocket progress stream: /ws/progress/ (contract sections 3, 4 and 7)."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from django.test import Client

from jobs_app import metrics
from jobs_app.events import format_cursor
from jobs_app.models import Task
from tests.streams import cancel, create_task, publish, ws

pytestmark = pytest.mark.django_db(transaction=True)


@database_sync_to_async
def browser_session() -> tuple[tuple[bytes, bytes], str]:
    """Start a session as a browser does; return its cookie header and the session id."""
    client = Client()
    session_id = client.post("/api/sessions").json()["sessionId"]
    return (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()), session_id


async def connect(path: str, booth=None, headers=None):
    communicator = ws(path, booth, headers)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def closed_with(communicator) -> int:
    message = await communicator.receive_output(timeout=3)
    assert message["type"] == "websocket.close", message
    return message["code"]


async def receive(communicator, count: int) -> list[dict]:
    return [await communicator.receive_json_from(timeout=3) for _ in range(count)]


class TestConnecting:
    async def test_it_starts_with_connected_then_streams_the_clients_events(self, owner):
        socket = await connect("/ws/progress/?clientAppId=booth-1", owner)
        connected = await socket.receive_json_from()
        assert connected["type"] == "connected"
        assert connected["scope"] == {"kind": "client", "id": "booth-1"}
        assert connected["sessionId"] == owner.session_id
        assert connected["clientAppId"] == "booth-1" and connected["connectionId"]
        task = await create_task(owner, "booth-1")
        queued = await socket.receive_json_from()
        assert (queued["type"], queued["taskId"]) == ("queued", str(task.pk))
        await socket.disconnect()

    async def test_opening_a_stream_claims_an_unused_client_id(self, owner, stranger):
        socket = await connect("/ws/progress/?clientAppId=fresh-id", owner)
        await socket.receive_json_from()
        other = await connect("/ws/progress/?clientAppId=fresh-id", stranger)
        assert await closed_with(other) == 4003
        await socket.disconnect()

    async def test_it_follows_a_session_or_a_task(self, owner):
        task = await create_task(owner, "a")
        session_socket = await connect("/ws/progress/?scope=session", owner)
        assert (await session_socket.receive_json_from())["scope"]["kind"] == "session"
        task_socket = await connect(f"/ws/progress/?taskId={task.pk}", owner)
        connected, queued = await receive(task_socket, 2)
        assert connected["scope"] == {"kind": "task", "id": str(task.pk)}
        assert queued["type"] == "queued"  # a task stream replays its task from the start
        await publish(task)
        assert (await session_socket.receive_json_from())["type"] == "progress"
        assert (await task_socket.receive_json_from())["type"] == "progress"
        await session_socket.disconnect()
        await task_socket.disconnect()

    async def test_a_task_socket_closes_with_1000_after_the_terminal_event(self, owner):
        task = await create_task(owner)
        socket = await connect(f"/ws/progress/?taskId={task.pk}", owner)
        await receive(socket, 2)
        await cancel(task)
        assert (await socket.receive_json_from())["type"] == "cancelled"
        assert await closed_with(socket) == 1000


class TestRefusals:
    async def test_no_session_is_4001(self):
        socket = await connect(
            "/ws/progress/?clientAppId=x", headers=[(b"origin", b"http://localhost")]
        )
        assert await closed_with(socket) == 4001

    async def test_a_client_without_origin_needs_a_bearer_token(self):
        socket = await connect("/ws/progress/?clientAppId=x")
        assert await closed_with(socket) == 4001

    async def test_a_foreign_origin_is_4003(self, owner):
        socket = await connect("/ws/progress/?clientAppId=x", owner,
                               [(b"origin", b"https://evil.example")])  # fmt: skip
        assert await closed_with(socket) == 4003

    async def test_an_allowed_origin_is_accepted(self, owner):
        socket = await connect("/ws/progress/?clientAppId=x", owner,
                               [(b"origin", b"http://localhost:8000")])  # fmt: skip
        assert (await socket.receive_json_from())["type"] == "connected"
        await socket.disconnect()

    async def test_a_browser_follows_its_own_session_with_the_session_cookie(self, owner):
        cookie, session_id = await browser_session()
        origin = (b"origin", b"http://localhost:8000")
        socket = await connect("/ws/progress/?scope=session", headers=[origin, cookie])
        connected = await socket.receive_json_from()
        assert (connected["type"], connected["sessionId"]) == ("connected", session_id)
        await socket.disconnect()
        task = await create_task(owner, "owners")
        theirs = await connect(f"/ws/progress/?taskId={task.pk}", headers=[origin, cookie])
        assert await closed_with(theirs) == 4003
        unknown = (b"cookie", b"sessionid=nosuchsessionkey")
        assert await closed_with(await connect("/ws/progress/?scope=session",
                                               headers=[origin, unknown])) == 4001  # fmt: skip

    async def test_another_sessions_client_or_task_is_4003(self, owner, stranger):
        task = await create_task(owner, "owners")
        for path in ("/ws/progress/?clientAppId=owners", f"/ws/progress/?taskId={task.pk}"):
            socket = await connect(path, stranger)
            assert await closed_with(socket) == 4003

    async def test_a_malformed_client_id_is_4400(self, owner):
        socket = await connect("/ws/progress/?clientAppId=-bad", owner)
        assert await closed_with(socket) == 4400

    async def test_the_stream_cap_is_4029(self, owner, settings):
        settings.STREAM_MAX_PER_SESSION = 1
        first = await connect("/ws/progress/?scope=session", owner)
        await first.receive_json_from()
        second = await connect("/ws/progress/?scope=session", owner)
        assert await closed_with(second) == 4029
        await first.disconnect()
        third = await connect("/ws/progress/?scope=session", owner)
        assert (await third.receive_json_from())["type"] == "connected"
        await third.disconnect()


class TestActions:
    async def test_ping_gets_pong(self, owner):
        socket = await connect("/ws/progress/?clientAppId=a", owner)
        await socket.receive_json_from()
        await socket.send_json_to({"action": "ping"})
        assert await socket.receive_json_from() == {"type": "pong"}
        await socket.disconnect()

    @pytest.mark.parametrize("message", ["not json", "[1]", '{"action": "dance"}'])
    async def test_a_bad_message_closes_with_4400(self, owner, message):
        socket = await connect("/ws/progress/?clientAppId=a", owner)
        await socket.receive_json_from()
        await socket.send_to(text_data=message)
        assert await closed_with(socket) == 4400

    async def test_cancel_acks_and_streams_the_cancelled_event(self, owner):
        task = await create_task(owner, "a")
        socket = await connect("/ws/progress/?clientAppId=a", owner)
        await socket.receive_json_from()
        await socket.send_json_to({"action": "cancel", "taskId": str(task.pk)})
        messages = await receive(socket, 2)
        ack = next(m for m in messages if m["type"] == "ack")
        assert ack == {"type": "ack", "action": "cancel", "taskId": str(task.pk), "didCancel": True}
        assert any(m["type"] == "cancelled" for m in messages)
        await socket.disconnect()

    async def test_an_action_on_another_sessions_task_is_an_error_and_stays_open(
        self, owner, stranger
    ):
        task = await create_task(owner, "a")
        socket = await connect("/ws/progress/?clientAppId=b", stranger)
        await socket.receive_json_from()
        await socket.send_json_to({"action": "cancel", "taskId": str(task.pk)})
        error = await socket.receive_json_from()
        assert (error["type"], error["code"]) == ("error", "forbidden")
        await socket.send_json_to({"action": "ping"})
        assert await socket.receive_json_from() == {"type": "pong"}
        status = await database_sync_to_async(lambda: Task.objects.get(pk=task.pk).status)()
        assert status == "queued"
        await socket.disconnect()

    async def test_subscribe_adds_a_task_and_unsubscribe_removes_it(self, owner):
        other_clients_task = await create_task(owner, "other")
        socket = await connect("/ws/progress/?clientAppId=mine", owner)
        await socket.receive_json_from()
        await socket.send_json_to({"action": "subscribe", "taskId": str(other_clients_task.pk)})
        assert await socket.receive_json_from() == {
            "type": "ack", "action": "subscribe", "taskId": str(other_clients_task.pk)
        }  # fmt: skip
        await publish(other_clients_task)
        assert (await socket.receive_json_from())["type"] == "progress"
        await socket.send_json_to({"action": "unsubscribe", "taskId": str(other_clients_task.pk)})
        assert (await socket.receive_json_from())["action"] == "unsubscribe"
        await publish(other_clients_task)
        assert await socket.receive_nothing(timeout=0.3)
        await socket.disconnect()

    async def test_resume_replays_after_the_cursor_then_acks(self, owner):
        task = await create_task(owner, "a")
        cursors = await publish(task, count=3)
        socket = await connect("/ws/progress/?clientAppId=a", owner)
        await socket.receive_json_from()
        await socket.send_json_to({"action": "resume", "cursor": cursors[0]})
        replayed = await receive(socket, 3)
        assert [m["id"] for m in replayed[:2]] == cursors[1:]
        assert replayed[2] == {"type": "ack", "action": "resume", "cursor": cursors[0]}
        await socket.disconnect()


class TestResume:
    async def test_the_cursor_query_replays_everything_after_it_then_goes_live(self, owner):
        task = await create_task(owner, "a")
        cursors = await publish(task, count=4)
        socket = await connect(f"/ws/progress/?clientAppId=a&cursor={cursors[1]}", owner)
        connected, *replayed = await receive(socket, 3)
        assert connected["id"] == cursors[1]
        assert [m["id"] for m in replayed] == cursors[2:]
        [live] = await publish(task)
        assert (await socket.receive_json_from())["id"] == live
        assert await socket.receive_nothing(timeout=0.2)
        await socket.disconnect()

    async def test_the_tasks_cursor_gives_a_late_subscriber_everything(self, owner):
        task = await create_task(owner, "a")
        await publish(task, count=2)
        cursor = format_cursor(task.session, task.cursor_seq)
        socket = await connect(f"/ws/progress/?clientAppId=a&cursor={cursor}", owner)
        types = [m["type"] for m in await receive(socket, 4)]
        assert types == ["connected", "queued", "progress", "progress"]
        await socket.disconnect()

    @pytest.mark.parametrize("cursor", ["nonsense", "abcdef01-3"])
    async def test_an_unknown_cursor_gets_a_reset_right_after_connected(self, owner, cursor):
        task = await create_task(owner, "a")
        await publish(task)
        socket = await connect(f"/ws/progress/?clientAppId=a&cursor={cursor}", owner)
        connected, reset = await receive(socket, 2)
        assert reset["type"] == "reset"
        assert reset["cursor"] == reset["id"] == connected["id"]
        assert reset["clientAppId"] == "a"
        assert await socket.receive_nothing(timeout=0.2)
        await socket.disconnect()

    async def test_another_sessions_cursor_is_unknown(self, owner, stranger):
        theirs = await create_task(stranger, "theirs")
        [their_cursor] = await publish(theirs)
        socket = await connect(f"/ws/progress/?clientAppId=a&cursor={their_cursor}", owner)
        types = [m["type"] for m in await receive(socket, 2)]
        assert types == ["connected", "reset"]
        await socket.disconnect()


class TestLiveRepair:
    async def test_a_lost_message_is_refilled_from_the_log(self, owner, monkeypatch):
        task = await create_task(owner, "a")
        socket = await connect("/ws/progress/?clientAppId=a", owner)
        await socket.receive_json_from()
        from jobs_app import events

        announce = events.announce_event_rollback_unsafe
        monkeypatch.setattr(events, "announce_event_rollback_unsafe", lambda *args: None)
        [lost] = await publish(task)  # committed, but its message never sent
        monkeypatch.setattr(events, "announce_event_rollback_unsafe", announce)
        before = metrics.GAPS_REPAIRED.labels("ws")._value.get()
        [next_one] = await publish(task)
        assert [m["id"] for m in await receive(socket, 2)] == [lost, next_one]
        assert metrics.GAPS_REPAIRED.labels("ws")._value.get() == before + 1
        await socket.disconnect()

    async def test_a_lost_last_message_is_refilled_at_the_heartbeat(
        self, owner, monkeypatch, settings
    ):
        settings.STREAM_HEARTBEAT_SECONDS = 0.3
        task = await create_task(owner, "a")
        socket = await connect("/ws/progress/?clientAppId=a", owner)
        await socket.receive_json_from()
        from jobs_app import events

        monkeypatch.setattr(events, "announce_event_rollback_unsafe", lambda *args: None)
        [lost] = await publish(task)
        messages = await receive(socket, 2)
        assert messages[0] == {"type": "heartbeat"}
        assert messages[1]["id"] == lost
        await socket.disconnect()

    async def test_a_slow_consumer_is_closed_with_4008_and_resumes(
        self, owner, monkeypatch, settings
    ):
        settings.STREAM_QUEUE_MAX = 3
        task = await create_task(owner, "a")
        socket = await connect("/ws/progress/?clientAppId=a", owner)
        connected = await socket.receive_json_from()
        from jobs_app.streams import EventStream

        deliver = EventStream._deliver

        async def slow_network(self, message):
            await asyncio.sleep(0.2)
            await deliver(self, message)

        monkeypatch.setattr(EventStream, "_deliver", slow_network)
        cursors = await publish(task, count=10)
        received = []
        while True:
            message = await socket.receive_output(timeout=5)
            if message["type"] == "websocket.close":
                assert message["code"] == 4008
                break
            received.append(message)
        monkeypatch.setattr(EventStream, "_deliver", deliver)
        # Resuming from the last id it saw gives the client exactly the rest.
        import json

        seen = [json.loads(m["text"])["id"] for m in received]
        resume_from = seen[-1] if seen else connected["id"]
        again = await connect(f"/ws/progress/?clientAppId=a&cursor={resume_from}", owner)
        rest = [m["id"] for m in (await receive(again, 1 + len(cursors) - len(seen)))[1:]]
        assert seen + rest == cursors
        await again.disconnect()


class TestLivePath:
    async def test_an_in_order_message_reaches_the_socket_without_a_thread_or_a_query(
        self, owner, monkeypatch
    ):
        """Live delivery touches no sync thread: no database call, no executor, for any event
        that follows what the stream delivered."""
        import concurrent.futures

        from jobs_app import events

        task = await create_task(owner, "a")
        socket = await connect("/ws/progress/?clientAppId=a", owner)
        await socket.receive_json_from()
        announced = []
        monkeypatch.setattr(events, "announce", lambda *args: announced.append(args))
        cursors = await publish(task, count=3)  # stored; their messages held back here
        monkeypatch.undo()
        hops = []
        submit = concurrent.futures.ThreadPoolExecutor.submit

        def counting_submit(executor, *args, **kwargs):
            hops.append(args[0])
            return submit(executor, *args, **kwargs)

        monkeypatch.setattr(concurrent.futures.ThreadPoolExecutor, "submit", counting_submit)
        from jobs_app.announcer import send_event

        for _session, cursor, messages in announced:
            await send_event(cursor, messages)
        assert [m["id"] for m in await receive(socket, 3)] == cursors
        assert hops == []
        await socket.disconnect()


async def test_heartbeats_of_streams_opened_together_are_spread_over_the_interval(owner, settings):
    """A thousand streams opened at once must not all wake at once: the first beat comes at a
    random point of the second half of the interval, the next ones at most one interval on."""
    settings.STREAM_HEARTBEAT_SECONDS = 1
    loop = asyncio.get_running_loop()
    sockets, opened = [], []
    for _ in range(12):
        sockets.append(await connect("/ws/progress/?clientAppId=a", owner))
        await sockets[-1].receive_json_from()
        opened.append(loop.time())

    async def first_beat(n: int) -> float:
        assert await sockets[n].receive_json_from(timeout=3) == {"type": "heartbeat"}
        return loop.time() - opened[n]

    firsts = await asyncio.gather(*(first_beat(n) for n in range(12)))
    for socket in sockets:
        await socket.disconnect()
    assert min(firsts) >= 0.45  # none in the first half of the interval
    assert max(firsts) - min(firsts) > 0.1  # spread, not one thundering herd
