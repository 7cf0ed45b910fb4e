"""With REDIS_URL, the stream registry lives in Redis: one cap and one set of stats for every
process. Each registry instance below stands for one daphne process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import websockets
from django.test import AsyncClient
from redis.asyncio import Redis

from jobs_app.stream_registry import OpenStream, StatsUnavailable, get_registry
from jobs_app.stream_registry_redis import RedisStreamRegistry
from jobs_app.streams import EventStream
from tests.live import daphne, migrate, server_env
from tests.streams import SSEClient, ws

pytestmark = pytest.mark.redis
REDIS_URL = "redis://127.0.0.1:6379/0"
NO_REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1: connections are refused
STATS_TOKEN = "stats-for-tests"

Make = Callable[..., RedisStreamRegistry]


def unique_prefix() -> str:
    return f"test-streams-{uuid.uuid4().hex[:10]}"


async def delete_keys(prefix: str) -> None:
    client = Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def opened(session: str = "s1", transport: str = "sse", scope: str = "session") -> OpenStream:
    return OpenStream(transport=transport, scope_kind=scope, session_id=session)


def new_id() -> str:
    return uuid.uuid4().hex


@pytest.fixture
async def make(settings) -> AsyncIterator[Make]:
    """Make registries as separate processes hold them, under one key prefix of this test."""
    settings.STREAM_MAX_PER_SESSION = 20
    prefix = unique_prefix()
    made: list[RedisStreamRegistry] = []

    def make_registry(url: str = REDIS_URL, **options) -> RedisStreamRegistry:
        made.append(RedisStreamRegistry(url, prefix=prefix, **options))
        return made[-1]

    yield make_registry
    for registry in made:
        await registry.aclose()
    await delete_keys(prefix)


@pytest.fixture
async def shared(settings) -> AsyncIterator[RedisStreamRegistry]:
    """Point the consumers at the Redis registry, under a key prefix of this test."""
    settings.REDIS_URL = REDIS_URL
    settings.STREAM_REGISTRY_PREFIX = unique_prefix()
    settings.STATS_TOKEN = STATS_TOKEN
    registry = get_registry()
    assert isinstance(registry, RedisStreamRegistry)
    yield registry
    await registry.aclose()
    await delete_keys(settings.STREAM_REGISTRY_PREFIX)


async def stats_of_the_deployment() -> dict:
    response = await AsyncClient().get(
        "/api/sse/stats", headers={"Authorization": f"Bearer {STATS_TOKEN}"}
    )
    assert response.status_code == 200, response.content
    return response.json()


# --- the registry ---------------------------------------------------------------------------


async def test_two_processes_racing_share_the_cap_exactly(make: Make):
    first, second = make(), make()
    attempts = [registry.register(new_id(), opened()) for registry in (first, second) * 15]
    results = await asyncio.gather(*attempts)
    assert results.count(True) == 20
    assert await first.register(new_id(), opened()) is False  # the 21st
    assert await second.register(new_id(), opened()) is False
    assert (await first.stats())["connections"]["total"] == 20


async def test_a_slot_freed_on_one_process_can_be_taken_on_another(make: Make):
    first, second = make(), make()
    ids = [new_id() for _ in range(20)]
    assert all(await asyncio.gather(*(first.register(i, opened()) for i in ids)))
    assert await second.register(new_id(), opened()) is False
    await first.unregister(ids[0])
    assert await second.register(new_id(), opened()) is True


async def test_the_cap_is_per_session(make: Make):
    first, second = make(), make()
    assert all(await asyncio.gather(*(first.register(new_id(), opened("s1")) for _ in range(20))))
    assert await second.register(new_id(), opened("s2")) is True


async def test_the_slots_of_a_dead_process_free_themselves_after_the_ttl(make: Make):
    # A process killed with -9 neither unregisters nor refreshes: here it never refreshes.
    dead = make(ttl_seconds=1, refresh_seconds=3600)
    alive = make(ttl_seconds=1, refresh_seconds=0.2)
    assert all(await asyncio.gather(*(dead.register(new_id(), opened()) for _ in range(20))))
    assert await alive.register(new_id(), opened()) is False
    await asyncio.sleep(1.2)
    assert (await alive.stats())["connections"]["total"] == 0
    assert all(await asyncio.gather(*(alive.register(new_id(), opened()) for _ in range(20))))


async def test_a_live_process_keeps_its_slots_past_the_ttl_by_refreshing_them(make: Make):
    holder = make(ttl_seconds=1, refresh_seconds=0.2)
    for _ in range(2):
        assert await holder.register(new_id(), opened())
    await asyncio.sleep(1.6)
    assert (await make().stats())["connections"]["total"] == 2


async def test_a_refresh_writes_back_what_redis_lost(make: Make):
    holder = make(refresh_seconds=0.2)
    assert await holder.register(new_id(), opened())
    await delete_keys(holder.prefix)  # a Redis restart without persistence
    await asyncio.sleep(0.5)
    assert (await holder.stats())["connections"]["total"] == 1


async def test_stats_count_every_process_by_transport_scope_and_session(make: Make):
    first, second = make(), make()
    client_sse = new_id()
    await first.register(client_sse, opened("s1", "sse", "client"))
    await first.register(new_id(), opened("s1", "ws", "session"))
    await second.register(new_id(), opened("s2", "ws", "task"))
    await second.register(new_id(), opened("s3", "sse", "multiplex"))
    assert await first.stats() == {
        "connections": {
            "total": 4,
            "sse": 2,
            "ws": 2,
            "byScope": {"client": 1, "session": 1, "task": 1, "multiplex": 1},
        },
        "sessions": 3,
    }
    await first.unregister(client_sse)
    stats = await second.stats()
    assert (stats["connections"]["total"], stats["connections"]["sse"]) == (3, 1)
    assert stats["connections"]["byScope"]["client"] == 0
    assert first.open_here() == {"ws": 1}


async def test_without_redis_the_cap_counts_this_process_and_warns_once(make: Make, caplog):
    registry = make(NO_REDIS_URL)
    with caplog.at_level(logging.WARNING, logger="jobs_app.stream_registry_redis"):
        ids = [new_id() for _ in range(20)]
        assert all(await asyncio.gather(*(registry.register(i, opened()) for i in ids)))
        assert await registry.register(new_id(), opened()) is False
        assert await registry.register(new_id(), opened("s2")) is True
        await registry.unregister(ids[0])  # does not raise
        assert await registry.register(new_id(), opened()) is True
    assert registry.degraded
    warnings = [r for r in caplog.records if "stream_registry_unavailable" in r.getMessage()]
    assert len(warnings) == 1
    with pytest.raises(StatsUnavailable):
        await registry.stats()


# --- through the consumers and views ---------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_the_websocket_cap_is_4029_and_a_closed_socket_frees_its_slot(
    owner, settings, shared
):
    settings.STREAM_MAX_PER_SESSION = 1
    first = ws("/ws/progress/?scope=session", owner)
    assert (await first.connect())[0]
    assert (await first.receive_json_from())["type"] == "connected"
    second = ws("/ws/progress/?scope=session", owner)
    await second.connect()
    assert (await second.receive_output())["code"] == 4029
    await first.disconnect()
    assert (await stats_of_the_deployment())["connections"]["total"] == 0
    third = ws("/ws/progress/?scope=session", owner)
    assert (await third.connect())[0]
    assert (await third.receive_json_from())["type"] == "connected"
    await third.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_the_sse_cap_is_429_and_the_stats_view_reads_redis(owner, settings, shared):
    settings.STREAM_MAX_PER_SESSION = 1
    sse = SSEClient("/progress/client?clientAppId=a", owner)
    assert (await sse.open())[0] == 200
    stats = await stats_of_the_deployment()
    assert stats["connections"]["total"] == 1
    assert stats["connections"]["byScope"]["client"] == 1
    status, headers, _ = await SSEClient("/progress/session", owner).open()
    assert status == 429 and headers["retry-after"]
    await sse.close()
    assert (await stats_of_the_deployment())["connections"]["total"] == 0


@pytest.mark.django_db(transaction=True)
async def test_a_stream_that_fails_while_opening_still_frees_its_slot(owner, shared, monkeypatch):
    async def broken_prepare(self, cursor):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(EventStream, "prepare", broken_prepare)
    with pytest.raises(RuntimeError):
        await SSEClient("/progress/session", owner).open()
    assert (await stats_of_the_deployment())["connections"]["total"] == 0
    assert shared.open_here() == {}


@pytest.mark.django_db(transaction=True)
async def test_the_open_streams_gauge_counts_this_process_with_a_process_label(
    owner, settings, shared
):
    settings.METRICS_PROCESS_NAME = "web-test"
    socket = ws("/ws/progress/?scope=session", owner)
    assert (await socket.connect())[0]
    await socket.receive_json_from()
    text = (await AsyncClient().get("/metrics")).content.decode()
    assert 'photobooth_stream_connections_open{process="web-test",transport="ws"} 1.0' in text
    assert 'photobooth_stream_connections_open{process="web-test",transport="sse"} 0.0' in text
    # Every series carries the label, counters and Python's own collectors too.
    samples = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert all('process="web-test"' in line for line in samples)
    await socket.disconnect()


async def test_stats_are_503_when_redis_does_not_answer(settings):
    settings.REDIS_URL = NO_REDIS_URL
    settings.STREAM_REGISTRY_PREFIX = unique_prefix()
    settings.STATS_TOKEN = STATS_TOKEN
    response = await AsyncClient().get(
        "/api/sse/stats", headers={"Authorization": f"Bearer {STATS_TOKEN}"}
    )
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "stats_unavailable"
    await get_registry().aclose()


# --- through real processes ------------------------------------------------------------------


def open_gauge(metrics_text: str, transport: str) -> tuple[str, float]:
    """Return the `process` label and value of the open-streams gauge of a transport."""
    pattern = (
        r'^photobooth_stream_connections_open\{process="([^"]+)",transport="'
        + transport
        + r'"\} (\S+)$'
    )
    match = re.search(pattern, metrics_text, re.MULTILINE)
    assert match, metrics_text
    return match.group(1), float(match.group(2))


async def test_two_daphne_processes_share_the_cap_and_the_stats(tmp_path):
    prefix = unique_prefix()
    env = server_env(
        tmp_path,
        REDIS_URL=REDIS_URL,
        MOCKUP_API_URL="http://127.0.0.1:9/mockup-api",  # nothing calls it: no tasks here
        TASK_QUEUE_AUTOSTART="0",
        STATS_TOKEN=STATS_TOKEN,
        STREAM_REGISTRY_PREFIX=prefix,
        STREAM_MAX_PER_SESSION="3",
    )
    migrate(env)
    stats_auth = {"Authorization": f"Bearer {STATS_TOKEN}"}
    try:
        with daphne(env) as first, daphne(env) as second:
            async with httpx.AsyncClient(timeout=10) as http:
                token = (await http.post(f"{first}/api/sessions")).json()["token"]
                auth = {"Authorization": f"Bearer {token}"}
                ws_url = second.replace("http://", "ws://") + "/ws/progress/?scope=session"
                async with contextlib.AsyncExitStack() as streams:
                    sse = [
                        await streams.enter_async_context(
                            http.stream("GET", f"{first}/progress/session", headers=auth)
                        )
                        for _ in range(2)
                    ]
                    assert [response.status_code for response in sse] == [200, 200]
                    socket = await streams.enter_async_context(
                        websockets.connect(ws_url, additional_headers=auth)
                    )
                    assert json.loads(await socket.recv())["type"] == "connected"

                    for base in (first, second):
                        stats = await http.get(f"{base}/api/sse/stats", headers=stats_auth)
                        assert stats.json() == {
                            "connections": {
                                "total": 3,
                                "sse": 2,
                                "ws": 1,
                                "byScope": {"client": 0, "session": 3, "task": 0, "multiplex": 0},
                            },
                            "sessions": 1,
                        }
                    # The cap (3) holds across processes, for SSE and WebSocket alike.
                    refused = await http.get(f"{second}/progress/session", headers=auth)
                    assert refused.status_code == 429
                    async with websockets.connect(
                        first.replace("http://", "ws://") + "/ws/progress/?scope=session",
                        additional_headers=auth,
                    ) as extra:
                        with pytest.raises(websockets.ConnectionClosed) as closed:
                            await extra.recv()
                        assert closed.value.rcvd.code == 4029

                    # /metrics: each process counts what it holds, under its own label.
                    first_metrics = (await http.get(f"{first}/metrics")).text
                    second_metrics = (await http.get(f"{second}/metrics")).text
                    first_process, first_sse = open_gauge(first_metrics, "sse")
                    second_process, second_ws = open_gauge(second_metrics, "ws")
                    assert (first_sse, second_ws) == (2, 1)
                    assert first_process != second_process

                    await sse[0].aclose()  # daphne sees the disconnect, the slot frees
                    for _ in range(50):
                        stats = await http.get(f"{second}/api/sse/stats", headers=stats_auth)
                        if stats.json()["connections"]["total"] == 2:
                            break
                        await asyncio.sleep(0.1)
                    assert stats.json()["connections"]["total"] == 2
                    async with http.stream(
                        "GET", f"{second}/progress/session", headers=auth
                    ) as reopened:
                        assert reopened.status_code == 200
    finally:
        await delete_keys(prefix)
