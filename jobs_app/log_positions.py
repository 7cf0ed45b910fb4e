"""Where the next event of a session's log goes, and what came before it in each group.

Publishing an event moves three counters: the session's `event_seq` (the log's head), and the
`last_event_seq` of the event's client app and of its task. Group messages carry the previous
value of each, so streams can tell a lost message from an event of another group.

This is the hot path of every state change (a 16-image task publishes about 150 events), so
it is two statements, not the eight the ORM would take: one `UPDATE ... RETURNING` that bumps
the head and takes the session's row lock, then one that moves both pointers and returns
their previous values. On SQLite the second is three statements, cheap in-process calls.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connection

from jobs_app.models import Task
from sessions_app.models import BoothSession, ClientApp


@dataclass(frozen=True, slots=True)
class LogPosition:
    seq: int  # the new event's sequence number in its session's log
    cursor_prefix: str  # the session's cursor prefix
    client_app_id: str  # the task's clientAppId (the string clients know)
    previous: dict[str, int]  # the previous seq of the session, client and task groups


def _table(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _db_value(model, value):
    return model._meta.pk.get_db_prep_value(value, connection)


def advance(task: Task) -> LogPosition:
    """Allocate the next position of the task's session log (inside the caller's transaction).

    The first statement locks the session row until the transaction ends, so everything the
    second one reads was written by publishers that already committed: the values are exact.
    """
    session_id = _db_value(BoothSession, task.session_id)
    task_id = _db_value(Task, task.pk)
    client_pk = task.client_app_id
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {_table(BoothSession)} SET event_seq = event_seq + 1 "
            "WHERE id = %s RETURNING event_seq, cursor_prefix",
            [session_id],
        )
        seq, cursor_prefix = cursor.fetchone()
        if connection.vendor == "postgresql":
            # Every sub-statement sees the snapshot taken when the statement began: the
            # SELECTs read the pointers as they were before the UPDATEs beside them.
            cursor.execute(
                f"WITH c AS (SELECT client_app_id, last_event_seq FROM {_table(ClientApp)} "
                "WHERE id = %s), "
                f"t AS (SELECT last_event_seq FROM {_table(Task)} WHERE id = %s), "
                f"uc AS (UPDATE {_table(ClientApp)} SET last_event_seq = %s WHERE id = %s), "
                f"ut AS (UPDATE {_table(Task)} SET last_event_seq = %s WHERE id = %s) "
                "SELECT c.client_app_id, c.last_event_seq, t.last_event_seq FROM c, t",
                [client_pk, task_id, seq, client_pk, seq, task_id],
            )
            client_app_id, client_prev, task_prev = cursor.fetchone()
        else:
            cursor.execute(
                f"SELECT c.client_app_id, c.last_event_seq, t.last_event_seq "
                f"FROM {_table(ClientApp)} c, {_table(Task)} t WHERE c.id = %s AND t.id = %s",
                [client_pk, task_id],
            )
            client_app_id, client_prev, task_prev = cursor.fetchone()
            cursor.execute(
                f"UPDATE {_table(ClientApp)} SET last_event_seq = %s WHERE id = %s",
                [seq, client_pk],
            )
            cursor.execute(
                f"UPDATE {_table(Task)} SET last_event_seq = %s WHERE id = %s", [seq, task_id]
            )
    previous = {"session": seq - 1, "client": client_prev, "task": task_prev}
    return LogPosition(seq, cursor_prefix, client_app_id, previous)
