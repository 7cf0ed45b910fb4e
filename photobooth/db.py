"""`durable_transaction`, the transaction every state-changing action runs in; `in_db_thread`,
how the background workers reach the database from their event loop.

On PostgreSQL it is `transaction.atomic(durable=True)`. On SQLite (the embedded default) it
also takes a process-wide lock first: SQLite has one writer at a time, and a writer that finds
the database locked waits in SQLite's busy handler, which sleeps in steps of up to 100 ms. With
the queue, the upstream socket and requests all writing from their own threads, those sleeps
added up to hundreds of milliseconds per action; queueing on a lock costs only the wait itself.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection, transaction

logger = logging.getLogger(__name__)

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


# --- Database work of the background workers ----------------------------------------------------

_executor: ThreadPoolExecutor | None = None


def _db_executor() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(
            max_workers=settings.WORKER_DB_THREADS, thread_name_prefix="photobooth-db"
        )
    return _executor


def drop_connection_if_broken() -> None:
    """Close this thread's connection if a failed statement left it unusable.

    For threads that keep their connection between calls (the workers' database threads, the
    webhook store threads): Django's close_if_unusable_or_obsolete() would close it every time,
    since CONN_MAX_AGE is 0 (pooled). The next call reconnects.
    """
    if not connection.errors_occurred:
        return
    connection.errors_occurred = False
    try:
        if not connection.is_usable():
            connection.close()
    except Exception:
        logger.exception("db_connection_close_failed")


def _run_keeping_connection[**P, R](function: Callable[P, R], *args: P.args, **kw: P.kwargs) -> R:
    try:
        return function(*args, **kw)
    finally:
        drop_connection_if_broken()  # each thread keeps its connection between calls


def in_db_thread[**P, R](function: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """Return an async callable that runs `function` in one of the workers' database threads.

    asgiref's default (`sync_to_async`, thread-sensitive) runs every call of a process on one
    shared thread, so a worker's database work went one call at a time, behind one slow write.
    WORKER_DB_THREADS threads (each with its own connection) let lanes, the queue, the inbox
    and the leader write side by side; SQLite writers still queue on the lock above. With
    WORKER_DB_THREADS=0 it falls back to that shared thread (in-process tests: their database
    transaction lives on it).
    """
    if settings.WORKER_DB_THREADS == 0:
        return sync_to_async(function)

    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        loop = asyncio.get_running_loop()
        job = functools.partial(_run_keeping_connection, function, *args, **kwargs)
        return await loop.run_in_executor(_db_executor(), job)

    return call
