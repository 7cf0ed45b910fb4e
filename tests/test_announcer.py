"""Committed events reach the channel layer in order per session, without making the
publisher wait (jobs_app/announcer.py)."""

from __future__ import annotations

import asyncio
import threading

from channels.layers import get_channel_layer

from jobs_app import announcer
from jobs_app.server_loop import remember_running_loop


def messages_of(session: str, seq: int) -> list[tuple[str, dict]]:
    return [
        (f"{kind}.{session}", {"type": "event.published", "seq": seq, "kind": kind})
        for kind in ("session", "client", "task")
    ]


async def test_a_publisher_thread_returns_before_the_channel_layer_has_sent_anything():
    remember_running_loop()
    layer = get_channel_layer()
    gate = asyncio.Event()
    sent: list[tuple[str, int]] = []
    real_send = layer.group_send

    async def slow_send(group, message):
        await gate.wait()
        sent.append((group, message["seq"]))
        await real_send(group, message)

    layer.group_send = slow_send
    publisher = threading.Thread(
        target=lambda: [announcer.announce("s1", f"c-{n}", messages_of("s1", n)) for n in (1, 2)]
    )
    publisher.start()
    await asyncio.to_thread(publisher.join)
    assert sent == []  # the thread is done; nothing was sent yet
    gate.set()
    for _ in range(50):
        if len(sent) == 6:
            break
        await asyncio.sleep(0.01)
    # The three groups of an event go together; the next event only after them.
    assert [seq for _, seq in sent] == [1, 1, 1, 2, 2, 2]


async def test_events_of_one_session_arrive_in_order_and_sessions_do_not_wait_for_each_other():
    remember_running_loop()
    layer = get_channel_layer()
    channels = {}
    for session in ("a", "b"):
        channels[session] = await layer.new_channel()
        await layer.group_add(f"client.{session}", channels[session])
    stuck = asyncio.Event()
    real_send = layer.group_send

    async def send(group, message):
        if group.endswith(".a") and message["seq"] == 1:
            await stuck.wait()  # session a's first event hangs in the channel layer
        await real_send(group, message)

    layer.group_send = send

    def publish() -> None:
        for n in range(1, 21):
            for session in ("a", "b"):
                announcer.announce(session, f"{session}-{n}", messages_of(session, n))

    await asyncio.to_thread(publish)
    received_b = [(await layer.receive(channels["b"]))["seq"] for _ in range(20)]
    assert received_b == list(range(1, 21))  # b went on while a was stuck
    stuck.set()
    received_a = [(await layer.receive(channels["a"]))["seq"] for _ in range(20)]
    assert received_a == list(range(1, 21))


async def test_a_failed_group_send_is_logged_and_the_next_events_still_go_out(caplog):
    remember_running_loop()
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add("client.s", channel)
    real_send = layer.group_send

    async def flaky(group, message):
        if message["seq"] == 1 and group == "client.s":
            raise ConnectionError("redis went away")
        await real_send(group, message)

    layer.group_send = flaky
    for n in (1, 2):
        announcer.announce("s", f"s-{n}", messages_of("s", n))
    assert (await layer.receive(channel))["seq"] == 2
    assert "event_announce_failed cursor=s-1 group=client.s" in caplog.text


def test_without_a_running_server_loop_it_sends_before_returning(monkeypatch):
    from jobs_app import server_loop

    monkeypatch.setattr(server_loop, "_server_loop", None)
    layer = get_channel_layer()
    sent = []

    async def record(group, message):
        sent.append(group)

    monkeypatch.setattr(layer, "group_send", record)
    announcer.announce("s", "s-1", messages_of("s", 1))
    assert sorted(sent) == ["client.s", "session.s", "task.s"]


async def test_a_layer_with_group_send_many_gets_each_event_as_one_batch(monkeypatch):
    remember_running_loop()
    layer = get_channel_layer()
    batches: list[list[tuple[str, dict]]] = []

    async def group_send_many(sends):
        batches.append(list(sends))

    async def group_send(group, message):
        raise AssertionError("one batch per event, not a send per group")

    monkeypatch.setattr(layer, "group_send_many", group_send_many, raising=False)
    monkeypatch.setattr(layer, "group_send", group_send)
    for n in (1, 2):
        announcer.announce("s", f"s-{n}", messages_of("s", n))
    for _ in range(50):
        if len(batches) == 2:
            break
        await asyncio.sleep(0.01)
    assert batches == [messages_of("s", 1), messages_of("s", 2)]


async def test_a_failed_batch_is_logged_and_the_next_events_still_go_out(monkeypatch, caplog):
    remember_running_loop()
    layer = get_channel_layer()
    sent: list[int] = []

    async def group_send_many(sends):
        if sends[0][1]["seq"] == 1:
            raise ConnectionError("redis went away")
        sent.append(sends[0][1]["seq"])

    monkeypatch.setattr(layer, "group_send_many", group_send_many, raising=False)
    for n in (1, 2):
        announcer.announce("s", f"s-{n}", messages_of("s", n))
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
        batches.append([(g, m["seq"]) for g, m in sends if g.startswith("session.")])
        await asyncio.sleep(0.05)  # a round trip, during which more events wait

    monkeypatch.setattr(layer, "group_send_many", group_send_many, raising=False)

    def publish() -> None:  # a burst from another thread: 40 sessions, two events each
        for n in (1, 2):
            for k in range(40):
                announcer.announce(f"s{k}", f"s{k}-{n}", messages_of(f"s{k}", n))

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
        events = [(g, m["seq"]) for g, m in sends if g.startswith("session.")]
        if ("session.a", 1) in events:
            await stuck.wait()
        sent.extend(events)

    monkeypatch.setattr(layer, "group_send_many", group_send_many, raising=False)
    announcer.announce("a", "a-1", messages_of("a", 1))
    await asyncio.sleep(0.05)  # a's first event is in flight, stuck
    for n in range(1, 6):
        announcer.announce("a", f"a-{n + 1}", messages_of("a", n + 1))
        announcer.announce("b", f"b-{n}", messages_of("b", n))
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
        seqs = [m["seq"] for g, m in sends if g.startswith("session.")]
        if 99 in seqs:
            await stuck.wait()
        await asyncio.sleep(0.02)
        sent.extend(seqs)

    monkeypatch.setattr(layer, "group_send_many", group_send_many, raising=False)
    for n in range(1, 6):
        announcer.announce("s", f"s-{n}", messages_of("s", n))
    assert await announcer.drain(5)
    assert sent == [1, 2, 3, 4, 5]  # all out when drain returned (five rounds of 20 ms)

    announcer.announce("t", "t-99", messages_of("t", 99))
    assert not await announcer.drain(0.1)  # stuck in the layer: gives up, says so
    assert "announce_drain_timeout waiting=0 in_flight=1" in caplog.text
    stuck.set()
    assert await announcer.drain(5)
