"""One channel-layer receiver per process, handing group messages to the streams open in it.

A Channels consumer normally gets a channel of its own and receives on it: per idle stream
that kept a receive buffer (an `asyncio.Queue`), channels-redis' receive tasks and Channels'
`await_many_dispatch` tasks alive, about 7 KiB, and every event was copied to the channel of
every stream that follows it. Here a process joins each group once, on one channel, while any
of its streams follows the group; one task receives, and hands each message to the streams of
its groups (`EventStream.offer`, which never waits). An event reaches a process once, however
many of its streams (or of its groups) follow it.

Membership is kept in step with the streams: the first stream of a group makes the hub join
it, the last one to leave makes it leave, one change at a time per group (a join never
returns before the hub is a member, so a stream's replay cannot miss an event announced
meanwhile). Memberships are refreshed before the layer would expire them. With no stream left
the hub stops receiving; the next stream starts it again on a new channel.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from channels.layers import get_channel_layer

from jobs_app.events import EVENT_MESSAGE_TYPE
from jobs_app.supervision import spawn

if TYPE_CHECKING:
    from jobs_app.streams import EventStream

logger = logging.getLogger(__name__)

# Seconds to wait after the layer failed to receive (Redis down), before trying again.
RECEIVE_RETRY_SECONDS = 1.0


class StreamHub:
    """The group memberships and the receiver of one event loop's streams."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.channel: str | None = None
        self.members: dict[str, set[EventStream]] = {}  # group -> the streams that follow it
        self.joined: set[str] = set()  # groups the channel is a member of in the layer
        self.changing: dict[str, asyncio.Future] = {}  # group -> its membership change
        self.receiver: asyncio.Task | None = None
        self.refresh_timer: asyncio.TimerHandle | None = None
        self.chores: set[asyncio.Task] = set()

    async def join(self, stream: EventStream, groups: Iterable[str]) -> None:
        """Have `stream` receive the messages of `groups`; return once the hub is a member."""
        groups = list(groups)
        if self.channel is None:
            # A new channel each time: the in-memory layer drops a channel from all its
            # groups once a message waited on it too long, as one would have while nobody
            # received. (channels-redis: a process-local name, read with the process's other
            # channels by one BZPOPMIN.)
            channel = await self.layer.new_channel()
            if self.channel is None:
                self._start(channel)
        for group in groups:
            self.members.setdefault(group, set()).add(stream)
        await self._settle(groups)

    async def leave(self, stream: EventStream, groups: Iterable[str]) -> None:
        """Stop handing `stream` the messages of `groups` (the hub leaves unfollowed groups)."""
        groups = list(groups)
        for group in groups:
            streams = self.members.get(group)
            if streams is not None:
                streams.discard(stream)
                if not streams:
                    del self.members[group]
        try:
            await self._settle(groups)
        finally:
            if not self.members and not self.changing:
                self._stop()

    async def _settle(self, groups: list[str]) -> None:
        """Make the layer's membership of each group match whether a stream follows it."""
        for group in groups:
            while True:
                change = self.changing.get(group)
                if change is not None:
                    await asyncio.shield(change)  # another stream's change: then look again
                    continue
                wanted = group in self.members
                if wanted == (group in self.joined) or self.channel is None:
                    break
                await self._change(group, wanted)

    async def _change(self, group: str, join: bool) -> None:
        change = self.changing[group] = asyncio.get_running_loop().create_future()
        try:
            if join:
                await self.layer.group_add(group, self.channel)
                self.joined.add(group)
            else:
                self.joined.discard(group)  # even if the layer fails: it expires the rest
                await self.layer.group_discard(group, self.channel)
        finally:
            del self.changing[group]
            change.set_result(None)

    # --- receiving -------------------------------------------------------------------------

    def _start(self, channel: str) -> None:
        self.channel = channel
        self.receiver = spawn(self._receive(self.channel), name="stream_hub_receive")
        self._refresh_later()

    def _stop(self) -> None:
        channel, self.channel = self.channel, None
        if self.receiver is not None:
            self.receiver.cancel()
            self.receiver = None
        if self.refresh_timer is not None:
            self.refresh_timer.cancel()
            self.refresh_timer = None
        for group in self.joined:  # left unsettled by a leave that failed: once more, aside
            spawn(self.layer.group_discard(group, channel), name="stream_hub_leave",
                  keep=self.chores)  # fmt: skip
        self.joined.clear()

    async def _receive(self, channel: str) -> None:
        while True:
            try:
                message = await self.layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("stream_hub_receive_failed channel=%s", channel)
                await asyncio.sleep(RECEIVE_RETRY_SECONDS)
                continue
            self.hand_out(message)

    def hand_out(self, message: dict[str, Any]) -> None:
        """Offer a group message to every stream that follows one of its groups, once."""
        if message.get("type") != EVENT_MESSAGE_TYPE:
            return
        groups = [group for group in message["prevs"] if group in self.members]
        if len(groups) == 1:
            streams: Iterable[EventStream] = self.members[groups[0]]
        else:
            streams = {stream for group in groups for stream in self.members[group]}
        for stream in list(streams):
            stream.offer(message)

    # --- keeping memberships ---------------------------------------------------------------

    def _refresh_later(self) -> None:
        # The layer expires memberships after group_expiry (channels-redis: settings.py).
        seconds = getattr(self.layer, "group_expiry", 86400) / 3
        loop = asyncio.get_running_loop()
        self.refresh_timer = loop.call_later(seconds, self._refresh_due)

    def _refresh_due(self) -> None:
        if self.channel is not None:
            spawn(self._refresh(), name="stream_hub_refresh", keep=self.chores)
            self._refresh_later()

    async def _refresh(self) -> None:
        channel = self.channel
        for group in list(self.joined):
            if group in self.joined and channel == self.channel and group not in self.changing:
                await self.layer.group_add(group, channel)


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, StreamHub] = weakref.WeakKeyDictionary()


def get_hub() -> StreamHub:
    """Return the hub of the running event loop (and its current channel layer)."""
    loop = asyncio.get_running_loop()
    layer = get_channel_layer()
    hub = _hubs.get(loop)
    if hub is None or hub.layer is not layer:
        hub = _hubs[loop] = StreamHub(layer)
    return hub
