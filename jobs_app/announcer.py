"""Hand committed events to the channel layer without making the publisher wait.

Events are committed by whatever thread wrote them (a worker's database thread, a request's
thread). The in-memory channel layer's queues belong to the server loop, so the group sends
must run there; waiting for them used to cost the publisher a thread hop per group, and it
held up the next database write. Now the publisher schedules the sends and returns.

Order still matters: a stream delivers a message at once only if the previous event of its
group reached it first, otherwise it reads the log. So the events of one session (all of its
groups belong to it) go out one after another, in the order they were announced, while
different sessions go out side by side, and the three group sends of one event go together
(on Redis as one batch: jobs_app.channel_layer).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import deque
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from jobs_app import metrics
from jobs_app.server_loop import server_loop
from jobs_app.supervision import spawn

logger = logging.getLogger(__name__)

Messages = list[tuple[str, dict[str, Any]]]  # (group, message) pairs of one event


class Announcer:
    """The per-session send lanes of one event loop."""

    def __init__(self) -> None:
        self.lanes: dict[str, deque[tuple[str, Messages, float]]] = {}  # cursor, messages, since
        self.drains: set[asyncio.Task] = set()

    def submit(self, session_id: str, item: tuple[str, Messages, float]) -> None:
        """Queue an event's group messages behind the session's earlier events (loop thread)."""
        lane = self.lanes.get(session_id)
        if lane is not None:
            lane.append(item)
            return
        lane = self.lanes[session_id] = deque([item])
        spawn(self._drain(session_id, lane), name=f"announce-{session_id}", keep=self.drains)

    async def _drain(self, session_id: str, lane: deque) -> None:
        try:
            while lane:
                cursor, messages, queued_at = lane.popleft()
                await send_event(cursor, messages)
                metrics.ANNOUNCE_SECONDS.observe(time.monotonic() - queued_at)
        finally:
            # No await since the lane ran empty: a submit meanwhile would have found it.
            del self.lanes[session_id]


_announcers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Announcer] = (
    weakref.WeakKeyDictionary()
)


def _announcer_of(loop: asyncio.AbstractEventLoop) -> Announcer:
    announcer = _announcers.get(loop)
    if announcer is None:
        announcer = _announcers[loop] = Announcer()
    return announcer


def _submit_on(loop: asyncio.AbstractEventLoop, session_id: str, item) -> None:
    _announcer_of(loop).submit(session_id, item)


async def send_event(cursor: str, messages: Messages) -> None:
    """Send one event's group messages together; a failure is logged, never raised.

    A layer with `group_send_many` (jobs_app.channel_layer) sends them in one batch, with no
    task per group; others (the in-memory layer) get one `group_send` per group, side by side.
    """
    layer = get_channel_layer()
    if layer is None:
        return
    send_many = getattr(layer, "group_send_many", None)
    if send_many is not None:
        try:
            await send_many(messages)
        except Exception as exc:
            # The event is safe in the log; streams find it when they notice the gap.
            groups = ",".join(group for group, _ in messages)
            logger.error("event_announce_failed cursor=%s group=%s", cursor, groups,
                         exc_info=exc)  # fmt: skip
        return
    results = await asyncio.gather(
        *(layer.group_send(group, message) for group, message in messages),
        return_exceptions=True,
    )
    for (group, _), result in zip(messages, results, strict=True):
        if isinstance(result, BaseException):
            logger.error("event_announce_failed cursor=%s group=%s", cursor, group,
                         exc_info=result)  # fmt: skip


def announce(session_id: str, cursor: str, messages: Messages) -> None:
    """Send an event's group messages from any thread, in order per session, without waiting.

    Without a running server loop (management commands, sync tests) it sends them right away
    and returns when they are sent.
    """
    loop = server_loop()
    if loop is None:
        async_to_sync(send_event)(cursor, messages)
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    item = (cursor, messages, time.monotonic())
    if running is loop:
        _submit_on(loop, session_id, item)
        return
    try:
        loop.call_soon_threadsafe(_submit_on, loop, session_id, item)
    except RuntimeError:  # the loop closed since we looked: the server is shutting down
        logger.warning("event_announce_skipped cursor=%s reason=server_loop_closed", cursor)
