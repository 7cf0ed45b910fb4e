"""One open event stream, shared by the SSE and WebSocket consumers.

Order of work (contract section 4): join the channel-layer groups first (through the
process's one receiver, jobs_app.stream_hub), then replay the log after the cursor, then go
live, dropping what the replay already sent. Live messages carry the previous sequence number
of each of their groups; a jump means a message was lost (channels-redis drops them silently
when a channel is full), and the stream refills from the log. Heartbeats also
compare the scope's newest sequence number with what was delivered, so even a lost *last*
message is repaired within one heartbeat.

The live path is the hot one: a group message that follows what the stream delivered goes
to the socket with no database call and no thread, from a drain task that lives only while
messages wait (its queue is the bounded outgoing queue of the contract). Only a gap or
several groups make it ask the log, in a database pool of the streams' own. An idle stream
holds no task at all: its heartbeat and lifetime are timers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from jobs_app import metrics
from jobs_app.events import (
    EventFilter,
    format_cursor,
    parse_cursor,
    read_events,
    reset_event,
    seq_of,
    serialize_event,
)
from jobs_app.models import Task
from jobs_app.states import TASK_TERMINAL
from jobs_app.stream_hub import StreamHub
from photobooth.db import in_db_thread
from sessions_app.models import BoothSession, ClientApp

logger = logging.getLogger(__name__)

TERMINAL_TYPES = frozenset(str(status) for status in TASK_TERMINAL)


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamScope:
    """What a stream follows: one client, the session, one task, or several (multiplex)."""

    kind: str  # "client" | "session" | "task" | "multiplex"
    id: str | dict | None
    event_filter: EventFilter
    client_app_id: str | None = None  # the envelope's clientAppId for connected/reset
    task_id: str | None = None  # task scope: the stream ends after the terminal event

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "id": self.id}


class ClientGone(Exception):
    """The client went away before a send reached it: normal, not a failure of the stream."""


Emit = Callable[[dict[str, Any]], Awaitable[None]]
Heartbeat = Callable[[], Awaitable[None]]
# The reason a stream ends: "task_finished", "overflow", "lifetime", "error" or "gone" (the
# client left first).
Finish = Callable[[str], Awaitable[None]]


class EventStream:
    """Replay-then-live delivery of one scope's events to one connection."""

    # A thousand idle streams per process: every byte of each counts (docs/performance.md).
    __slots__ = (
        "_emit", "_finish", "_head", "_heartbeat", "_reset", "_start", "chores", "connection_id",
        "delivered", "drainer", "event_filter", "finished", "groups", "hub", "lifetime_seconds",
        "live", "live_since_beat", "lock", "outbox", "scope", "session", "timers", "transport",
    )  # fmt: skip

    def __init__(
        self,
        *,
        session: BoothSession,
        scope: StreamScope,
        hub: StreamHub,
        transport: str,
        emit: Emit,
        heartbeat: Heartbeat,
        finish: Finish,
        lifetime_seconds: float | None = None,
    ):
        self.session = session
        self.scope = scope
        self.event_filter = scope.event_filter
        self.hub = hub
        self.transport = transport
        self.connection_id = uuid.uuid4().hex
        self._emit = emit
        self._heartbeat = heartbeat
        self._finish = finish
        self.lifetime_seconds = lifetime_seconds
        self.delivered = 0  # newest sequence number this stream has dealt with
        self.groups: set[str] = set()
        self.live = False  # the replay is done: messages are delivered as they come
        self.live_since_beat = False  # a live message arrived since the last heartbeat
        # Messages waiting for the drain task; made when needed, dropped once empty.
        self.outbox: deque[dict[str, Any]] | None = None
        self.drainer: asyncio.Task | None = None
        self.chores: set[asyncio.Task] = set()  # drain and heartbeat tasks in flight
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.finished = False
        # One deliverer at a time: live messages, the drain task, heartbeats and client
        # actions (resume) all send.
        self.lock = asyncio.Lock()

    # --- opening ---------------------------------------------------------------------------

    async def prepare(self, cursor: str | None) -> bool:
        """Join the groups and find where to start; False when there is nothing to stream
        (a finished task read past its end)."""
        await self.join(self.event_filter.groups(self.session.pk))
        self._start, self._reset, self._head = await self._start_position(cursor)
        return self._start is not None

    async def start(self) -> None:
        """Send `connected` (then `reset` for an unknown cursor), replay, then go live."""
        await self._emit(self._connected_event(self._start))
        if self._reset:
            metrics.RESETS.labels(self.transport).inc()
            await self._emit(reset_event(self.session, format_cursor(self.session, self._head),
                                         self.scope.client_app_id))  # fmt: skip
        self.delivered = self._start
        metrics.REPLAYS.labels(self.transport).inc()
        async with self.lock:
            await self.refill()
        if not self.finished:
            # Messages that came during the replay waited; those it sent are now stale.
            self.live = True
            if self.outbox:
                self.drainer = self._spawn(self._drain)
            loop = asyncio.get_running_loop()
            # A random first beat: streams opened together must not all wake together.
            self._beat_in(settings.STREAM_HEARTBEAT_SECONDS * random.uniform(0.5, 1.0))
            if self.lifetime_seconds:
                self.timers["lifetime"] = loop.call_later(self.lifetime_seconds, self._expire)

    def _connected_event(self, start: int) -> dict[str, Any]:
        return {
            "id": format_cursor(self.session, start),
            "type": "connected",
            "connectionId": self.connection_id,
            "scope": self.scope.describe(),
            "sessionId": str(self.session.pk),
            "clientAppId": self.scope.client_app_id,
        }

    @functools.partial(in_db_thread, pool="streams")
    def _start_position(self, cursor: str | None) -> tuple[int | None, bool, int]:
        """Return (seq to start after, whether the cursor was unknown, head)."""
        session = self.session
        session.refresh_from_db(fields=["event_seq", "pruned_seq"])
        head = session.event_seq
        task = None
        if self.scope.task_id:
            task = Task.objects.get(pk=self.scope.task_id)
        if cursor is not None:
            start = parse_cursor(session, cursor)
            if start is None:
                return head, True, head
        elif task is not None:
            # A task stream without a cursor replays the task from its first event.
            start = task.cursor_seq
            if start < session.pruned_seq:
                return head, True, head
        else:
            start = head
        if task is not None and task.is_finished and start >= task.last_event_seq:
            return None, False, head
        return start, False, head

    # --- live ------------------------------------------------------------------------------

    def offer(self, message: dict[str, Any]) -> None:
        """Queue a channel-layer message for delivery, without waiting; a stream whose queue
        is full (the client cannot keep up) ends with "overflow"."""
        if self.finished:
            return
        self.live_since_beat = True
        if self.outbox is None:
            self.outbox = deque()
        elif len(self.outbox) >= settings.STREAM_QUEUE_MAX:
            self.finished = True
            metrics.SLOW_CONSUMER_CLOSES.labels(self.transport).inc()
            self._spawn(functools.partial(self._finish, "overflow"))
            return
        self.outbox.append(message)
        if self.drainer is None and self.live:
            self.drainer = self._spawn(self._drain)

    def _verdict(self, message: dict[str, Any]) -> str:
        """Say what a message calls for: "stale" (delivered already), "next" (send it as it
        is) or "log" (read the log)."""
        if seq_of(message["event"]) <= self.delivered:
            return "stale"  # the replay or a refill sent it already, or another group's copy did
        # A jump (a lost message), or several groups whose messages may arrive out of order:
        # the log decides.
        if len(self.groups) == 1:
            prev = message["prevs"].get(next(iter(self.groups)))
            if prev is not None and prev <= self.delivered:
                return "next"
        return "log"

    async def _drain(self) -> None:
        try:
            while self.outbox and not self.finished:
                async with self.lock:
                    await self._deliver(self.outbox.popleft())
        finally:
            self.drainer = None
            if not self.outbox:
                self.outbox = None

    async def _deliver(self, message: dict[str, Any]) -> None:
        verdict = self._verdict(message)
        if verdict == "next":
            await self._send_event(message["event"], seq_of(message["event"]))
        elif verdict == "log":
            repaired = await self.refill()
            if len(self.groups) == 1 and repaired > 1:
                metrics.GAPS_REPAIRED.labels(self.transport).inc()

    def _spawn(self, work: Callable[[], Awaitable[None]]) -> asyncio.Task:
        """Run stream work in a task of its own; a failure is logged and ends the stream."""
        task = asyncio.get_running_loop().create_task(self._guarded(work))
        self.chores.add(task)
        task.add_done_callback(self.chores.discard)
        return task

    async def _guarded(self, work: Callable[[], Awaitable[None]]) -> None:
        # Called here, not by the spawner: a task cancelled before it ran leaves no
        # coroutine that was never awaited.
        try:
            await work()
        except asyncio.CancelledError:
            raise
        except ClientGone:
            # Clients leave all the time (a closed tab, a lost network); a heartbeat or event
            # that finds the socket closing is the usual way to learn it first.
            logger.debug("stream_client_gone connection=%s", self.connection_id)
            with contextlib.suppress(Exception):
                await self._finish("gone")
        except Exception:
            logger.exception("stream_failed connection=%s", self.connection_id)
            with contextlib.suppress(Exception):
                await self._finish("error")

    def _expire(self) -> None:
        if not self.finished:
            self._spawn(functools.partial(self._finish, "lifetime"))

    def _beat_in(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        self.timers["beat"] = loop.call_later(seconds, self._beat_due)

    def _beat_due(self) -> None:
        if not self.finished:
            self._spawn(self._on_beat)

    async def _on_beat(self) -> None:
        """Send a heartbeat, keep group membership fresh and, when quiet, pick up anything lost."""
        try:
            await self._heartbeat()
            quiet, self.live_since_beat = not self.live_since_beat, False
            # While messages flow, the next one's `prev` reveals a loss; only a quiet stream
            # can be missing its last message.
            if quiet and not self.outbox:
                async with self.lock:
                    if await self._scope_head() > self.delivered and await self.refill():
                        metrics.GAPS_REPAIRED.labels(self.transport).inc()
        finally:
            if not self.finished:
                # Jittered, never longer than the configured interval.
                self._beat_in(settings.STREAM_HEARTBEAT_SECONDS * random.uniform(0.9, 1.0))

    async def resume(self, cursor: str) -> None:
        """Replay from a cursor the client names (a `reset` first when it is unknown here)."""
        async with self.lock:
            start = await in_db_thread(self._parse, pool="streams")(cursor)
            if start is None:
                metrics.RESETS.labels(self.transport).inc()
                head = self.session.event_seq
                await self._emit(reset_event(self.session, format_cursor(self.session, head),
                                             self.scope.client_app_id))  # fmt: skip
                start = head
            self.delivered = start
            metrics.REPLAYS.labels(self.transport).inc()
            await self.refill()

    def _parse(self, cursor: str) -> int | None:
        self.session.refresh_from_db(fields=["event_seq", "pruned_seq"])
        return parse_cursor(self.session, cursor)

    @functools.partial(in_db_thread, pool="streams")
    def _scope_head(self) -> int:
        """Return the newest sequence number of the scope (cheap: one row by key)."""
        scope = self.scope
        if scope.kind == "task":
            return Task.objects.values_list("last_event_seq", flat=True).get(pk=scope.task_id)
        if scope.kind == "client" and len(self.groups) == 1:
            return ClientApp.objects.values_list("last_event_seq", flat=True).get(
                client_app_id=scope.client_app_id
            )
        return BoothSession.objects.values_list("event_seq", flat=True).get(pk=self.session.pk)

    async def refill(self) -> int:
        """Send every event of the filter after `delivered` from the log; return how many."""
        sent = 0
        while not self.finished:
            page = await in_db_thread(read_events, pool="streams")(
                self.session, self.delivered, self.event_filter
            )
            for event in page.events:
                await self._send_event(serialize_event(event), event.seq)
                sent += 1
                if self.finished:
                    return sent
            self.delivered = max(self.delivered, page.head)
            if len(page.events) < 500:
                return sent
        return sent

    async def _send_event(self, payload: dict[str, Any], seq: int) -> None:
        await self._emit(payload)
        metrics.EVENTS_DELIVERED.labels(self.transport).inc()
        self.delivered = seq
        if payload["type"] in TERMINAL_TYPES and payload["taskId"] == self.scope.task_id:
            self.finished = True
            await self._finish("task_finished")

    # --- membership ------------------------------------------------------------------------

    async def join(self, groups: set[str]) -> None:
        self.groups |= set(groups)
        await self.hub.join(self, groups)

    async def leave(self, groups: set[str]) -> None:
        self.groups -= set(groups)
        await self.hub.leave(self, groups)

    def follow(self, event_filter: EventFilter) -> None:
        """Change what the stream delivers from now on (WebSocket subscribe/unsubscribe)."""
        self.event_filter = event_filter

    async def close(self) -> None:
        """Stop the timers and tasks and leave every group (idempotent)."""
        self.finished = True
        for timer in self.timers.values():
            timer.cancel()
        current = asyncio.current_task()
        for task in list(self.chores):
            if task is not current:
                task.cancel()
        await self.leave(set(self.groups))
