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
from datetime import datetime
from functools import partial
from typing import Any
from uuid import UUID

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from jobs_app import log_positions, metrics
from jobs_app.announcer import announce
from jobs_app.groups import client_group, session_group, task_group
from jobs_app.models import Event, Job, Task
from sessions_app.models import BoothSession
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
    return event_payload(
        cursor_prefix=event.session.cursor_prefix,
        seq=event.seq,
        type=event.type,
        created_at=event.created_at,
        session_id=event.session_id,
        client_app_id=event.client_app.client_app_id,
        task_id=event.task_id,
        job_id=event.job_id,
        data=event.data,
    )


def event_payload(
    *,
    cursor_prefix: str,
    seq: int,
    type: str,
    created_at: datetime,
    session_id: UUID | str,
    client_app_id: str,
    task_id: UUID | str,
    job_id: UUID | str | None,
    data: dict[str, Any],
) -> dict[str, Any]:
    """Return the contract's JSON object for an event (stored, or being stored)."""
    return {
        "id": f"{cursor_prefix}-{seq}",
        "type": type,
        "timestamp": iso_ms(created_at),
        "sessionId": str(session_id),
        "clientAppId": client_app_id,
        "taskId": str(task_id),
        "jobId": str(job_id) if job_id else None,
        **data,
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
    if not connection.in_atomic_block:
        raise RuntimeError("publish_event must run inside a transaction")
    position = log_positions.append(task, type, job_id=job.pk if job else None, data=fields)
    task.last_event_seq = position.seq
    # The row is written already (log_positions.append): this is the instance create() returned.
    event = Event(
        id=position.event_id,
        session_id=task.session_id,
        seq=position.seq,
        type=type,
        client_app_id=task.client_app_id,
        task_id=task.pk,
        job=job,
        data=fields,
        created_at=position.created_at,
    )
    event._state.adding = False
    event._state.db = connection.alias
    payload = event_payload(
        cursor_prefix=position.cursor_prefix,
        seq=position.seq,
        type=type,
        created_at=position.created_at,
        session_id=task.session_id,
        client_app_id=position.client_app_id,
        task_id=task.pk,
        job_id=job.pk if job else None,
        data=fields,
    )
    transaction.on_commit(partial(announce_event_rollback_unsafe, payload, position.previous))
    return event


def announce_event_rollback_unsafe(payload: dict[str, Any], previous: dict[str, int]) -> None:
    """Send the event to its session, client and task groups, with each group's previous seq.

    Only call it after commit (publish_event does): a reader woken for an event that was then
    rolled back would find nothing, or worse, a later event under the same cursor. It does not
    wait for the channel layer (see jobs_app.announcer). One message goes to the three groups
    together: a process with streams in several of them receives it once (jobs_app.stream_hub).
    """
    metrics.EVENTS_PUBLISHED.inc()
    groups = {
        "session": session_group(payload["sessionId"]),
        "client": client_group(payload["clientAppId"]),
        "task": task_group(payload["taskId"]),
    }
    message = {
        "type": EVENT_MESSAGE_TYPE,
        "prevs": {group: previous[kind] for kind, group in groups.items()},
        "event": payload,
    }
    announce(payload["sessionId"], payload["id"], (tuple(groups.values()), message))


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
