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

from convotel.store.errors import (
    STORE_ENV_VAR,
    StoreCorruptError,
    StoreError,
    StoreLockedError,
    StoreNotFoundError,
    StoreSchemaError,
)
from convotel.store.exporter import SQLiteSpanExporter
from convotel.store.reader import SpanStore
from convotel.store.rows import record_from_row, span_row
from convotel.store.schema import (
    APPLICATION_ID,
    DEFAULT_STORE_PATH,
    MIGRATIONS,
    SCHEMA_VERSION,
    Migration,
    default_store_path,
    open_connection,
    resolve_store_path,
)

__all__ = [
    "APPLICATION_ID",
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
    "open_connection",
    "record_from_row",
    "resolve_store_path",
    "span_row",
]
