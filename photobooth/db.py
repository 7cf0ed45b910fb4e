"""`durable_transaction`: the transaction every state-changing action runs in.

On PostgreSQL it is `transaction.atomic(durable=True)`. On SQLite (the embedded default) it
also takes a process-wide lock first: SQLite has one writer at a time, and a writer that finds
the database locked waits in SQLite's busy handler, which sleeps in steps of up to 100 ms. With
the queue, the upstream socket and requests all writing from their own threads, those sleeps
added up to hundreds of milliseconds per action; queueing on a lock costs only the wait itself.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from contextlib import contextmanager

from django.db import connection, transaction

_sqlite_writer = threading.RLock()


@contextmanager
def _write_lock():
    if connection.vendor == "sqlite":
        with _sqlite_writer:
            yield
    else:
        yield


def durable_transaction[**P, R](function: Callable[P, R]) -> Callable[P, R]:
    """Run `function` in its own durable transaction (serialized among writers on SQLite)."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with _write_lock(), transaction.atomic(durable=True):
            return function(*args, **kwargs)

    return wrapper
