"""Where the store lives, its schema and migrations, and opening a file safely."""

from __future__ import annotations

import logging
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from openinference.semconv.trace import SpanAttributes

from convotel.store.errors import (
    _SQLITE_ERRORS,
    STORE_ENV_VAR,
    StoreError,
    _foreign,
    _newer_schema,
    _not_found,
    _retry_while_locked,
    _translate,
)

logger = logging.getLogger(__name__)

DEFAULT_STORE_PATH = Path(".convotel") / "spans.sqlite3"
# Written to the SQLite header (PRAGMA application_id) so a foreign database is recognised.
APPLICATION_ID = 0x43565453  # "CVTS"


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
        raise _newer_schema(path, version, SCHEMA_VERSION)
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
