"""One channel-layer receiver per process for every open stream (jobs_app/stream_hub.py)."""

from __future__ import annotations

import asyncio
import random

import pytest
from channels.layers import get_channel_layer

from jobs_app.stream_hub import StreamHub, get_hub
from tests.streams import SSEClient, create_task, publish, ws

pytestmark = pytest.mark.django_db(transaction=True)


async def open_ws(path: str, booth):
    socket = ws(path, booth)
    assert (await socket.connect())[0]
    assert (await socket.receive_json_from(timeout=5))["type"] == "connected"
    return socket


async def wait_until(condition, seconds: float = 5) -> None:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


async def test_many_streams_share_one_membership_per_group_and_each_gets_every_event_once(owner):
    task = await create_task(owner, "booth-1")
    # 20 streams: as many as a session may open.
    sockets = [await open_ws("/ws/progress/?clientAppId=booth-1", owner) for _ in range(15)]
    streams = [SSEClient("/progress/client?clientAppId=booth-1", owner) for _ in range(5)]
    for stream in streams:
        assert (await stream.open())[0] == 200
        assert (await stream.event(timeout=5))["type"] == "connected"
    layer = get_channel_layer()
    hub = get_hub()
    assert list(layer.groups["client.booth-1"]) == [hub.channel]  # not one per stream
    assert len(hub.members["client.booth-1"]) == 20

    cursors = await publish(task, count=5)
    for socket in sockets:
        assert [(await socket.receive_json_from(timeout=5))["id"] for _ in cursors] == cursors
        assert await socket.receive_nothing(timeout=0.05)
    for stream in streams:
        assert [(await stream.event(timeout=5))["id"] for _ in cursors] == cursors
    for socket in sockets:
        await socket.disconnect()
    for stream in streams:
        await stream.close()


async def test_the_last_stream_to_leave_takes_the_process_out_of_the_group_and_stops_receiving(
    owner,
):
    await create_task(owner, "booth-1")
    first = await open_ws("/ws/progress/?clientAppId=booth-1", owner)
    second = await open_ws("/ws/progress/?clientAppId=booth-1", owner)
    layer, hub = get_channel_layer(), get_hub()
    receiver = hub.receiver
    await first.disconnect()
    await wait_until(lambda: len(hub.members.get("client.booth-1", ())) == 1)
    assert list(layer.groups["client.booth-1"]) == [hub.channel]
    await second.disconnect()
    await wait_until(lambda: hub.channel is None)
    assert "client.booth-1" not in layer.groups and hub.members == {}
    await asyncio.sleep(0)
    assert receiver.done() and hub.receiver is None

    # The next stream starts receiving again, on a new channel.
    task = await create_task(owner, "booth-1")
    again = await open_ws("/ws/progress/?clientAppId=booth-1", owner)
    [cursor] = await publish(task)
    assert (await again.receive_json_from(timeout=5))["id"] == cursor
    await again.disconnect()


async def test_an_idle_stream_holds_no_task_but_its_own(owner):
    await create_task(owner, "booth-1")
    before = len(asyncio.all_tasks())
    sockets = [await open_ws("/ws/progress/?clientAppId=booth-1", owner) for _ in range(10)]
    await asyncio.sleep(0.05)
    # Each communicator runs its application in one task; the hub adds one receiver in all.
    # (Channels' own loop would add two per consumer, channels-redis' receive one more.)
    assert len(asyncio.all_tasks()) - before == 10 + 1
    for socket in sockets:
        await socket.disconnect()


async def test_a_stream_that_cannot_keep_up_is_closed_and_the_others_on_the_hub_keep_receiving(
    owner, monkeypatch, settings
):
    from jobs_app.streams import EventStream

    settings.STREAM_QUEUE_MAX = 3
    task = await create_task(owner, "a")
    fast = await open_ws("/ws/progress/?clientAppId=a", owner)
    slow = SSEClient("/progress/client?clientAppId=a", owner)
    await slow.open()
    assert (await slow.event(timeout=5))["type"] == "connected"
    deliver = EventStream._deliver

    async def slow_network_for_sse(self, message):
        if self.transport == "sse":
            await asyncio.sleep(0.2)
        await deliver(self, message)

    monkeypatch.setattr(EventStream, "_deliver", slow_network_for_sse)
    cursors = await publish(task, count=10)
    assert [(await fast.receive_json_from(timeout=5))["id"] for _ in cursors] == cursors
    await slow.until_end(timeout=5)  # the slow one's response ended ("overflow")
    await slow.communicator.wait(timeout=3)  # and its consumer stopped
    assert await fast.receive_nothing(timeout=0.1)
    await fast.disconnect()


class FakeStream:
    def __init__(self) -> None:
        self.offered: list[dict] = []

    def offer(self, message: dict) -> None:
        self.offered.append(message)


async def test_racing_joins_and_leaves_keep_the_membership_exactly_when_a_stream_follows(
    monkeypatch,
):
    """Each join returns only once the process is a member; the last leave ends membership."""
    layer = get_channel_layer()
    add, discard = layer.group_add, layer.group_discard

    async def slow_add(group, channel):
        await asyncio.sleep(random.uniform(0, 0.01))
        await add(group, channel)

    async def slow_discard(group, channel):
        await asyncio.sleep(random.uniform(0, 0.01))
        await discard(group, channel)

    monkeypatch.setattr(layer, "group_add", slow_add)
    monkeypatch.setattr(layer, "group_discard", slow_discard)
    hub = StreamHub(layer)
    rng = random.Random(7)
    groups = ["g1", "g2", "g3"]
    following: dict[FakeStream, set[str]] = {}

    async def life(stream: FakeStream) -> None:
        for _ in range(5):
            chosen = set(rng.sample(groups, rng.randint(1, 3)))
            await hub.join(stream, chosen)
            assert all(hub.channel in layer.groups.get(group, {}) for group in chosen)
            following[stream] = chosen
            await asyncio.sleep(rng.uniform(0, 0.01))
            following[stream] = set()
            await hub.leave(stream, chosen)

    streams = [FakeStream() for _ in range(30)]
    keep = streams[:3]  # these stay
    for stream in keep:
        await hub.join(stream, {"g1"})
    await asyncio.gather(*(life(stream) for stream in streams[3:]))
    assert set(hub.members) == {"g1"} and hub.members["g1"] == set(keep)
    assert list(layer.groups["g1"]) == [hub.channel]
    assert "g2" not in layer.groups and "g3" not in layer.groups
    hub.hand_out({"type": "event.published", "prevs": {"g1": 0, "g2": 0}, "event": {}})
    assert [len(stream.offered) for stream in keep] == [1, 1, 1]
    for stream in keep:
        await hub.leave(stream, {"g1"})
    assert hub.channel is None and "g1" not in layer.groups
