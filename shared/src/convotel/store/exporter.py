"""The span exporter that writes finished spans to the store."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import weakref
from collections.abc import Sequence
from functools import partial

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from convotel.store.errors import _SQLITE_ERRORS, StoreError, _retry_while_locked
from convotel.store.rows import _INSERT_SQL, _UNSTORABLE, SpanRow, _storable, span_row
from convotel.store.schema import open_connection, resolve_store_path

logger = logging.getLogger(__name__)

_INSERT_CHUNK = 500  # spans per write transaction: keeps every lock short


# Connections inherited from a parent process: never closed in the child (closing could touch
# the parent's WAL), just kept alive and unused.
_CONNECTIONS_LEFT_BY_FORK: list[sqlite3.Connection] = []


class SQLiteSpanExporter(SpanExporter):
    """Writes finished spans to the SQLite store; meant for ``BatchSpanProcessor``.

    Never raises (``export``, ``force_flush``, ``shutdown``): a failed export returns
    ``SpanExportResult.FAILURE``, logs the reason once (until the store works again) and keeps the
    spans in memory (up to ``max_pending_spans``) to write them on the next export,
    ``force_flush()`` or ``shutdown()``. ``last_error`` holds the latest :class:`StoreError`. A
    span SQLite cannot take never holds up the others: its text that is not valid UTF-8 is stored
    with U+FFFD in place of the bad code points, and a span still unstorable (an integer beyond 64
    bits) is dropped with an error and counted in ``dropped_spans``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        busy_timeout: float = 5.0,
        max_pending_spans: int = 100_000,
    ) -> None:
        self.path = resolve_store_path(path)
        self.last_error: StoreError | None = None
        self.dropped_spans = 0
        self._busy_timeout = busy_timeout
        self._max_pending = max_pending_spans
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._connection_pid = 0
        self._pending: list[SpanRow] = []
        self._failing = False
        self._shut_down = False
        if hasattr(os, "register_at_fork"):
            after_fork = weakref.WeakMethod(self._after_fork_in_child)

            def reset_in_child() -> None:
                method = after_fork()
                if method is not None:
                    method()

            os.register_at_fork(after_in_child=reset_in_child)

    @property
    def pending_spans(self) -> int:
        """Spans accepted but not yet written (non-zero only while the store fails)."""
        return len(self._pending)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            return self._export(spans)
        except Exception as exc:  # noqa: BLE001 - the boundary: never raise into the SDK
            self._report(StoreError(self.path, f"unexpected {exc!r}", "Please report this bug"))
            return SpanExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        if not self._lock.acquire(timeout=timeout_millis / 1000):
            return False
        try:
            return not self._pending or self._write_pending()
        finally:
            self._lock.release()

    def shutdown(self) -> None:
        with self._lock:
            if self._shut_down:
                return
            self._shut_down = True
            if self._pending and not self._write_pending():
                logger.error(
                    "%d spans could not be written before shutdown and are lost: %s",
                    len(self._pending),
                    self.last_error,
                )
            self._close_connection()

    def _export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shut_down:
            logger.debug("export to %s after shutdown ignored", self.path)
            return SpanExportResult.FAILURE
        rows: list[SpanRow] = []
        unconvertible: list[Exception] = []
        for span in spans:  # one span that cannot be converted never holds up the others
            try:
                rows.append(span_row(span))
            except Exception as exc:  # noqa: BLE001 - a bug: reported below, the span dropped
                unconvertible.append(exc)
        with self._lock:
            self._pending.extend(rows)
            overflow = len(self._pending) - self._max_pending
            if overflow > 0:
                del self._pending[:overflow]
                self.dropped_spans += overflow
                logger.error(
                    "span store %s: %d oldest unwritten spans dropped (more than %d pending)",
                    self.path,
                    overflow,
                    self._max_pending,
                )
            ok = self._write_pending()
            if unconvertible:
                self.dropped_spans += len(unconvertible)
                problem = f"unexpected {unconvertible[0]!r}; {len(unconvertible)} spans dropped"
                self._report(StoreError(self.path, problem, "Please report this bug"))
        return SpanExportResult.SUCCESS if ok and not unconvertible else SpanExportResult.FAILURE

    def _write_pending(self) -> bool:
        """Write the pending spans in short transactions; the caller holds ``_lock``."""
        had_pending = bool(self._pending)
        try:
            connection = self._ensure_connection()
            while self._pending:
                chunk = self._pending[:_INSERT_CHUNK]
                unstorable = _retry_while_locked(
                    partial(_insert, connection, chunk), self.path, self._busy_timeout
                )
                del self._pending[: len(chunk)]
                self._drop_unstorable(unstorable)
        except StoreError as error:
            self._close_connection()
            self._report(error)
            return False
        except Exception as exc:  # noqa: BLE001 - a bug; never raise into the SDK or the app
            self._close_connection()
            self._report(StoreError(self.path, f"unexpected {exc!r}", "Please report this bug"))
            return False
        if self._failing and had_pending:
            self._failing = False
            logger.warning("span store %s is writable again; pending spans written", self.path)
        return True

    def _drop_unstorable(self, rows: Sequence[tuple[SpanRow, Exception]]) -> None:
        if not rows:
            return
        self.dropped_spans += len(rows)
        (trace_id, span_id, *_), error = rows[0]
        logger.error(
            "span store %s: %d spans hold a value SQLite cannot store and are dropped "
            "(span %s of trace %s: %s)",
            self.path,
            len(rows),
            span_id,
            trace_id,
            error,
        )

    def _report(self, error: StoreError) -> None:
        self.last_error = error
        if self._failing:
            logger.debug("span store still failing: %s", error)
            return
        self._failing = True
        logger.error(
            "%s (%d spans kept in memory and retried on the next export)",
            error,
            len(self._pending),
        )

    def _ensure_connection(self) -> sqlite3.Connection:
        if self._connection is not None and self._connection_pid != os.getpid():
            _CONNECTIONS_LEFT_BY_FORK.append(self._connection)
            self._connection = None
        if self._connection is None:
            self._connection = open_connection(
                self.path, create=True, busy_timeout=self._busy_timeout
            )
            self._connection_pid = os.getpid()
        return self._connection

    def _close_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and self._connection_pid == os.getpid():
            try:
                connection.close()
            except _SQLITE_ERRORS:
                logger.debug(
                    "span store %s: closing the connection failed", self.path, exc_info=True
                )

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._pending = []  # the parent writes its own spans
        if self._connection is not None:
            _CONNECTIONS_LEFT_BY_FORK.append(self._connection)
            self._connection = None


def _insert(
    connection: sqlite3.Connection, rows: Sequence[SpanRow]
) -> list[tuple[SpanRow, Exception]]:
    """Write ``rows`` in one transaction; returns those SQLite cannot take even repaired."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        try:
            connection.executemany(_INSERT_SQL, rows)
            unstorable = []
        except _UNSTORABLE:  # the rare row with such a value: repair it, write the rest one by one
            unstorable = _insert_one_by_one(connection, rows)
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    return unstorable


def _insert_one_by_one(
    connection: sqlite3.Connection, rows: Sequence[SpanRow]
) -> list[tuple[SpanRow, Exception]]:
    unstorable: list[tuple[SpanRow, Exception]] = []
    for row in rows:  # rows written before the failure are ignored again (INSERT OR IGNORE)
        try:
            try:
                connection.execute(_INSERT_SQL, row)
            except UnicodeEncodeError:
                connection.execute(_INSERT_SQL, _storable(row))
        except _UNSTORABLE as exc:
            unstorable.append((row, exc))
    return unstorable
