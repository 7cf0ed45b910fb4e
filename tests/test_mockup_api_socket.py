"""The built-in mockup API's event socket: challenge, auth, one connection per app id, faults."""

from __future__ import annotations

import pytest

from mockup_api.connections import registry
from photobooth.settings import redis_channel_layer

pytest_plugins = ["tests.mockup_fixtures"]


class TestHandshake:
    async def test_it_challenges_then_authenticates(self, mockup_api):
        socket = await mockup_api.open_socket("booth")
        challenge = await socket.receive()
        assert challenge["type"] == "challenge"
        assert len(challenge["nonce"]) >= 32
        assert await socket.authenticate(challenge) == {"type": "authenticated", "app_id": "booth"}
        assert registry.auth_count == 1

    async def test_every_connection_gets_a_fresh_nonce(self, mockup_api):
        first = await (await mockup_api.open_socket("booth")).receive()
        second = await (await mockup_api.open_socket("kiosk")).receive()
        assert first["nonce"] != second["nonce"]

    async def test_a_wrong_signature_gets_101_and_close_4001(self, mockup_api):
        socket = await mockup_api.open_socket("booth")
        challenge = await socket.receive()
        reply = await socket.authenticate(challenge, key="not-the-key")
        assert reply == {"type": "error", "code": 101, "message": "Invalid signature"}
        assert (await socket.receive())["close"] == 4001
        assert registry.connection_count("booth") == 0

    @pytest.mark.parametrize("signature", [None, 42, "", "zz" * 32, "é"])
    async def test_a_malformed_signature_is_a_wrong_one(self, mockup_api, signature):
        socket = await mockup_api.open_socket("booth")
        await socket.receive()
        await socket.send({"type": "auth", "signature": signature})
        assert (await socket.receive())["code"] == 101

    async def test_it_answers_ping_with_pong(self, mockup_api):
        socket = await mockup_api.socket("booth")
        await socket.send({"type": "ping"})
        assert await socket.receive() == {"type": "pong"}

    async def test_it_reports_bad_messages_and_stays_open(self, mockup_api):
        socket = await mockup_api.socket("booth")
        await socket.communicator.send_to(text_data="not json")
        assert (await socket.receive())["code"] == 100
        await socket.send({"type": "dance"})
        assert (await socket.receive())["code"] == 100
        await socket.send({"type": "ping"})
        assert await socket.receive() == {"type": "pong"}

    async def test_authenticating_twice_is_an_error(self, mockup_api):
        socket = await mockup_api.open_socket("booth")
        challenge = await socket.receive()
        await socket.authenticate(challenge)
        assert (await socket.authenticate(challenge))["code"] == 102

    @pytest.mark.parametrize("query", ["", "?app_id=", "?app_id=-bad", "?app_id=" + "a" * 81])
    async def test_a_missing_or_malformed_app_id_is_closed_with_4400(self, mockup_api, query):
        socket = await mockup_api.open_socket(query=query)
        assert (await socket.receive())["close"] == 4400


class TestOneConnectionPerApp:
    async def test_the_loser_of_a_nonce_race_gets_103_and_stays_open(self, mockup_api):
        first = await mockup_api.open_socket("booth")
        first_challenge = await first.receive()
        second = await mockup_api.open_socket("booth")
        second_challenge = await second.receive()  # supersedes the first nonce

        assert await first.authenticate(first_challenge) == {
            "type": "error",
            "code": 103,
            "message": "Invalid nonce",
        }
        assert (await second.authenticate(second_challenge))["type"] == "authenticated"
        await first.send({"type": "ping"})
        assert await first.receive() == {"type": "pong"}  # still open: it may reconnect
        assert registry.auth_count == 1

    async def test_a_new_authenticated_connection_closes_the_older_with_4015(self, mockup_api):
        older = await mockup_api.socket("booth")
        assert registry.connection_count("booth") == 1
        newer = await mockup_api.socket("booth")

        closed = await older.receive()
        assert closed == {"close": 4015, "reason": "Switching to new connection from app-id"}
        assert registry.connection_count("booth") == 1
        await newer.send({"type": "ping"})
        assert await newer.receive() == {"type": "pong"}

    async def test_an_unauthenticated_newcomer_does_not_displace_the_current_one(
        self, mockup_api, image_server
    ):
        current = await mockup_api.socket("booth")
        await (await mockup_api.open_socket("booth")).receive()  # challenged, never answers
        await mockup_api.create_generation(image_server.url("/photo.jpg"), number_images=1)
        messages = await current.receive_until(lambda m: m.get("type") == "taskCompleted")
        assert messages[-1]["status"] == "completed"

    async def test_the_registry_counts_live_sockets(self, mockup_api):
        booth = await mockup_api.socket("booth")
        await mockup_api.socket("kiosk")
        await mockup_api.open_socket("kiosk")
        assert registry.connection_count("booth") == 1
        assert registry.connection_count("kiosk") == 2
        assert registry.connections_total() == 3
        await booth.communicator.disconnect()
        assert registry.connection_count("booth") == 0
        assert registry.connections_total() == 2

    async def test_the_debug_endpoint_reports_the_sockets(self, mockup_api):
        await mockup_api.socket("booth")
        response = await mockup_api.get("/mockup-api/v2/debug/connections")
        assert response.status_code == 200
        assert response.json() == {"apps": {"booth": 1}, "total": 1, "auth_count": 1}
        anonymous = await mockup_api.anonymous.get("/mockup-api/v2/debug/connections")
        assert anonymous.status_code == 401


class TestSocketDrops:
    async def test_drop_rate_one_closes_the_socket_with_4011_instead_of_sending(
        self, mockup_api, settings
    ):
        socket = await mockup_api.socket("booth")
        settings.MOCKUP_API_SOCKET_DROP_RATE = 1.0
        await socket.send({"type": "ping"})
        assert await socket.receive() == {"close": 4011, "reason": None}
        assert registry.connection_count("booth") == 0

    async def test_messages_after_a_drop_are_dropped_until_a_new_connection(
        self, mockup_api, settings, image_server
    ):
        socket = await mockup_api.socket("booth")
        settings.MOCKUP_API_SOCKET_DROP_RATE = 1.0
        task = await mockup_api.create_generation(image_server.url("/photo.jpg"), number_images=1)
        assert (await socket.receive())["close"] == 4011
        settings.MOCKUP_API_SOCKET_DROP_RATE = 0.0
        await socket.communicator.disconnect()
        await mockup_api.socket("booth")
        assert registry.connection_count("booth") == 1
        # The client reconciles over REST; the task ran on regardless.
        assert (await mockup_api.wait_for_task(task["id"]))["status"] == "completed"


class TestWithoutTheChannelLayer:
    async def test_a_socket_session_works_while_the_channel_layer_is_unreachable(
        self, mockup_api, settings, image_server
    ):
        # Port 1 refuses connections: this is Redis (our channel layer) being down.
        settings.CHANNEL_LAYERS = {"default": redis_channel_layer("redis://127.0.0.1:1/0")}
        socket = await mockup_api.socket("booth")
        await socket.send({"type": "ping"})
        assert await socket.receive() == {"type": "pong"}

        task = await mockup_api.create_generation(image_server.url("/photo.jpg"), number_images=1)
        messages = await socket.receive_until(lambda m: m.get("type") == "taskCompleted")
        completed = {"type": "taskCompleted", "taskId": task["id"], "status": "completed"}
        assert messages[-1] == completed
        assert any(m["type"] == "jobResult" for m in messages)
        await socket.communicator.disconnect()
        assert registry.connection_count("booth") == 0
