"""How a WebSocket stream ends: the close code of each reason, and a client that left first."""

from __future__ import annotations

import asyncio
import logging

import pytest
from autobahn.exception import Disconnected
from channels.testing import WebsocketCommunicator

from jobs_app.consumers import FINISH_CLOSE_CODES
from jobs_app.stream_access import WS_CLOSE_CODES
from jobs_app.stream_registry import get_registry
from jobs_app.streams import EventStream
from photobooth.asgi import application
from tests.streams import bearer, create_task

pytestmark = pytest.mark.django_db(transaction=True)


def closable_by_an_application(code: int) -> bool:
    """RFC 6455 7.4.2 as autobahn (daphne) enforces it: 1000, or 3000-4999."""
    return code == 1000 or 3000 <= code <= 4999


async def closed_with(communicator, timeout: float = 3) -> int:
    message = await communicator.receive_output(timeout=timeout)
    while message["type"] == "websocket.send":  # heartbeats before the close
        message = await communicator.receive_output(timeout=timeout)
    assert message["type"] == "websocket.close", message
    return message["code"]


async def open_streams() -> int:
    return (await get_registry().stats())["connections"]["total"]


class Departing:
    """Stand in for daphne once the client's close frame came in but the TCP connection is not
    down yet: autobahn then raises Disconnected on every send, and daphne has not yet told the
    application the client went away."""

    def __init__(self, app):
        self.app = app
        self.gone = False

    async def __call__(self, scope, receive, send):
        async def send_while_here(message):
            if self.gone:
                raise Disconnected("Attempt to send on a closed protocol")
            await send(message)

        return await self.app(scope, receive, send_while_here)


def test_every_close_code_the_streams_send_is_one_an_application_may_send():
    codes = {*FINISH_CLOSE_CODES.values(), *WS_CLOSE_CODES.values(), 4001, 4003, 4400}
    assert all(closable_by_an_application(code) for code in codes), codes


class TestAStreamThatFails:
    async def test_it_closes_with_4500_not_1001(self, owner, settings, monkeypatch, caplog):
        settings.STREAM_HEARTBEAT_SECONDS = 0.2

        async def broken_head(self):
            raise RuntimeError("the database is gone")

        monkeypatch.setattr(EventStream, "_scope_head", broken_head)
        socket = WebsocketCommunicator(application, "/ws/progress/?clientAppId=a", bearer(owner))
        assert (await socket.connect())[0]
        assert (await socket.receive_json_from())["type"] == "connected"
        with caplog.at_level(logging.DEBUG, logger="jobs_app"):
            assert await closed_with(socket) == 4500
        failed = [r for r in caplog.records if r.getMessage().startswith("stream_failed")]
        assert [r.levelno for r in failed] == [logging.ERROR]  # a real failure stays an error
        assert await open_streams() == 0
        await socket.disconnect()

    async def test_it_still_sends_its_close_frame_when_leaving_its_groups_fails(
        self, owner, settings, monkeypatch, caplog
    ):
        settings.STREAM_HEARTBEAT_SECONDS = 0.2

        async def broken_head(self):
            raise RuntimeError("the database is gone")

        async def broken_leave(self, groups):
            raise ConnectionError("redis is gone too")

        monkeypatch.setattr(EventStream, "_scope_head", broken_head)
        monkeypatch.setattr(EventStream, "leave", broken_leave)
        socket = WebsocketCommunicator(application, "/ws/progress/?clientAppId=a", bearer(owner))
        assert (await socket.connect())[0]
        assert (await socket.receive_json_from())["type"] == "connected"
        with caplog.at_level(logging.DEBUG, logger="jobs_app"):
            assert await closed_with(socket) == 4500  # not left open and silent
        await socket.disconnect()

    async def test_a_task_stream_still_closes_with_1000_after_its_terminal_event(self, owner):
        from tests.streams import cancel

        task = await create_task(owner)
        path = f"/ws/progress/?taskId={task.pk}"
        socket = WebsocketCommunicator(application, path, bearer(owner))
        assert (await socket.connect())[0]
        await socket.receive_json_from()  # connected
        await socket.receive_json_from()  # queued
        await cancel(task)
        assert (await socket.receive_json_from())["type"] == "cancelled"
        assert await closed_with(socket) == 1000


class TestAClientThatLeft:
    async def test_a_heartbeat_to_it_is_logged_quietly_and_frees_the_stream(
        self, owner, settings, caplog
    ):
        settings.STREAM_HEARTBEAT_SECONDS = 0.2
        app = Departing(application)
        socket = WebsocketCommunicator(app, "/ws/progress/?clientAppId=a", bearer(owner))
        assert (await socket.connect())[0]
        assert (await socket.receive_json_from())["type"] == "connected"
        assert await open_streams() == 1
        app.gone = True
        with caplog.at_level(logging.DEBUG, logger="jobs_app"):
            for _ in range(30):  # the first beat comes within 0.1-0.2 s
                await asyncio.sleep(0.05)
                if await open_streams() == 0:
                    break
        assert await open_streams() == 0  # its slot is free at once, not at the disconnect
        gone = [r for r in caplog.records if r.getMessage().startswith("stream_client_gone")]
        assert gone and all(r.levelno <= logging.INFO for r in gone)
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
        # No close frame for a client that is gone; the disconnect then ends the consumer.
        assert await socket.receive_nothing(timeout=0.3)
        await socket.disconnect()

    async def test_an_event_to_it_is_logged_quietly_and_frees_the_stream(self, owner, caplog):
        from tests.streams import publish

        task = await create_task(owner, "a")
        app = Departing(application)
        socket = WebsocketCommunicator(app, "/ws/progress/?clientAppId=a", bearer(owner))
        assert (await socket.connect())[0]
        await socket.receive_json_from()  # connected
        app.gone = True
        with caplog.at_level(logging.DEBUG, logger="jobs_app"):
            await publish(task)
            for _ in range(30):
                await asyncio.sleep(0.05)
                if await open_streams() == 0:
                    break
        assert await open_streams() == 0
        gone = [r for r in caplog.records if r.getMessage().startswith("stream_client_gone")]
        assert gone and all(r.levelno <= logging.INFO for r in gone)
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
        await socket.disconnect()
