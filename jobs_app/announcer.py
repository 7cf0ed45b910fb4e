"""Hand committed events to the channel layer without making the publisher wait.

Events are committed by whatever thread wrote them (a worker's database thread, a request's
thread). The in-memory channel layer's queues belong to the server loop, so the group sends
must run there; waiting for them used to cost the publisher a thread hop per group, and it
held up the next database write. Now the publisher schedules the sends and returns.

Order still matters: a stream delivers a message at once only if the previous event of its
group reached it first, otherwise it reads the log. So the events of one session (all of its
groups belong to it) go out one after another, in the order they were announced, while a
session never waits behind another session's backlog. Sends go out in rounds: a round takes
the oldest waiting event of every session that has none in flight (up to BATCH_EVENTS) and
sends their messages together (`group_send_many`, jobs_app.channel_layer: on Redis one batch
of two script calls). When quiet a round is one event and goes out at once; under load the
events that came while a round was in flight go out in the next one, many for the price of
one. (A session's next event waits for the round its previous one went in, so a batch stuck
in Redis holds up the sessions in it, and only those.)
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

# One event's message and the groups it goes to (each member channel gets it once).
Send = tuple[tuple[str, ...], dict[str, Any]]


# Events of one round at most (a Redis script call's arguments grow with it).
BATCH_EVENTS = 128

Item = tuple[str, Send, float]  # cursor, its send, monotonic time announced


class Announcer:
    """The per-session lanes of one event loop and the rounds that send them."""

    def __init__(self) -> None:
        self.lanes: dict[str, deque[Item]] = {}  # session id -> its waiting events, in order
        self.in_flight: set[str] = set()  # sessions with an event being sent
        self.round_due = False
        self.rounds: set[asyncio.Task] = set()

    def submit(self, session_id: str, item: Item) -> None:
        """Queue an event's send behind the session's earlier events (loop thread)."""
        lane = self.lanes.get(session_id)
        if lane is None:
            lane = self.lanes[session_id] = deque()
        lane.append(item)
        if session_id not in self.in_flight:
            self._start_round_soon()

    def _start_round_soon(self) -> None:
        # After the callbacks already due: events submitted in the same loop turn share a round.
        if not self.round_due:
            self.round_due = True
            asyncio.get_running_loop().call_soon(self._start_round)

    def _start_round(self) -> None:
        self.round_due = False
        round_: list[tuple[str, Item]] = []
        for session_id in list(self.lanes):
            if session_id in self.in_flight:
                continue
            lane = self.lanes.pop(session_id)
            round_.append((session_id, lane.popleft()))
            if lane:
                self.lanes[session_id] = lane  # re-inserted: behind the sessions not yet served
            self.in_flight.add(session_id)
            if len(round_) == BATCH_EVENTS:
                self._start_round_soon()  # the rest in the next round
                break
        if round_:
            spawn(self._send(round_), name="announce", keep=self.rounds)

    async def _send(self, part: list[tuple[str, Item]]) -> None:
        try:
            await send_events([(cursor, send) for _, (cursor, send, _) in part])
            now = time.monotonic()
            for _, (_, _, queued_at) in part:
                metrics.ANNOUNCE_SECONDS.observe(now - queued_at)
        finally:
            for session_id, _ in part:
                self.in_flight.discard(session_id)
            if any(session_id in self.lanes for session_id, _ in part):
                self._start_round_soon()


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


async def send_event(cursor: str, send: Send) -> None:
    """Send one event's message to its groups; a failure is logged, never raised."""
    await send_events([(cursor, send)])


async def send_events(events: list[tuple[str, Send]]) -> None:
    """Send the messages of events of different sessions in one batch; log any failure.

    The layer is one of the project's (jobs_app.channel_layer): their `group_send_many`
    sends each message once to each member channel of its groups.
    """
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        await layer.group_send_many([send for _, send in events])
    except Exception as exc:
        # The events are safe in the log; streams find them when they notice the gap.
        # One line per round (up to BATCH_EVENTS events), not a traceback per event.
        cursor, (groups, _) = events[0]
        logger.error("event_announce_failed cursor=%s group=%s events=%s", cursor,
                     ",".join(groups), len(events), exc_info=exc)  # fmt: skip


async def drain(seconds: float) -> bool:
    """Wait until every event announced on this loop was handed to the channel layer.

    For shutdown: events announced just before a process stops would otherwise reach live
    streams only when a heartbeat finds them in the log (up to STREAM_HEARTBEAT_SECONDS late).
    Returns False (and logs how many were left) when `seconds` passed first.
    """
    announcer = _announcers.get(asyncio.get_running_loop())
    deadline = time.monotonic() + seconds
    while announcer is not None and (announcer.lanes or announcer.rounds):
        if time.monotonic() >= deadline:
            waiting = sum(len(lane) for lane in announcer.lanes.values())
            logger.warning("announce_drain_timeout waiting=%s in_flight=%s", waiting,
                           len(announcer.in_flight))  # fmt: skip
            return False
        await asyncio.sleep(0.01)
    return True


def announce(session_id: str, cursor: str, send: Send) -> None:
    """Send an event's message from any thread, in order per session, without waiting.

    Without a running server loop (management commands, sync tests) it sends them right away
    and returns when they are sent.
    """
    loop = server_loop()
    if loop is None:
        async_to_sync(send_event)(cursor, send)
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    item = (cursor, send, time.monotonic())
    if running is loop:
        _submit_on(loop, session_id, item)
        return
    try:
        loop.call_soon_threadsafe(_submit_on, loop, session_id, item)
    except RuntimeError:  # the loop closed since we looked: the server is shutting down
        logger.warning("event_announce_skipped cursor=%s reason=server_loop_closed", cursor)
