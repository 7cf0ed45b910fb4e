"""The channel layers, with one batched send of messages that each go to several groups.

An event goes to three groups (its session, client and task), and every process that has
streams open receives it on one channel (jobs_app/stream_hub.py): one copy per process, not
one per group. `group_send_many([(groups, message), ...])` sends each message once to every
channel that is a member of any of its groups.

On Redis, channels-redis' `group_send` costs up to four round trips per group (expire
members, read members, expire messages, then an EVAL that sends the whole Lua text): on the
announce loop that was half the CPU of publishing (docs/performance.md). Here the members of
all the groups of a batch are read in one script call per Redis shard and the messages
delivered in one script call per shard, with scripts registered once (EVALSHA). Everything
else is channels-redis 4.3.0 (pinned in pyproject.toml): this reuses its private
`_map_channel_keys_to_connection`, `_group_key` and `connection`, so the message format,
capacities, expiry and process-local channels stay exactly its own;
tests/test_channel_layer.py checks them against the real Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer as ChannelsInMemoryLayer
from channels_redis.core import RedisChannelLayer as ChannelsRedisLayer

logger = logging.getLogger(__name__)

# KEYS: group keys; ARGV[1]: members added before this time have expired (group_expiry).
# Returns each group's member channel names, in the order of KEYS.
MEMBERS_LUA = """
local members = {}
for i = 1, #KEYS do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, ARGV[1])
    members[i] = redis.call('ZRANGE', KEYS[i], 0, -1)
end
return members
"""

# KEYS: channel keys (a key may repeat, with another message); ARGV: the messages, then the
# capacities, then the time now, the expiry and the time before which messages have expired.
# Drops expired messages, then adds each message whose channel has room, as channels-redis'
# group_send does in two calls. Returns the (1-based) indexes of the keys that were full.
DELIVER_LUA = """
local count = #KEYS
local now = ARGV[2 * count + 1]
local expiry = ARGV[2 * count + 2]
local expired_before = ARGV[2 * count + 3]
local full = {}
for i = 1, count do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, expired_before)
    if redis.call('ZCOUNT', KEYS[i], '-inf', '+inf') < tonumber(ARGV[count + i]) then
        redis.call('ZADD', KEYS[i], now, ARGV[i])
        redis.call('EXPIRE', KEYS[i], expiry)
    else
        full[#full + 1] = i
    end
end
return full
"""

# (groups, message) pairs: the message goes once to every member channel of any of its groups.
Sends = Sequence[tuple[Sequence[str], dict[str, Any]]]


def _log_over_capacity(groups: Sequence[str], full: int, of: int) -> None:
    # As channels-redis logs it (info): a full channel belongs to a receiver that stopped
    # reading; streams find the gap in the log.
    logger.info("group_send_over_capacity groups=%s channels=%s of=%s", ",".join(groups),
                full, of)  # fmt: skip


class InMemoryChannelLayer(ChannelsInMemoryLayer):
    """Channels' in-memory layer plus `group_send_many` (same class name as Channels')."""

    async def group_send_many(self, sends: Sends) -> None:
        """Send each message once to every member channel of any of its groups."""
        self._clean_expired()
        for groups, message in sends:
            channels: dict[str, None] = {}
            for group in groups:
                self.require_valid_group_name(group)
                channels.update(dict.fromkeys(self.groups.get(group, ())))
            full = 0
            for channel in channels:
                try:
                    await self.send(channel, message)
                except ChannelFull:
                    full += 1
            if full:
                _log_over_capacity(groups, full, len(channels))


class RedisChannelLayer(ChannelsRedisLayer):
    """channels-redis' layer plus `group_send_many` (same class name: /ws-health reports it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._scripts: dict[str, Any] = {}  # Lua text -> redis-py Script (its SHA, once)

    async def group_send_many(self, sends: Sends) -> None:
        """Send each message once to every member channel of any of its groups.

        All the groups' members are read in one call per shard, then every message is
        delivered in one call per shard.
        """
        groups = list(dict.fromkeys(group for message_groups, _ in sends
                                    for group in message_groups))  # fmt: skip
        for group in groups:
            assert self.require_valid_group_name(group), "Group name not valid"
        members = dict(zip(groups, await self._members(groups), strict=True))
        # connection index -> (channel keys, serialized messages, capacities, send of each)
        batches: dict[int, tuple[list, list, list, list[int]]] = defaultdict(
            lambda: ([], [], [], [])
        )
        key_counts: list[int] = []  # per send: how many channel keys it goes to
        for position, (message_groups, message) in enumerate(sends):
            channels = list(dict.fromkeys(channel for group in message_groups
                                          for channel in members[group]))  # fmt: skip
            by_connection, serialized, capacities = self._map_channel_keys_to_connection(
                channels, message
            )
            key_counts.append(len(serialized))
            for index, keys in by_connection.items():
                batch = batches[index]
                for key in keys:
                    batch[0].append(key)
                    batch[1].append(serialized[key])
                    batch[2].append(capacities[key])
                    batch[3].append(position)
        if not batches:
            return
        results = await _together(
            [self._deliver(index, *batch[:3]) for index, batch in batches.items()]
        )
        full: dict[int, int] = defaultdict(int)  # send -> channel keys that were full
        for batch, positions in zip(batches.values(), results, strict=True):
            for position in positions:
                full[batch[3][position - 1]] += 1
        for send, count in full.items():
            _log_over_capacity(sends[send][0], count, key_counts[send])

    async def _members(self, groups: list[str]) -> list[list[str]]:
        """Return the member channels of each group (expired members dropped first)."""
        by_shard: dict[int, list[int]] = defaultdict(list)
        for position, group in enumerate(groups):
            by_shard[self.consistent_hash(group)].append(position)
        expired_before = int(time.time()) - self.group_expiry
        members: list[list[str]] = [[] for _ in groups]

        async def read(index: int, positions: list[int]) -> None:
            keys = [self._group_key(groups[position]) for position in positions]
            found = await self._script(MEMBERS_LUA, index)(keys, [expired_before])
            for position, names in zip(positions, found, strict=True):
                members[position] = [name.decode("utf8") for name in names]

        await _together([read(index, positions) for index, positions in by_shard.items()])
        return members

    async def _deliver(self, index: int, keys: list, messages: list, capacities: list) -> list[int]:
        """Deliver on connection `index`; return the (1-based) positions of full keys."""
        now = time.time()
        args = [*messages, *capacities, now, self.expiry, int(now) - int(self.expiry)]
        return await self._script(DELIVER_LUA, index)(keys, args)

    def _script(self, text: str, index: int) -> Callable[[list, list], Awaitable[Any]]:
        """Return the script bound to connection `index` (EVALSHA, loaded when Redis lacks it)."""
        connection = self.connection(index)
        script = self._scripts.get(text)
        if script is None:
            script = self._scripts[text] = connection.register_script(text)
        return lambda keys, args: script(keys=keys, args=args, client=connection)


async def _together(calls: list[Awaitable[Any]]) -> list[Any]:
    """Await one call directly (no task), several side by side; return their results."""
    if len(calls) == 1:
        return [await calls[0]]
    return list(await asyncio.gather(*calls))
