"""The durable event log: the one publish function, the one serializer, cursors and reads.

Every state change of a task or job goes through `publish_event`, inside the transaction that
makes the change. The event row and its cursor commit with the change; the channel layer is
told only after commit. Readers trust the log, not the channel layer: a group message carries
the event plus the previous sequence number of its group, so a stream that sees a jump knows
a message was lost and refills from the log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from channels.layers import get_channel_layer
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from jobs_app import metrics
from jobs_app.groups import client_group, session_group, task_group
from jobs_app.models import Event, Job, Task
from jobs_app.server_loop import run_on_server_loop
from sessions_app.models import BoothSession, ClientApp
from sessions_app.timefmt import iso_ms

logger = logging.getLogger(__name__)

# Message type the channel layer carries; consumers handle it as `event_published`.
EVENT_MESSAGE_TYPE = "event.published"
# Most events one read returns; a client reading more simply reads again from the cursor.
MAX_EVENTS_PER_READ = 500


def format_cursor(session: BoothSession, seq: int) -> str:
    """Return the opaque cursor naming position `seq` of the session's log."""
    return f"{session.cursor_prefix}-{seq}"


def parse_cursor(session: BoothSession, cursor: str) -> int | None:
    """Return the log position a cursor names, or None when it is unknown here.

    Unknown covers malformed cursors, other sessions' cursors, positions not reached yet and
    positions older than retention: all of them call for a `reset`.
    """
    prefix, _, seq_text = cursor.rpartition("-")
    if prefix != session.cursor_prefix or not seq_text.isdigit():
        return None
    seq = int(seq_text)
    if seq < session.pruned_seq or seq > session.event_seq:
        return None
    return seq


def seq_of(payload: dict[str, Any]) -> int:
    """Return the sequence number of a serialized event."""
    return int(payload["id"].rpartition("-")[2])


def serialize_event(event: Event) -> dict[str, Any]:
    """Return the contract's JSON object for a stored event."""
    return {
        "id": format_cursor(event.session, event.seq),
        "type": event.type,
        "timestamp": iso_ms(event.created_at),
        "sessionId": str(event.session_id),
        "clientAppId": event.client_app.client_app_id,
        "taskId": str(event.task_id),
        "jobId": str(event.job_id) if event.job_id else None,
        **event.data,
    }


def lock_session_log(session_id) -> BoothSession:
    """Lock the session's log until the transaction ends and return the session (fresh).

    While held, nobody else can append to the log, so `event_seq` is the exact head.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("lock_session_log must run inside a transaction")
    return BoothSession.objects.select_for_update().get(pk=session_id)


def publish_event(task: Task, type: str, *, job: Job | None = None, **fields: Any) -> Event:
    """Append an event to the task's session log and announce it once the transaction commits.

    The caller must hold an open transaction that also writes the state change: the session
    row lock taken here makes sequence numbers commit in order, so "events after X" is exact.
    """
    session = lock_session_log(task.session_id)
    seq = session.event_seq + 1
    session.event_seq = seq
    BoothSession.objects.filter(pk=session.pk).update(event_seq=seq)
    # The previous event of the client and of the task, read under the same lock.
    previous = {
        "session": seq - 1,
        "client": ClientApp.objects.values_list("last_event_seq", flat=True).get(
            pk=task.client_app_id
        ),
        "task": Task.objects.values_list("last_event_seq", flat=True).get(pk=task.pk),
    }
    ClientApp.objects.filter(pk=task.client_app_id).update(last_event_seq=seq)
    Task.objects.filter(pk=task.pk).update(last_event_seq=seq)
    task.last_event_seq = seq
    event = Event.objects.create(
        session=session,
        seq=seq,
        type=type,
        client_app=task.client_app,
        task=task,
        job=job,
        data=fields,
        created_at=timezone.now(),
    )
    payload = serialize_event(event)
    transaction.on_commit(partial(announce_event_rollback_unsafe, payload, previous))
    return event


def announce_event_rollback_unsafe(payload: dict[str, Any], previous: dict[str, int]) -> None:
    """Send the event to its session, client and task groups, each with its previous seq.

    Only call it after commit (publish_event does): a reader woken for an event that was then
    rolled back would find nothing, or worse, a later event under the same cursor.
    """
    metrics.EVENTS_PUBLISHED.inc()
    layer = get_channel_layer()
    if layer is None:
        return
    groups = {
        "session": session_group(payload["sessionId"]),
        "client": client_group(payload["clientAppId"]),
        "task": task_group(payload["taskId"]),
    }
    try:
        for kind, group in groups.items():
            message = {
                "type": EVENT_MESSAGE_TYPE,
                "group": group,
                "prev": previous[kind],
                "event": payload,
            }
            run_on_server_loop(layer.group_send, group, message)
    except Exception:
        # The event is safe in the log; streams find it when they notice the gap.
        logger.exception("event_announce_failed cursor=%s", payload["id"])


def reset_event(
    session: BoothSession, cursor: str, client_app_id: str | None = None
) -> dict[str, Any]:
    """Return the (unstored) `reset` event telling a client to refetch state and go on."""
    return {
        "id": cursor,
        "type": "reset",
        "timestamp": iso_ms(timezone.now()),
        "sessionId": str(session.pk),
        "clientAppId": client_app_id,
        "taskId": None,
        "jobId": None,
        "cursor": cursor,
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class EventFilter:
    """Which events of a session a reader wants: all of them, or some clients' and tasks'."""

    whole_session: bool = False
    client_app_ids: frozenset[str] = field(default_factory=frozenset)
    task_ids: frozenset[str] = field(default_factory=frozenset)

    def q(self) -> Q:
        if self.whole_session:
            return Q()
        return Q(client_app__client_app_id__in=self.client_app_ids) | Q(task_id__in=self.task_ids)

    def matches(self, payload: dict[str, Any]) -> bool:
        return (
            self.whole_session
            or payload["clientAppId"] in self.client_app_ids
            or payload["taskId"] in self.task_ids
        )

    def groups(self, session_id) -> set[str]:
        """Return the channel-layer groups that carry this filter's events."""
        if self.whole_session:
            return {session_group(session_id)}
        return {client_group(c) for c in self.client_app_ids} | {
            task_group(t) for t in self.task_ids
        }


SESSION_WIDE = EventFilter(whole_session=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class EventPage:
    events: list[Event]
    cursor: str  # where the next read starts
    reset: bool  # the requested cursor was unknown; the read starts at the head
    head: int  # the session's newest sequence number when read


def read_events(
    session: BoothSession,
    cursor: str | int | None,
    event_filter: EventFilter = SESSION_WIDE,
    *,
    limit: int = MAX_EVENTS_PER_READ,
) -> EventPage:
    """Return the filter's events after `cursor` (a cursor string, a seq, or None for all)."""
    # Read the head first: every event up to it is committed (publish_event commits positions
    # in order), so a cursor at the head skips nothing written after this read.
    session.refresh_from_db(fields=["event_seq", "pruned_seq"])
    head = session.event_seq
    if cursor is None:
        after = session.pruned_seq
    elif isinstance(cursor, int):
        after = cursor
    else:
        parsed = parse_cursor(session, cursor)
        if parsed is None:
            return EventPage(events=[], cursor=format_cursor(session, head), reset=True, head=head)
        after = parsed
    query = Event.objects.filter(event_filter.q(), session=session, seq__gt=after, seq__lte=head)
    events = list(query.select_related("session", "client_app").order_by("seq")[:limit])
    next_seq = events[-1].seq if len(events) == limit else head
    return EventPage(
        events=events, cursor=format_cursor(session, next_seq), reset=False, head=next_seq
    )
