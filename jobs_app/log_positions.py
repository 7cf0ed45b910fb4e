"""Where the next event of a session's log goes, what came before it in each group, and the row.

Publishing an event moves three counters: the session's `event_seq` (the log's head), and the
`last_event_seq` of the event's client app and of its task. Group messages carry the previous
value of each, so streams can tell a lost message from an event of another group.

This is the hot path of every state change (a 16-image task publishes about 150 events), so
it is two statements on PostgreSQL, not the nine the ORM would take: one `UPDATE ... RETURNING`
that bumps the head and takes the session's row lock, then one that moves both pointers,
returns their previous values and inserts the event row. The pointers cannot be read in the
first statement: under READ COMMITTED a statement's snapshot is taken before it waits for the
row lock, so it could read pointers older than those of the publisher it waited for. The
second statement starts after the lock is held, so its snapshot has every earlier publisher's
commit. On SQLite the second is four statements, cheap in-process calls.

The SQL text is built once per database vendor: building it is a measurable share of a publish.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.backends.postgresql.base import ServerBindingCursor
from django.db.models import Model
from django.utils import timezone

from jobs_app.models import Event, Job, Task
from sessions_app.models import BoothSession, ClientApp


@dataclass(frozen=True, slots=True)
class LogPosition:
    seq: int  # the new event's sequence number in its session's log
    cursor_prefix: str  # the session's cursor prefix
    client_app_id: str  # the task's clientAppId (the string clients know)
    previous: dict[str, int]  # the previous seq of the session, client and task groups
    event_id: int  # the primary key of the event row written there
    created_at: datetime  # the event's timestamp, read once the session's row lock was held


@dataclass(frozen=True, slots=True)
class _Statements:
    head: str  # bump the session's head (and lock its row)
    pointers: str  # PostgreSQL: read and move both pointers, insert the event
    read_pointers: str  # SQLite: the four statements that do the same
    move_client: str
    move_task: str
    insert: str


# The event row's columns, in the order `append` passes their values. If you add a field to
# Event, add it here and in `append`.
_EVENT_COLUMNS = ("session_id", "seq", "type", "client_app_id", "task_id", "job_id", "data",
                  "created_at")  # fmt: skip


@functools.cache
def _statements(vendor: str) -> _Statements:
    quote = connection.ops.quote_name
    session, client, task, event = (
        quote(model._meta.db_table) for model in (BoothSession, ClientApp, Task, Event)
    )
    columns = ", ".join(quote(Event._meta.get_field(name).column) for name in _EVENT_COLUMNS)
    values = ", ".join(["%s"] * len(_EVENT_COLUMNS))
    insert = f"INSERT INTO {event} ({columns}) VALUES ({values}) RETURNING id"
    return _Statements(
        head=f"UPDATE {session} SET event_seq = event_seq + 1 WHERE id = %s "
        "RETURNING event_seq, cursor_prefix",
        # Every sub-statement sees the snapshot taken when the statement began: the SELECTs
        # read the pointers as they were before the UPDATEs beside them.
        pointers=f"WITH c AS (SELECT client_app_id, last_event_seq FROM {client} WHERE id = %s), "
        f"t AS (SELECT last_event_seq FROM {task} WHERE id = %s), "
        f"uc AS (UPDATE {client} SET last_event_seq = %s WHERE id = %s), "
        f"ut AS (UPDATE {task} SET last_event_seq = %s WHERE id = %s), "
        f"e AS ({insert}) "
        "SELECT c.client_app_id, c.last_event_seq, t.last_event_seq, e.id FROM c, t, e",
        read_pointers=f"SELECT c.client_app_id, c.last_event_seq, t.last_event_seq "
        f"FROM {client} c, {task} t WHERE c.id = %s AND t.id = %s",
        move_client=f"UPDATE {client} SET last_event_seq = %s WHERE id = %s",
        move_task=f"UPDATE {task} SET last_event_seq = %s WHERE id = %s",
        insert=insert,
    )


def _cursor() -> Any:
    """A cursor for the statements of a publish; on PostgreSQL, one that binds on the server.

    Django's PostgreSQL cursors bind parameters on the client: psycopg quotes every value into
    the SQL text in Python, and the server parses the longer text. These two statements run
    ~150 times per 16-image task with 1 and 14 parameters, so they go with the values apart
    (psycopg's server-side binding; nothing is prepared, so any pooler works): about 10% more
    events/s when the machine is busy (docs/performance.md). Wrapped as Django wraps its own
    cursors, so query logging, execute wrappers and error translation still apply.
    """
    if connection.vendor != "postgresql":
        return connection.cursor()
    connection.ensure_connection()
    cursor = ServerBindingCursor(connection.connection)
    if connection.queries_logged:
        return connection.make_debug_cursor(cursor)
    return connection.make_cursor(cursor)


@functools.cache
def _field_prep(name: str) -> Callable[[Any, Any], Any]:
    return Event._meta.get_field(name).get_db_prep_save


def _db_value(model: type[Model], value: Any) -> Any:
    return model._meta.pk.get_db_prep_value(value, connection)


def append(task: Task, type: str, *, job_id: Any, data: dict[str, Any]) -> LogPosition:
    """Write an event of the task at the next position of its session's log (inside the
    caller's transaction) and return where it went.

    The first statement locks the session row until the transaction ends, so everything the
    second one reads was written by publishers that already committed: the values are exact.
    """
    statements = _statements(connection.vendor)
    session_id = _db_value(BoothSession, task.session_id)
    task_id = _db_value(Task, task.pk)
    client_pk = task.client_app_id
    with _cursor() as cursor:
        cursor.execute(statements.head, [session_id])
        seq, cursor_prefix = cursor.fetchone()
        # After the lock wait, so timestamps follow sequence numbers like commits do.
        created_at = timezone.now()
        row = [
            session_id,
            seq,
            type,
            client_pk,
            task_id,
            None if job_id is None else _db_value(Job, job_id),
            _field_prep("data")(data, connection),
            _field_prep("created_at")(created_at, connection),
        ]
        if connection.vendor == "postgresql":
            cursor.execute(
                statements.pointers, [client_pk, task_id, seq, client_pk, seq, task_id, *row]
            )
            client_app_id, client_prev, task_prev, event_id = cursor.fetchone()
        else:
            cursor.execute(statements.read_pointers, [client_pk, task_id])
            client_app_id, client_prev, task_prev = cursor.fetchone()
            cursor.execute(statements.move_client, [seq, client_pk])
            cursor.execute(statements.move_task, [seq, task_id])
            cursor.execute(statements.insert, row)
            (event_id,) = cursor.fetchone()
    previous = {"session": seq - 1, "client": client_prev, "task": task_prev}
    return LogPosition(seq, cursor_prefix, client_app_id, previous, event_id, created_at)
