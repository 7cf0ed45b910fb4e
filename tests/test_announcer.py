"""Committed events reach the channel layer in order per session, without making the
publisher wait (jobs_app/announcer.py)."""

from __future__ import annotations

import asyncio
import threading

from channels.layers import get_channel_layer

from jobs_app import announcer
from jobs_app.server_loop import remember_running_loop


def send_of(session: str, seq: int) -> tuple[tuple[str, ...], dict]:
    """An event's send: its three groups and its one message."""
    groups = tuple(f"{kind}.{session}" for kind in ("session", "client", "task"))
    return groups, {"type": "event.published", "seq": seq}


def sessions_and_seqs(sends) -> list[tuple[str, int]]:
    return [(groups[0], message["seq"]) for groups, message in sends]


async def test_a_publisher_thread_returns_before_the_channel_layer_has_sent_anything(
    monkeypatch,
):
    remember_running_loop()
    layer = get_channel_layer()
    gate = asyncio.Event()
    sent: list[int] = []
    real_send_many = layer.group_send_many

    async def slow_send_many(sends):
        await gate.wait()
        sent.extend(message["seq"] for _, message in sends)
        await real_send_many(sends)

    monkeypatch.setattr(layer, "group_send_many", slow_send_many)
    publisher = threading.Thread(
        target=lambda: [announcer.announce("s1", f"c-{n}", send_of("s1", n)) for n in (1, 2)]
    )
    publisher.start()
    await asyncio.to_thread(publisher.join)
    assert sent == []  # the thread is done; nothing was sent yet
    gate.set()
    for _ in range(50):
        if len(sent) == 2:
            break
        await asyncio.sleep(0.01)
    assert sent == [1, 2]  # one after the other


async def test_a_channel_in_several_of_an_events_groups_gets_it_once_and_in_order():
    remember_running_loop()
    layer = get_channel_layer()
    both, task_only = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("session.a", both)
    await layer.group_add("client.a", both)
    await layer.group_add("task.a", task_only)

    def publish() -> None:
        for n in range(1, 21):
            announcer.announce("a", f"a-{n}", send_of("a", n))

    await asyncio.to_thread(publish)
    assert [(await layer.receive(both))["seq"] for _ in range(20)] == list(range(1, 21))
    assert [(await layer.receive(task_only))["seq"] for _ in range(20)] == list(range(1, 21))
    assert await announcer.drain(5)
    assert not layer.channels.get(both) and not layer.channels.get(task_only)  # no copies


def test_without_a_running_server_loop_it_sends_before_returning(monkeypatch):
    from jobs_app import server_loop

    monkeypatch.setattr(server_loop, "_server_loop", None)
    layer = get_channel_layer()
    sent = []

    async def record(sends):
        sent.extend(sends)

    monkeypatch.setattr(layer, "group_send_many", record)
    announcer.announce("s", "s-1", send_of("s", 1))
    assert sent == [send_of("s", 1)]


async def test_a_failed_batch_is_logged_and_the_next_events_still_go_out(monkeypatch, caplog):
    remember_running_loop()
    layer = get_channel_layer()
    sent: list[int] = []

    async def group_send_many(sends):
        if sends[0][1]["seq"] == 1:
            raise ConnectionError("redis went away")
        sent.append(sends[0][1]["seq"])

    monkeypatch.setattr(layer, "group_send_many", group_send_many)
    for n in (1, 2):
        announcer.announce("s", f"s-{n}", send_of("s", n))
    for _ in range(50):
        if sent:
            break
        await asyncio.sleep(0.01)
    assert sent == [2]
    assert "event_announce_failed cursor=s-1 group=session.s,client.s,task.s" in caplog.text


async def test_events_of_many_sessions_waiting_together_go_out_in_one_batch(monkeypatch):
    remember_running_loop()
    layer = get_channel_layer()
    batches: list[list[tuple[str, int]]] = []

    async def group_send_many(sends):
        batches.append(sessions_and_seqs(sends))
        await asyncio.sleep(0.05)  # a round trip, during which more events wait

    monkeypatch.setattr(layer, "group_send_many", group_send_many)

    def publish() -> None:  # a burst from another thread: 40 sessions, two events each
        for n in (1, 2):
            for k in range(40):
                announcer.announce(f"s{k}", f"s{k}-{n}", send_of(f"s{k}", n))

    await asyncio.to_thread(publish)
    for _ in range(200):
        if sum(map(len, batches)) == 80:
            break
        await asyncio.sleep(0.01)
    sent = [event for batch in batches for event in batch]
    assert sorted(sent) == sorted((f"session.s{k}", n) for k in range(40) for n in (1, 2))
    assert len(batches) < 20  # far fewer calls than events
    for batch in batches:  # one event per session per batch, so per-session order holds
        assert len({group for group, _ in batch}) == len(batch)
    for k in range(40):
        order = [n for group, n in sent if group == f"session.s{k}"]
        assert order == [1, 2]


async def test_a_batch_stuck_in_the_layer_holds_up_only_its_own_sessions(monkeypatch):
    remember_running_loop()
    layer = get_channel_layer()
    stuck = asyncio.Event()
    sent: list[tuple[str, int]] = []

    async def group_send_many(sends):
        events = sessions_and_seqs(sends)
        if ("session.a", 1) in events:
            await stuck.wait()
        sent.extend(events)

    monkeypatch.setattr(layer, "group_send_many", group_send_many)
    announcer.announce("a", "a-1", send_of("a", 1))
    await asyncio.sleep(0.05)  # a's first event is in flight, stuck
    for n in range(1, 6):
        announcer.announce("a", f"a-{n + 1}", send_of("a", n + 1))
        announcer.announce("b", f"b-{n}", send_of("b", n))
    for _ in range(100):
        if len(sent) == 5:
            break
        await asyncio.sleep(0.01)
    assert sent == [("session.b", n) for n in range(1, 6)]  # b went on; a waits its turn
    stuck.set()
    for _ in range(100):
        if len(sent) == 11:
            break
        await asyncio.sleep(0.01)
    assert [n for group, n in sent if group == "session.a"] == [1, 2, 3, 4, 5, 6]


async def test_drain_waits_until_every_announced_event_reached_the_layer(monkeypatch, caplog):
    remember_running_loop()
    layer = get_channel_layer()
    sent: list[int] = []
    stuck = asyncio.Event()

    async def group_send_many(sends):
        seqs = [message["seq"] for _, message in sends]
        if 99 in seqs:
            await stuck.wait()
        await asyncio.sleep(0.02)
        sent.extend(seqs)

    monkeypatch.setattr(layer, "group_send_many", group_send_many)
    for n in range(1, 6):
        announcer.announce("s", f"s-{n}", send_of("s", n))
    assert await announcer.drain(5)
    assert sent == [1, 2, 3, 4, 5]  # all out when drain returned (five rounds of 20 ms)

    announcer.announce("t", "t-99", send_of("t", 99))
    assert not await announcer.drain(0.1)  # stuck in the layer: gives up, says so
    assert "announce_drain_timeout waiting=0 in_flight=1" in caplog.text
    stuck.set()
    assert await announcer.drain(5)
