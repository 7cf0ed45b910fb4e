"""The Redis channel layer's batched send (jobs_app/channel_layer.py), on the real Redis."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import channel_layers, get_channel_layer
from channels.testing import WebsocketCommunicator
from redis.asyncio import Redis

from jobs_app.channel_layer import DELIVER_LUA, RedisChannelLayer
from photobooth.settings import redis_channel_layer

pytestmark = pytest.mark.redis
REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
async def layer(settings):
    """The project's Redis layer (as settings configure it), on a prefix of its own."""
    config = redis_channel_layer(REDIS_URL, f"test-{uuid.uuid4().hex[:8]}")
    config["CONFIG"]["capacity"] = 3
    settings.CHANNEL_LAYERS = {"default": config}
    channel_layers.backends.clear()
    layer = get_channel_layer()
    assert isinstance(layer, RedisChannelLayer)
    yield layer
    await layer.flush()
    channel_layers.backends.clear()


async def pending(layer: RedisChannelLayer, channel: str) -> int:
    """Return how many messages wait in a (general) channel."""
    return await layer.connection(0).zcard(layer.prefix + channel)


def sends(*groups: str, n: int = 1) -> list[tuple[tuple[str, ...], dict]]:
    """One message for all the groups, as an event goes to its session, client and task."""
    return [(groups, {"type": "test.message", "group": groups[0], "n": n})]


async def test_each_member_of_any_of_the_groups_gets_the_message_once(layer):
    members = {"a": ["s"], "b": ["s", "c"], "c": ["c", "t"], "d": ["t"], "e": ["other"]}
    for channel, groups in members.items():
        for group in groups:
            await layer.group_add(group, f"test.{channel}")
    await layer.group_send_many(sends("s", "c", "t"))
    for channel in "abcd":
        assert (await layer.receive(f"test.{channel}"))["n"] == 1
    assert [await pending(layer, f"test.{channel}") for channel in "abcde"] == [0] * 5


async def test_each_message_of_a_batch_reaches_its_own_groups_members(layer):
    await layer.group_add("s1", "test.hub")  # one process's receiver, in both sessions' groups
    await layer.group_add("s2", "test.hub")
    await layer.group_add("s2", "test.other")
    await layer.group_send_many([*sends("s1", "c1", n=1), *sends("s2", "c2", n=2)])
    # One batch's messages share a time (their order): the announcer puts at most one event of
    # a session in a batch, so a stream's events never share one.
    assert sorted([(await layer.receive("test.hub"))["n"] for _ in range(2)]) == [1, 2]
    assert (await layer.receive("test.other"))["n"] == 2
    assert await pending(layer, "test.hub") == await pending(layer, "test.other") == 0


async def test_a_full_channel_is_skipped_and_logged_and_the_others_still_get_theirs(layer, caplog):
    await layer.group_add("s", "test.full")
    await layer.group_add("s", "test.free")
    for n in range(3):  # capacity 3
        await layer.send("test.full", {"type": "test.message", "n": n})
    with caplog.at_level("INFO", logger="jobs_app.channel_layer"):
        await layer.group_send_many(sends("s", "c"))
    assert await pending(layer, "test.full") == 3
    assert (await layer.receive("test.free"))["group"] == "s"
    assert "group_send_over_capacity groups=s,c channels=1 of=2" in caplog.text


async def test_expired_messages_and_members_do_not_count(layer):
    redis = layer.connection(0)
    old = time.time() - layer.expiry - 10
    await redis.zadd(layer.prefix + "test.stale", {f"old-{n}".encode(): old for n in range(3)})
    await layer.group_add("s", "test.stale")
    gone = time.time() - layer.group_expiry - 10
    await redis.zadd(layer._group_key("s"), {"test.gone": gone})
    await layer.group_send_many(sends("s"))
    assert await pending(layer, "test.stale") == 1  # the old ones dropped, ours added
    assert (await layer.receive("test.stale"))["group"] == "s"
    assert await pending(layer, "test.gone") == 0
    assert await redis.zrange(layer._group_key("s"), 0, -1) == [b"test.stale"]


class GroupConsumer(AsyncWebsocketConsumer):
    """Joins the groups named in the path; forwards each group message to the socket."""

    async def connect(self) -> None:
        self.groups = self.scope["path"].strip("/").split(",")
        for group in self.groups:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()

    async def test_message(self, event: dict) -> None:
        await self.send(text_data=json.dumps(event))


# Channels' consumers close stale database connections before each message: allowed here.
@pytest.mark.django_db(transaction=True)
async def test_process_local_channels_of_consumers_get_the_message_once(layer):
    sockets = {}
    for name, path in {"session": "/s", "task": "/t", "both": "/s,t"}.items():
        sockets[name] = WebsocketCommunicator(GroupConsumer.as_asgi(), path)
        assert (await sockets[name].connect())[0]
    try:
        await layer.group_send_many(sends("s", "t"))
        received = {
            name: json.loads(await socket.receive_from(timeout=5))["n"]
            for name, socket in sockets.items()
        }
        assert received == {"session": 1, "task": 1, "both": 1}
        for socket in sockets.values():
            assert await socket.receive_nothing(timeout=0.3)
    finally:
        for socket in sockets.values():
            await socket.disconnect()


async def test_groups_without_members_cost_no_delivery_script(layer, monkeypatch):
    calls: list[str] = []
    evalsha, eval_ = Redis.evalsha, Redis.eval

    async def recording_evalsha(self, sha, *args):
        calls.append(sha)
        return await evalsha(self, sha, *args)

    async def recording_eval(self, script, *args):
        calls.append("EVAL")  # the whole script text, every time
        return await eval_(self, script, *args)

    monkeypatch.setattr(Redis, "evalsha", recording_evalsha)
    monkeypatch.setattr(Redis, "eval", recording_eval)
    await layer.group_send_many([])
    assert calls == []
    await layer.group_send_many(sends("s", "c", "t"))
    assert len(calls) == 1  # the members of all three groups, in one call
    await layer.group_add("t", "test.t")
    calls.clear()
    await layer.group_send_many(sends("s", "c", "t"))
    members, deliver = calls
    assert deliver == layer.connection(0).register_script(DELIVER_LUA).sha != members
    assert (await layer.receive("test.t"))["n"] == 1


async def test_a_script_redis_does_not_know_is_loaded_and_run(layer):
    await layer.group_add("s", "test.a")
    await layer.group_send_many(sends("s"))
    for script in layer._scripts.values():  # as after a restart of Redis (no SCRIPT FLUSH:
        script.sha = "0" * 40  # the server is shared)
    await layer.group_send_many(sends("s"))
    assert await pending(layer, "test.a") == 2


async def test_a_batch_is_sent_concurrently_with_others(layer):
    """The announcer sends different sessions' events side by side on one loop."""
    for n in range(20):
        await layer.group_add(f"s{n}", f"test.c{n}")
    await asyncio.gather(*(layer.group_send_many(sends(f"s{n}", "x", n=n)) for n in range(20)))
    for n in range(20):
        assert (await layer.receive(f"test.c{n}"))["n"] == n
