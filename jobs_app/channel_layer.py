"""The Redis channel layer, with one batched send for the three groups of an event.

channels-redis' `group_send` costs up to four round trips per group (expire members, read
members, expire messages, then an EVAL that sends the whole Lua text), and an event goes to
three groups: on the announce loop that was half the CPU of publishing (docs/performance.md).
`group_send_many` reads the members of all the groups in one script call per Redis shard and
delivers to the union of them in one script call per shard, with scripts registered once
(EVALSHA). Everything else is channels-redis 4.3.0 (pinned in pyproject.toml): this reuses its
private `_map_channel_keys_to_connection`, `_group_key` and `connection`, so the message
format, capacities, expiry and process-local channels stay exactly its own;
tests/test_channel_layer.py checks them against the real Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

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

Sends = Sequence[tuple[str, dict[str, Any]]]  # (group, message) pairs


class RedisChannelLayer(ChannelsRedisLayer):
    """channels-redis' layer plus `group_send_many` (same class name: /ws-health reports it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._scripts: dict[str, Any] = {}  # Lua text -> redis-py Script (its SHA, once)

    async def group_send_many(self, sends: Sends) -> None:
        """Send each group its message; a channel in several groups gets the first one's only.

        Streams that joined several groups read the log on any message anyway (a copy per
        group only made them drop the later copies as stale, jobs_app/streams.py).
        """
        groups = [group for group, _ in sends]
        for group in groups:
            assert self.require_valid_group_name(group), "Group name not valid"
        members = await self._members(groups)
        seen: set[str] = set()
        # connection index -> (channel keys, serialized messages, capacities, group of each)
        batches: dict[int, tuple[list, list, list, list[str]]] = defaultdict(
            lambda: ([], [], [], [])
        )
        for (group, message), channels in zip(sends, members, strict=True):
            fresh = [channel for channel in channels if channel not in seen]
            if not fresh:
                continue
            seen.update(fresh)
            by_connection, serialized, capacities = self._map_channel_keys_to_connection(
                fresh, message
            )
            for index, keys in by_connection.items():
                batch = batches[index]
                for key in keys:
                    batch[0].append(key)
                    batch[1].append(serialized[key])
                    batch[2].append(capacities[key])
                    batch[3].append(group)
        if not batches:
            return
        await _together([self._deliver(index, *batch) for index, batch in batches.items()])

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

    async def _deliver(
        self, index: int, keys: list, messages: list, capacities: list, groups: list[str]
    ) -> None:
        now = time.time()
        args = [*messages, *capacities, now, self.expiry, int(now) - int(self.expiry)]
        full = await self._script(DELIVER_LUA, index)(keys, args)
        if full:
            over: dict[str, int] = defaultdict(int)
            for position in full:
                over[groups[position - 1]] += 1
            for group, count in over.items():
                # As channels-redis logs it (info): a full channel belongs to a stream that
                # stopped reading; the stream finds the gap in the log.
                logger.info("group_send_over_capacity group=%s channels=%s of=%s",
                            group, count, groups.count(group))  # fmt: skip

    def _script(self, text: str, index: int) -> Callable[[list, list], Awaitable[Any]]:
        """Return the script bound to connection `index` (EVALSHA, loaded when Redis lacks it)."""
        connection = self.connection(index)
        script = self._scripts.get(text)
        if script is None:
            script = self._scripts[text] = connection.register_script(text)
        return lambda keys, args: script(keys=keys, args=args, client=connection)


async def _together(calls: list[Awaitable[Any]]) -> None:
    """Await one call directly (no task), several side by side."""
    if len(calls) == 1:
        await calls[0]
    else:
        await asyncio.gather(*calls)
