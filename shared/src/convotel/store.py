"""The embedded SQLite span store: a span exporter that writes finished spans to one file, and a
reader that turns them back into sessions.

Point an application at it with::

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(SQLiteSpanExporter()))

The file (``$CONVOTEL_STORE``, else ``.convotel/spans.sqlite3`` under the working directory) is
safe for several writers at once (threads and processes): WAL journal, a busy timeout, one short
transaction per batch, retries while the database is locked. Spans that cannot be written yet stay
in memory and are retried on the next export, so a lock held for a while loses nothing; a value
SQLite cannot take never holds up the others (text that is not valid UTF-8, such as a lone
surrogate, is stored with U+FFFD in its place). The schema is versioned with ``PRAGMA
user_version`` and migrated forward in place; a file this version cannot read (corrupt, newer, not a
convotel store) raises a :class:`StoreError` naming the file and what to do, and is never modified.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from openinference.semconv.trace import SpanAttributes
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.util.types import AttributeValue

from convotel.json_encoding import valid_unicode
from convotel.sessions import Session, SpanEvent, SpanRecord, group_by_session

__all__ = [
    "DEFAULT_STORE_PATH",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "STORE_ENV_VAR",
    "Migration",
    "SQLiteSpanExporter",
    "SpanStore",
    "StoreCorruptError",
    "StoreError",
    "StoreLockedError",
    "StoreNotFoundError",
    "StoreSchemaError",
    "default_store_path",
]

logger = logging.getLogger(__name__)

STORE_ENV_VAR = "CONVOTEL_STORE"
DEFAULT_STORE_PATH = Path(".convotel") / "spans.sqlite3"
# Written to the SQLite header (PRAGMA application_id) so a foreign database is recognised.
APPLICATION_ID = 0x43565453  # "CVTS"

_INSERT_CHUNK = 500  # spans per write transaction: keeps every lock short
_QUERY_CHUNK = 400  # ids per `IN (...)` clause
_SESSION_PAGE = 100  # sessions assembled at a time when listing
_MAX_DETAIL = 200  # characters of SQLite's message quoted in an error

# What the sqlite3 module raises for a file it cannot use. It raises UnicodeDecodeError instead of
# sqlite3.Error when SQLite's message quotes bytes that are not UTF-8 (e.g. a damaged schema).
_SQLITE_ERRORS = (sqlite3.Error, UnicodeDecodeError)
# What binding a value SQLite cannot store raises: text that is not valid UTF-8 (a lone
# surrogate), an integer beyond 64 bits, a value over SQLite's size limit.
_UNSTORABLE = (UnicodeEncodeError, OverflowError, sqlite3.DataError)
# A JSON escape of a UTF-16 surrogate (text written by another program may hold lone ones).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")

_T = TypeVar("_T")


@dataclass(frozen=True)
class Migration:
    """One step of the schema's history: run ``statements`` to go from ``version - 1``."""

    version: int
    description: str
    statements: tuple[str, ...]


def _backfill(column: str, attribute: str) -> str:
    value = f"json_extract(attributes, '$.\"{attribute}\"')"
    return f"UPDATE spans SET {column} = NULLIF(TRIM({value}), '')"


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "spans table",
        (
            """
            CREATE TABLE spans (
                trace_id TEXT NOT NULL,
                span_id TEXT NOT NULL,
                parent_span_id TEXT,
                name TEXT NOT NULL,
                kind TEXT NOT NULL,
                span_kind TEXT,
                start_time_ns INTEGER NOT NULL,
                end_time_ns INTEGER NOT NULL,
                status_code TEXT NOT NULL,
                status_message TEXT,
                attributes TEXT NOT NULL,
                events TEXT NOT NULL,
                resource_attributes TEXT NOT NULL,
                scope_name TEXT,
                UNIQUE (trace_id, span_id)
            )
            """,
            "CREATE INDEX spans_by_start_time ON spans (start_time_ns)",
        ),
    ),
    Migration(
        2,
        "indexed session.id / user.id columns, backfilled from the attributes",
        (
            "ALTER TABLE spans ADD COLUMN session_id TEXT",
            "ALTER TABLE spans ADD COLUMN user_id TEXT",
            _backfill("session_id", SpanAttributes.SESSION_ID),
            _backfill("user_id", SpanAttributes.USER_ID),
            "CREATE INDEX spans_by_session ON spans (session_id, end_time_ns)",
            "CREATE INDEX spans_by_user ON spans (user_id, session_id)",
        ),
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1].version

_COLUMNS = (
    "trace_id",
    "span_id",
    "parent_span_id",
    "name",
    "kind",
    "span_kind",
    "start_time_ns",
    "end_time_ns",
    "status_code",
    "status_message",
    "attributes",
    "events",
    "resource_attributes",
    "scope_name",
    "session_id",
    "user_id",
)
_INSERT_SQL = (
    f"INSERT OR IGNORE INTO spans ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _COLUMNS)})"
)
_SELECT_SQL = f"SELECT {', '.join(_COLUMNS)} FROM spans"

SpanRow = tuple[Any, ...]


# --------------------------------------------------------------------------------------- errors


class StoreError(Exception):
    """The span store cannot be used; the message names the file and what to do about it."""

    def __init__(self, path: Path, problem: str, advice: str) -> None:
        super().__init__(f"convotel span store {path}: {problem}. {advice}")
        self.path = path
        self.problem = problem
        self.advice = advice


class StoreNotFoundError(StoreError):
    """No store file at the path (readers never create one)."""


class StoreCorruptError(StoreError):
    """The file is not a readable SQLite database."""


class StoreLockedError(StoreError):
    """Another connection kept the database locked for longer than the busy timeout."""


class StoreSchemaError(StoreError):
    """The file's schema is newer than this convotel, or it is not a convotel store."""


def _not_found(path: Path) -> StoreNotFoundError:
    return StoreNotFoundError(
        path,
        "no span store here yet",
        "Run `convotel demo`, or point an application at this file with "
        "SQLiteSpanExporter (see the README), or choose another file with --store PATH or "
        f"${STORE_ENV_VAR}",
    )


def _corrupt(path: Path, detail: object) -> StoreCorruptError:
    return StoreCorruptError(
        path,
        f"the file is not a readable SQLite database ({detail})",
        f"It was left untouched. Move it aside (mv '{path}' '{path}.broken') and convotel starts "
        f"a new store there, or use another file with --store PATH or ${STORE_ENV_VAR}; "
        f"`sqlite3 '{path}.broken' .recover` may salvage its rows",
    )


def _locked(path: Path, detail: object) -> StoreLockedError:
    return StoreLockedError(
        path,
        f"the database stayed locked by another connection ({detail})",
        "Close or wait for the program holding the lock and retry; the exporter keeps unwritten "
        "spans in memory and writes them on its next export",
    )


def _newer_schema(path: Path, version: int) -> StoreSchemaError:
    return StoreSchemaError(
        path,
        f"it was written by a newer convotel (schema version {version}; this version "
        f"understands up to {SCHEMA_VERSION})",
        "It was left untouched. Upgrade convotel (pip install -U convotel) or use another file "
        f"with --store PATH or ${STORE_ENV_VAR}",
    )


def _foreign(path: Path, what: str) -> StoreSchemaError:
    return StoreSchemaError(
        path,
        f"it is not a convotel span store ({what})",
        f"It was left untouched. Use another file with --store PATH or ${STORE_ENV_VAR}",
    )


def _message(error: Exception) -> str:
    """SQLite's message, on one line and short (it may quote a whole damaged schema)."""
    if isinstance(error, UnicodeDecodeError) and isinstance(error.object, bytes):
        text = error.object.decode("utf-8", "replace")  # the message SQLite could not hand over
    else:
        text = str(error)
    text = " ".join(text.split())
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"


def _translate(error: Exception, path: Path) -> StoreError:
    """Map an error from the sqlite3 module to the typed error a user can act on."""
    code = str(getattr(error, "sqlite_errorname", "") or "")
    detail = _message(error)
    text = detail.lower()
    if code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text or "busy" in text:
        return _locked(path, detail)
    if (
        code.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))
        or isinstance(error, UnicodeDecodeError)  # text in the file that is not UTF-8
        or "not a database" in text
        or "malformed" in text
    ):
        return _corrupt(path, detail)
    return StoreError(
        path,
        f"SQLite error: {detail}",
        "Check that the file and its folder are readable and writable and the disk is not full",
    )


def _retry_while_locked(operation: Callable[[], _T], path: Path, patience: float) -> _T:
    """Run ``operation``; while SQLite reports the database locked, back off and retry.

    Each attempt already waits up to the connection's busy timeout; ``patience`` seconds of
    retries on top cover the cases SQLite's busy handler does not (e.g. WAL recovery).
    """
    deadline = time.monotonic() + patience
    delay = 0.005
    while True:
        try:
            return operation()
        except _SQLITE_ERRORS as exc:
            error = _translate(exc, path)
            remaining = deadline - time.monotonic()
            if not isinstance(error, StoreLockedError) or remaining <= 0:
                raise error from exc
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.25)


# ------------------------------------------------------------------------------- opening the file


def default_store_path() -> Path:
    """``$CONVOTEL_STORE`` if set, else ``.convotel/spans.sqlite3`` under the working directory."""
    configured = os.environ.get(STORE_ENV_VAR, "").strip()
    return Path(configured).expanduser() if configured else Path.cwd() / DEFAULT_STORE_PATH


def resolve_store_path(path: str | os.PathLike[str] | None) -> Path:
    """An absolute store path (so a later ``chdir`` does not move the store)."""
    chosen = default_store_path() if path is None else Path(path).expanduser()
    return chosen.absolute()


def open_connection(path: Path, *, create: bool, busy_timeout: float) -> sqlite3.Connection:
    """Open the store, creating or migrating its schema; raises :class:`StoreError`."""
    if create:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                path, f"cannot create its folder ({exc})", "Choose a writable location"
            ) from exc
    elif not path.exists():
        raise _not_found(path)
    target = str(path) if create else path.as_uri() + "?mode=rw"
    try:
        connection = sqlite3.connect(
            target,
            timeout=busy_timeout,
            isolation_level=None,
            check_same_thread=False,
            uri=not create,
        )
    except _SQLITE_ERRORS as exc:
        raise _translate(exc, path) from exc
    connection.text_factory = _decode_text
    try:
        _retry_while_locked(lambda: _prepare(connection, path), path, busy_timeout)
    except BaseException:
        connection.close()
        raise
    return connection


def _decode_text(data: bytes) -> str:
    """SQLite text as str; bytes that are not UTF-8 (a damaged or foreign row) become U+FFFD."""
    return data.decode("utf-8", "replace")


def _header(connection: sqlite3.Connection) -> tuple[int, int]:
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    application_id = connection.execute("PRAGMA application_id").fetchone()[0]
    return int(version), int(application_id)


def _check_header(path: Path, version: int, application_id: int) -> None:
    if application_id not in (0, APPLICATION_ID):
        raise _foreign(path, f"SQLite application id {application_id:#x}")
    if version > SCHEMA_VERSION:
        raise _newer_schema(path, version)
    if version and application_id == 0:
        raise _foreign(path, f"user_version {version} set by another program")


def _prepare(connection: sqlite3.Connection, path: Path) -> None:
    """Check the header, migrate an older schema, then switch to WAL (never touches a file it
    cannot read)."""
    version, application_id = _header(connection)
    _check_header(path, version, application_id)
    if version < SCHEMA_VERSION or application_id != APPLICATION_ID:
        _migrate(connection, path)
    if connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")


def _migrate(connection: sqlite3.Connection, path: Path) -> None:
    connection.execute("BEGIN IMMEDIATE")
    try:
        version, application_id = _header(connection)  # another writer may have migrated
        _check_header(path, version, application_id)
        if version == 0:
            tables = [
                row[0]
                for row in connection.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
                )
            ]
            if tables:
                raise _foreign(path, f"it already has tables: {', '.join(tables)}")
        for migration in MIGRATIONS:
            if migration.version > version:
                for statement in migration.statements:
                    connection.execute(statement)
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    if version:
        logger.info("migrated span store %s from schema %d to %d", path, version, SCHEMA_VERSION)


# ------------------------------------------------------------------------------ span <-> row


def _jsonable(value: object) -> object:
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, Iterable):
        return [_jsonable(item) for item in value]
    return str(value)


def _dumps(value: object) -> str:
    return json.dumps(_jsonable(value), ensure_ascii=False, separators=(",", ":"))


def _storable(row: SpanRow) -> SpanRow:
    """``row`` with every text column made valid UTF-8 (see :func:`_valid_text`)."""
    return tuple(valid_unicode(value) if isinstance(value, str) else value for value in row)


def _valid_strings(value: Any) -> Any:
    """Loaded JSON with every string made valid Unicode."""
    if isinstance(value, str):
        return valid_unicode(value)
    if isinstance(value, list):
        return [_valid_strings(item) for item in value]
    if isinstance(value, dict):
        return {valid_unicode(key): _valid_strings(item) for key, item in value.items()}
    return value


def _loads(text: str) -> Any:
    """A JSON column; lone surrogates escaped in it (by another writer) come back as U+FFFD."""
    loaded = json.loads(text)
    return _valid_strings(loaded) if _SURROGATE_ESCAPE.search(text) else loaded


def _attributes_from_json(text: str) -> dict[str, AttributeValue]:
    loaded = _loads(text)
    if not isinstance(loaded, dict):
        return {}
    return {str(key): _tuples(value) for key, value in loaded.items()}


def _tuples(value: Any) -> Any:
    """JSON arrays back to tuples, as the OpenTelemetry SDK hands out sequence attributes."""
    if isinstance(value, list):
        return tuple(_tuples(item) for item in value)
    return value


def span_row(span: ReadableSpan) -> SpanRow:
    """The store row for one finished span."""
    record = SpanRecord.from_readable_span(span)
    events = [
        {"name": event.name, "time_ns": event.time_ns, "attributes": event.attributes}
        for event in record.events
    ]
    scope = span.instrumentation_scope
    return (
        record.trace_id,
        record.span_id,
        record.parent_id,
        record.name,
        record.kind,
        record.span_kind,
        record.start_ns,
        record.end_ns,
        record.status_code,
        record.status_message,
        _dumps(record.attributes),
        _dumps(events),
        _dumps(record.resource_attributes),
        scope.name if scope is not None else None,
        record.session_id,
        record.user_id,
    )


def record_from_row(row: Sequence[Any]) -> SpanRecord:
    """Turn a row selected with the store's column order back into a :class:`SpanRecord`."""
    values = dict(zip(_COLUMNS, row, strict=True))
    events = tuple(
        SpanEvent(
            name=str(event.get("name", "")),
            time_ns=int(event.get("time_ns", 0)),
            attributes={
                str(key): _tuples(value) for key, value in (event.get("attributes") or {}).items()
            },
        )
        for event in _loads(values["events"])
        if isinstance(event, dict)
    )
    return SpanRecord(
        trace_id=values["trace_id"],
        span_id=values["span_id"],
        parent_id=values["parent_span_id"],
        name=values["name"],
        start_ns=values["start_time_ns"],
        end_ns=values["end_time_ns"],
        status_code=values["status_code"],
        status_message=values["status_message"],
        kind=values["kind"],
        attributes=_attributes_from_json(values["attributes"]),
        events=events,
        resource_attributes=_attributes_from_json(values["resource_attributes"]),
    )


# ------------------------------------------------------------------------------------ exporter

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


# -------------------------------------------------------------------------------------- reader


def _time_ns(moment: datetime | None) -> int | None:
    return None if moment is None else round(moment.timestamp() * 1_000_000) * 1000


def _chunks(items: Sequence[_T], size: int) -> Iterable[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class SpanStore:
    """Reads spans and sessions from a store file (migrating an older schema in place)."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, busy_timeout: float = 5.0):
        self.path = resolve_store_path(path)
        self._busy_timeout = busy_timeout
        self._connection = open_connection(self.path, create=False, busy_timeout=busy_timeout)

    def __enter__(self) -> SpanStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._connection.close()

    def _query(self, sql: str, parameters: Sequence[object] = ()) -> list[Any]:
        def run() -> list[Any]:
            try:
                return self._connection.execute(sql, parameters).fetchall()
            except UnicodeEncodeError:  # e.g. an id from argv with undecodable bytes
                repaired = [valid_unicode(p) if isinstance(p, str) else p for p in parameters]
                return self._connection.execute(sql, repaired).fetchall()

        return _retry_while_locked(run, self.path, self._busy_timeout)

    def _record(self, row: Sequence[Any]) -> SpanRecord:
        try:
            return record_from_row(row)
        except (ValueError, TypeError, AttributeError) as exc:  # a damaged row
            detail = f"span {row[1]!r} of trace {row[0]!r} cannot be read: {exc}"
            raise _corrupt(self.path, detail) from exc

    def span_count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM spans")[0][0])

    def spans(self, trace_ids: Iterable[str] | None = None) -> list[SpanRecord]:
        """All spans, or those of the given traces, in insertion order."""
        if trace_ids is None:
            return [self._record(row) for row in self._query(f"{_SELECT_SQL} ORDER BY rowid")]
        records: list[SpanRecord] = []
        for chunk in _chunks(list(dict.fromkeys(trace_ids)), _QUERY_CHUNK):
            marks = ", ".join("?" for _ in chunk)
            rows = self._query(f"{_SELECT_SQL} WHERE trace_id IN ({marks}) ORDER BY rowid", chunk)
            records.extend(self._record(row) for row in rows)
        return records

    def session_ids(
        self,
        *,
        user_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        errors_only: bool = False,
    ) -> list[str]:
        """Candidate session ids, most recently active first (a fast, indexed superset)."""
        conditions = ["session_id IS NOT NULL"]
        parameters: list[object] = []
        if user_id is not None:
            conditions.append("session_id IN (SELECT session_id FROM spans WHERE user_id = ?)")
            parameters.append(user_id)
        if errors_only:
            conditions.append(
                "session_id IN (SELECT session_id FROM spans WHERE trace_id IN "
                "(SELECT trace_id FROM spans WHERE status_code = 'ERROR'))"
            )
        having: list[str] = []
        if (since_ns := _time_ns(since)) is not None:
            having.append("MAX(end_time_ns) >= ?")
            parameters.append(since_ns)
        if (until_ns := _time_ns(until)) is not None:
            having.append("MIN(start_time_ns) <= ?")
            parameters.append(until_ns)
        sql = (
            f"SELECT session_id FROM spans WHERE {' AND '.join(conditions)} GROUP BY session_id"
            + (f" HAVING {' AND '.join(having)}" if having else "")
            + " ORDER BY MAX(end_time_ns) DESC, session_id"
        )
        return [row[0] for row in self._query(sql, parameters)]

    def _assemble(self, session_ids: Sequence[str]) -> list[Session]:
        """Build the given sessions from every span of every trace that mentions them."""
        trace_ids: list[str] = []
        for chunk in _chunks(session_ids, _QUERY_CHUNK):
            marks = ", ".join("?" for _ in chunk)
            rows = self._query(
                f"SELECT DISTINCT trace_id FROM spans WHERE session_id IN ({marks})", chunk
            )
            trace_ids.extend(row[0] for row in rows)
        wanted = set(session_ids)
        grouping = group_by_session(self.spans(trace_ids))
        return [session for session in grouping.sessions if session.session_id in wanted]

    def session(self, session_id: str) -> Session | None:
        sessions = self._assemble([session_id])
        return sessions[0] if sessions else None

    def sessions(
        self,
        *,
        user_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        errors_only: bool = False,
        limit: int | None = None,
    ) -> list[Session]:
        """Sessions, most recently active first.

        ``user_id`` matches the session's user (its first ``user.id``); ``since`` keeps sessions
        active at or after it, ``until`` those that started at or before it; ``errors_only`` keeps
        sessions with at least one error.
        """
        since_ns, until_ns = _time_ns(since), _time_ns(until)
        found: list[Session] = []
        candidates = self.session_ids(
            user_id=user_id, since=since, until=until, errors_only=errors_only
        )
        for page in _chunks(candidates, _SESSION_PAGE):
            for session in self._assemble(page):
                if user_id is not None and session.user_id != user_id:
                    continue
                if since_ns is not None and session.last_time_ns < since_ns:
                    continue
                if until_ns is not None and session.first_time_ns > until_ns:
                    continue
                if errors_only and not session.errors:
                    continue
                found.append(session)
            if limit is not None and len(found) >= limit:
                break
        found.sort(key=lambda session: (-session.last_time_ns, session.session_id))
        return found if limit is None else found[:limit]
