"""SQLite with one writer at a time per process: the ENGINE of the embedded default.

SQLite lets one connection write at a time. A writer that finds the database locked waits in
SQLite's busy handler, which sleeps in steps of up to 100 ms and gives up with "database is
locked" once the busy timeout has passed. Under load (the queue, the upstream socket, the
webhook store and requests all writing from threads of their own) the writers that lost those
races kept losing them while the lock went from one winner to the next, and failed after the
timeout; a lock taken only around some writes (actions) made it worse, since its holders then
waited in the busy handler for the writers that went around it (Django's session saves,
autocommit updates). So here every writer of the process queues on one lock instead, taken
where SQLite's write lock is taken and given back where SQLite's is:

- a transaction (`BEGIN IMMEDIATE`: OPTIONS["transaction_mode"], so it never upgrades from
  reader to writer) holds it from BEGIN until its COMMIT or ROLLBACK. Django runs on_commit
  callbacks (announcements, doorbell rings) after that, when the lock is free again;
- a statement outside a transaction that may write (anything but SELECT, EXPLAIN or PRAGMA:
  Django's autocommit UPDATE, INSERT and DELETE, raw SQL) holds it while it runs.

Reads outside a transaction never take it (WAL: readers never wait for the writer). A writer
waits for the lock at most the busy timeout (OPTIONS["timeout"]) and then fails with
OperationalError("database is locked"), as SQLite would. Other processes (management
commands, a second server) still meet this one in SQLite's busy handler.
"""

from __future__ import annotations

import threading

from django.db.backends.sqlite3 import base

Database = base.Database

# Re-entrant: BEGIN runs through a cursor while the transaction starting it holds the lock.
_writer = threading.RLock()
_READ_ONLY = ("SELECT", "EXPLAIN", "PRAGMA")
DEFAULT_TIMEOUT = 5.0  # Python's sqlite3 default busy timeout, when OPTIONS sets none


def _take_writer(timeout: float) -> None:
    if not _writer.acquire(timeout=timeout):
        raise Database.OperationalError("database is locked")


def _may_write(sql: str) -> bool:
    return not sql.lstrip()[:7].upper().startswith(_READ_ONLY)


class SQLiteCursorWrapper(base.SQLiteCursorWrapper):
    """Take the process's writer lock around a statement that may write outside a transaction."""

    writer_timeout = DEFAULT_TIMEOUT

    def execute(self, query, params=None):
        if self.connection.in_transaction or not _may_write(query):
            return super().execute(query, params)
        _take_writer(self.writer_timeout)
        try:
            return super().execute(query, params)
        finally:
            _writer.release()

    def executemany(self, query, param_list):
        if self.connection.in_transaction or not _may_write(query):
            return super().executemany(query, param_list)
        _take_writer(self.writer_timeout)
        try:
            return super().executemany(query, param_list)
        finally:
            _writer.release()


class DatabaseWrapper(base.DatabaseWrapper):
    """Django's SQLite backend whose writers queue on one lock per process (see above)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.holds_writer = False  # this connection's transaction holds the writer lock

    @property
    def writer_timeout(self) -> float:
        return float(self.settings_dict["OPTIONS"].get("timeout", DEFAULT_TIMEOUT))

    def create_cursor(self, name=None):
        cursor = self.connection.cursor(factory=SQLiteCursorWrapper)
        cursor.writer_timeout = self.writer_timeout
        return cursor

    def _start_transaction_under_autocommit(self) -> None:
        if not self.holds_writer:
            with self.wrap_database_errors:
                _take_writer(self.writer_timeout)
            self.holds_writer = True
        try:
            super()._start_transaction_under_autocommit()
        except BaseException:
            self._give_writer_back()
            raise

    def _commit(self):
        try:
            return super()._commit()
        finally:
            self._give_writer_back_unless_in_transaction()

    def _rollback(self):
        try:
            return super()._rollback()
        finally:
            self._give_writer_back_unless_in_transaction()

    def _set_autocommit(self, autocommit: bool) -> None:
        super()._set_autocommit(autocommit)
        if autocommit:  # the end of every atomic block, also after a failed COMMIT
            self._give_writer_back_unless_in_transaction()

    def _close(self):
        try:
            return super()._close()
        finally:
            self._give_writer_back()  # closing a connection rolls its transaction back

    def _give_writer_back_unless_in_transaction(self) -> None:
        if not self.holds_writer:
            return
        try:
            in_transaction = self.connection is not None and self.connection.in_transaction
        except Database.Error:  # closed or broken: no transaction left to protect
            in_transaction = False
        if not in_transaction:
            self._give_writer_back()

    def _give_writer_back(self) -> None:
        if self.holds_writer:
            self.holds_writer = False
            _writer.release()
