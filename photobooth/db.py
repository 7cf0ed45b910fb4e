"""`durable_transaction`, the transaction every state-changing action runs in; `in_db_thread`,
how the background workers reach the database from their event loop.

`durable_transaction` is `transaction.atomic(durable=True)`. On SQLite (the embedded default)
every writer of the process, actions or not, also queues on one process-wide lock, held from
BEGIN to COMMIT or ROLLBACK: the lock lives in the database backend
(photobooth/sqlite_writer/base.py), where no write can go around it. SQLite has one writer at
a time, and a writer that finds the database locked waits in SQLite's busy handler, which
sleeps in steps of up to 100 ms and fails after the busy timeout; queueing on a lock costs
only the wait itself. The lock is free again before on_commit callbacks run.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction

logger = logging.getLogger(__name__)


def durable_transaction[**P, R](function: Callable[P, R]) -> Callable[P, R]:
    """Run `function` in its own durable transaction (serialized among writers on SQLite).

    Its on_commit callbacks run after the commit, outside the SQLite writer lock: they may
    wait for the event loop without holding up the process's other writers.
    """

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with transaction.atomic(durable=True):
            return function(*args, **kwargs)

    return wrapper


def is_transient(exc: BaseException) -> bool:
    """Return whether `exc` is the database's trouble, not the statement's: worth a retry.

    A locked SQLite database (a writer waited out the busy timeout), a lost or refused
    connection, an exhausted pool, a PostgreSQL serialization failure.
    """
    return isinstance(exc, OperationalError | InterfaceError)


# --- Database work of the background workers ----------------------------------------------------

# One pool per kind of work, so that slow writes never hold up the streams' reads.
_POOL_SIZES = {"worker": "WORKER_DB_THREADS", "streams": "STREAM_DB_THREADS"}
_executors: dict[str, ThreadPoolExecutor] = {}
_executors_lock = threading.Lock()


def _pool_size(pool: str) -> int:
    return getattr(settings, _POOL_SIZES[pool])


def _db_executor(pool: str) -> ThreadPoolExecutor:
    executor = _executors.get(pool)
    if executor is None:
        with _executors_lock:
            executor = _executors.get(pool)
            if executor is None:
                executor = _executors[pool] = ThreadPoolExecutor(
                    max_workers=_pool_size(pool), thread_name_prefix=f"photobooth-db-{pool}"
                )
    return executor


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


def in_db_thread[**P, R](
    function: Callable[P, R], *, pool: str = "worker"
) -> Callable[P, Awaitable[R]]:
    """Return an async callable that runs `function` in one of `pool`'s database threads.

    asgiref's default (`sync_to_async`, thread-sensitive) runs every call of a process on one
    shared thread, so database work went one call at a time, behind one slow write. Each pool
    ("worker": WORKER_DB_THREADS, for lanes, the queue, the inbox and the leader; "streams":
    STREAM_DB_THREADS, for the streams' log reads) has threads of its own, each keeping its
    connection; SQLite writers still queue on the lock above. A pool size of 0 falls back to
    that shared thread (in-process tests: their database transaction lives on it).
    """

    @functools.wraps(function)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        if _pool_size(pool) == 0:  # read per call: tests change it after import
            return await sync_to_async(function)(*args, **kwargs)
        loop = asyncio.get_running_loop()
        job = functools.partial(_run_keeping_connection, function, *args, **kwargs)
        return await loop.run_in_executor(_db_executor(pool), job)

    return call
