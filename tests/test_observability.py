"""/api/sse/stats and /metrics."""

from __future__ import annotations

import re

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from tests.streams import SSEClient, ws

pytestmark = pytest.mark.django_db(transaction=True)


async def test_stats_count_open_streams_by_transport_and_scope(owner, admin_user):
    sse = SSEClient("/progress/session", owner)
    await sse.open()
    socket = ws("/ws/progress/?clientAppId=a", owner)
    await socket.connect()
    await socket.receive_json_from()
    client = AsyncClient()
    await sync_to_async(client.force_login)(admin_user)
    stats = (await client.get("/api/sse/stats")).json()
    assert stats["connections"]["total"] == 2
    assert (stats["connections"]["sse"], stats["connections"]["ws"]) == (1, 1)
    assert stats["connections"]["byScope"] == {"client": 1, "session": 1, "task": 0, "multiplex": 0}
    assert stats["sessions"] == 1
    await socket.disconnect()
    await sse.close()
    stats = (await client.get("/api/sse/stats")).json()
    assert stats["connections"]["total"] == 0


async def test_stats_answer_the_stats_token_and_refuse_everyone_else(owner, settings):
    settings.STATS_TOKEN = "s3cret-stats"
    response = await AsyncClient().get(
        "/api/sse/stats", headers={"Authorization": "Bearer s3cret-stats"}
    )
    assert response.status_code == 200
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {owner.token}"},
    ):
        response = await AsyncClient().get("/api/sse/stats", headers=headers)
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "forbidden"


async def test_metrics_are_prometheus_text_with_the_stream_counters(owner):
    socket = ws("/ws/progress/?clientAppId=a", owner)
    await socket.connect()
    await socket.receive_json_from()
    await socket.disconnect()
    response = await AsyncClient().get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    for name in (
        "photobooth_stream_connections_opened_total",
        "photobooth_events_published_total",
        "photobooth_events_delivered_total",
        "photobooth_stream_replays_total",
        "photobooth_stream_resets_total",
        "photobooth_stream_slow_consumer_closes_total",
        "photobooth_stream_gaps_repaired_total",
    ):
        assert name in text
    # Every series carries this process's `process` label (docs/operations.md "Metrics").
    labels = r'\{process="[^"]+",scope="client",transport="ws"\}'
    assert re.search("photobooth_stream_connections_opened_total" + labels, text)
