"""Resume under concurrent writers: every event exactly once, in log order (hypothesis)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from django.db import connection, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs_app.events import format_cursor, publish_event
from jobs_app.models import Event
from tests.streams import create_task, ws

pytestmark = pytest.mark.django_db(transaction=True)

EVENTS_PER_WRITER = 12


def write_events(tasks, stop: threading.Event) -> None:
    """Publish progress events for several tasks from one thread (a worker process stand-in)."""
    try:
        for n in range(EVENTS_PER_WRITER):
            for task in tasks:
                with transaction.atomic():
                    publish_event(task, "progress", jobIndex=0, progress=n / EVENTS_PER_WRITER)
    finally:
        connection.close()
        stop.set()


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    transport=st.sampled_from(["ws", "sse"]),
    disconnect_after=st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=5),
)
async def test_reconnecting_at_random_points_misses_nothing_and_repeats_nothing(
    owner, transport, disconnect_after
):
    from tests.streams import SSEClient

    tasks = [await create_task(owner, "busy"), await create_task(owner, "busy")]
    cursor = format_cursor(tasks[0].session, tasks[0].cursor_seq)
    # Two writer threads on PostgreSQL (row locks); one on SQLite, whose writers serialize on
    # the database lock with a sleeping backoff that would only slow the test down.
    groups = [[tasks[0]], [tasks[1]]] if connection.vendor == "postgresql" else [tasks]
    threads = [
        threading.Thread(target=write_events, args=(group, threading.Event())) for group in groups
    ]
    for thread in threads:
        thread.start()

    seen: list[str] = []
    plan = list(disconnect_after)
    total = 2 + 2 * EVENTS_PER_WRITER  # two queued events, then the progress events
    while len(seen) < total:
        budget = plan.pop(0) if plan else total
        if transport == "ws":
            socket = ws(f"/ws/progress/?clientAppId=busy&cursor={cursor}", owner)
            await socket.connect()
            assert (await socket.receive_json_from(timeout=5))["type"] == "connected"
            for _ in range(min(budget, total - len(seen))):
                seen.append((await socket.receive_json_from(timeout=5))["id"])
            await socket.disconnect()
        else:
            stream = SSEClient(f"/progress/client?clientAppId=busy&lastEventId={cursor}", owner)
            await stream.open()
            assert (await stream.event(timeout=5))["type"] == "connected"
            for _ in range(min(budget, total - len(seen))):
                seen.append((await stream.event(timeout=5))["id"])
            await stream.close()
        if seen:
            cursor = seen[-1]
        await asyncio.sleep(0)
    for thread in threads:
        thread.join(10)

    log = await asyncio.to_thread(
        lambda: [
            format_cursor(tasks[0].session, seq)
            for seq in Event.objects.filter(task__in=tasks)
            .order_by("seq")
            .values_list("seq", flat=True)
        ]
    )
    assert seen == log
    assert len(set(seen)) == len(seen) == total
