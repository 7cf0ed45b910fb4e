"""With REDIS_URL set, the channel layer is channels-redis on the real Redis server."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from django.test import Client

from photobooth.settings import redis_channel_layer
from tests.conftest import image_bytes
from tests.live import daphne, migrate, server_env

pytestmark = pytest.mark.redis
REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def redis_layer(settings):
    from channels.layers import channel_layers

    settings.CHANNEL_LAYERS = {
        "default": redis_channel_layer(REDIS_URL, f"test-{uuid.uuid4().hex[:8]}")
    }
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@contextmanager
def two_servers(tmp_path) -> Iterator[tuple[str, str, dict[str, str], str]]:
    """Run two daphne processes sharing a database and Redis; yield their URLs, a bearer
    header of one session and an upload of it."""
    # Web processes only: with REDIS_URL set the built-in mockup API is never mounted, and no
    # worker runs here, so nothing calls this address.
    env = server_env(tmp_path, REDIS_URL=REDIS_URL, MOCKUP_API_URL="http://127.0.0.1:9/mockup-api")
    migrate(env)
    with daphne(env) as first, daphne(env) as second:
        token = httpx.post(f"{first}/api/sessions").json()["token"]
        auth = {"Authorization": f"Bearer {token}"}
        upload_id = httpx.post(
            f"{second}/api/uploads",
            files={"image": ("a.jpg", image_bytes(), "image/jpeg")},
            headers=auth,
        ).json()["uploadId"]
        yield first, second, auth, upload_id


@pytest.mark.django_db
def test_ws_health_round_trips_through_redis(redis_layer):
    body = Client().get("/ws-health").json()
    assert body["status"] == "ok"
    assert body["channelLayer"] == "RedisChannelLayer"


def test_a_long_poll_on_one_process_is_woken_by_a_task_created_on_another(tmp_path):
    """Two daphne processes share the database and Redis: they behave as one."""
    with two_servers(tmp_path) as (first, second, auth, upload_id):
        cursor = httpx.get(f"{first}/api/events", headers=auth).json()["cursor"]
        result: dict = {}

        def wait_on_first() -> None:
            started = time.monotonic()
            params = {"after": cursor, "wait": 20, "clientAppId": "two-procs"}
            response = httpx.get(f"{first}/api/events", params=params, headers=auth, timeout=30)
            result.update(body=response.json(), seconds=time.monotonic() - started)

        waiter = threading.Thread(target=wait_on_first)
        waiter.start()
        time.sleep(0.5)
        body = {"clientAppId": "two-procs", "kind": "enhancement", "uploadId": upload_id}
        assert httpx.post(f"{second}/api/tasks", json=body, headers=auth).status_code == 202
        waiter.join(25)
        assert [e["type"] for e in result["body"]["events"]] == ["queued"]
        assert result["seconds"] < 20  # woken through Redis, not by the end of the wait


def test_an_event_published_on_one_process_reaches_sse_and_websocket_clients_on_another(
    tmp_path,
):
    import asyncio
    import json

    import websockets

    from tests.live import SSEReader

    with two_servers(tmp_path) as (first, second, auth, upload_id):
        ws_url = first.replace("http://", "ws://") + "/ws/progress/?clientAppId=fanout"
        ready, received = threading.Event(), []

        async def follow() -> None:
            async with websockets.connect(ws_url, additional_headers=auth) as socket:
                received.append(json.loads(await socket.recv()))
                ready.set()
                received.append(json.loads(await asyncio.wait_for(socket.recv(), 10)))

        thread = threading.Thread(target=lambda: asyncio.run(follow()))
        thread.start()
        with httpx.stream(
            "GET", f"{first}/progress/client?clientAppId=fanout", headers=auth, timeout=30
        ) as response:
            events = SSEReader(response)
            assert events.event()["type"] == "connected"
            assert ready.wait(10)
            body = {"clientAppId": "fanout", "kind": "enhancement", "uploadId": upload_id}
            created = httpx.post(f"{second}/api/tasks", json=body, headers=auth).json()
            sse_event = events.event()
        thread.join(15)
        assert (sse_event["type"], sse_event["taskId"]) == ("queued", created["taskId"])
        assert received[1]["id"] == sse_event["id"]


@pytest.mark.django_db(transaction=True)
async def test_an_idle_consumer_outlives_the_redis_clients_default_socket_timeout(owner, settings):
    """redis-py 8 times reads out after 5 s, as long as channels-redis blocks waiting for a
    message: without our socket_timeout, an idle consumer crashed (channels_redis#422)."""
    import asyncio

    from channels.layers import channel_layers

    from tests.streams import create_task, publish, ws

    prefix = f"test-{uuid.uuid4().hex[:8]}"
    settings.CHANNEL_LAYERS = {"default": redis_channel_layer(REDIS_URL, prefix)}
    channel_layers.backends.clear()
    task = await create_task(owner, "idle")
    socket = ws("/ws/progress/?clientAppId=idle", owner)
    assert (await socket.connect())[0]
    assert (await socket.receive_json_from())["type"] == "connected"
    await asyncio.sleep(6.5)  # past redis-py's 5 s default read timeout, idle
    [cursor] = await publish(task)
    assert (await socket.receive_json_from(timeout=5))["id"] == cursor
    await socket.disconnect()
    channel_layers.backends.clear()
