"""Store files this version cannot simply use: missing, corrupt, locked, old, newer, foreign.

Each gives a typed error naming the file and what to do, and nothing already written is lost.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from store_spans import SpanMaker

from convotel.store import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    SpanStore,
    SQLiteSpanExporter,
    StoreCorruptError,
    StoreError,
    StoreLockedError,
    StoreNotFoundError,
    StoreSchemaError,
)

# The schema as convotel 0.1 first wrote it (version 1): no session/user columns yet.
SCHEMA_V1 = """
CREATE TABLE spans (
    trace_id TEXT NOT NULL, span_id TEXT NOT NULL, parent_span_id TEXT, name TEXT NOT NULL,
    kind TEXT NOT NULL, span_kind TEXT, start_time_ns INTEGER NOT NULL,
    end_time_ns INTEGER NOT NULL, status_code TEXT NOT NULL, status_message TEXT,
    attributes TEXT NOT NULL, events TEXT NOT NULL, resource_attributes TEXT NOT NULL,
    scope_name TEXT, UNIQUE (trace_id, span_id)
);
CREATE INDEX spans_by_start_time ON spans (start_time_ns);
"""


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_v1_store(path: Path) -> None:
    """A version-1 store holding one finished LLM turn of session ``old-session``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path)
    connection.executescript(SCHEMA_V1)
    attributes = {
        "openinference.span.kind": "LLM",
        "session.id": "old-session",
        "user.id": "old-user",
        "input.value": "written by schema 1",
        "output.value": "still readable",
        "llm.token_count.prompt": 11,
        "llm.token_count.completion": 4,
    }
    connection.execute(
        "INSERT INTO spans VALUES (?, ?, NULL, 'ChatCompletion', 'CLIENT', 'LLM', ?, ?, 'OK', NULL,"
        " ?, '[]', '{}', 'old-app')",
        ("0" * 31 + "1", "0" * 15 + "1", 1_000, 2_000, json.dumps(attributes)),
    )
    connection.execute("PRAGMA user_version = 1")
    connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    connection.commit()
    connection.close()


@pytest.fixture
def new_turn(spans: SpanMaker) -> list[ReadableSpan]:
    spans.turn(0, session="new-session", user="new-user", question="hello", answer="hi")
    return spans.finished()


def assert_names_file_and_advice(error: StoreError, path: Path, advice: str) -> None:
    message = str(error)
    assert str(path) in message
    assert advice in message
    assert error.path == path


def export_once_and_check_logged_once(
    exporter: SQLiteSpanExporter, spans: list[ReadableSpan], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="convotel.store"):
        assert exporter.export(spans) is SpanExportResult.FAILURE
        assert exporter.export(spans) is SpanExportResult.FAILURE
    assert len(caplog.records) == 1
    assert str(exporter.path) in caplog.records[0].getMessage()


def test_reader_reports_a_missing_store_and_does_not_create_it(store_path: Path) -> None:
    with pytest.raises(StoreNotFoundError) as caught:
        SpanStore(store_path)

    assert_names_file_and_advice(caught.value, store_path, "convotel demo")
    assert not store_path.exists()


def test_garbage_file_is_reported_as_corrupt_and_left_untouched(
    store_path: Path, new_turn: list[ReadableSpan], caplog: pytest.LogCaptureFixture
) -> None:
    store_path.parent.mkdir(parents=True)
    store_path.write_bytes(b"these are not the spans you are looking for\n" * 200)
    before = digest(store_path)

    with pytest.raises(StoreCorruptError) as caught:
        SpanStore(store_path)
    exporter = SQLiteSpanExporter(store_path)
    export_once_and_check_logged_once(exporter, new_turn, caplog)
    exporter.shutdown()

    assert_names_file_and_advice(caught.value, store_path, "Move it aside")
    assert isinstance(exporter.last_error, StoreCorruptError)
    assert digest(store_path) == before


def test_moving_a_corrupt_store_aside_lets_the_exporter_start_a_new_one(
    store_path: Path, new_turn: list[ReadableSpan]
) -> None:
    store_path.parent.mkdir(parents=True)
    store_path.write_bytes(b"\x00garbage" * 1000)
    exporter = SQLiteSpanExporter(store_path, busy_timeout=0.05)
    assert exporter.export(new_turn) is SpanExportResult.FAILURE

    store_path.rename(store_path.with_suffix(".broken"))
    assert exporter.force_flush() is True
    exporter.shutdown()

    with SpanStore(store_path) as store:
        assert store.session_ids() == ["new-session"]


def test_damaged_pages_inside_a_real_store_are_reported_as_corrupt(
    store_path: Path, new_turn: list[ReadableSpan]
) -> None:
    exporter = SQLiteSpanExporter(store_path)
    assert exporter.export(new_turn) is SpanExportResult.SUCCESS
    exporter.shutdown()
    page_size = 4096
    data = bytearray(store_path.read_bytes())
    assert len(data) > 2 * page_size
    data[page_size : 2 * page_size] = b"\xa5" * page_size  # the spans table's first page
    store_path.write_bytes(bytes(data))

    with pytest.raises(StoreCorruptError) as caught, SpanStore(store_path) as store:
        store.sessions()

    assert "malformed" in str(caught.value)


def test_old_schema_is_migrated_in_place_keeping_its_spans(
    store_path: Path, new_turn: list[ReadableSpan], caplog: pytest.LogCaptureFixture
) -> None:
    write_v1_store(store_path)

    with caplog.at_level(logging.INFO, logger="convotel.store"):
        exporter = SQLiteSpanExporter(store_path)
        assert exporter.export(new_turn) is SpanExportResult.SUCCESS
        exporter.shutdown()

    assert f"from schema 1 to {SCHEMA_VERSION}" in caplog.text
    connection = sqlite3.connect(store_path)
    assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    backfilled = connection.execute(
        "SELECT session_id, user_id FROM spans WHERE scope_name = 'old-app'"
    ).fetchall()
    connection.close()
    assert backfilled == [("old-session", "old-user")]
    with SpanStore(store_path) as store:
        old = store.session("old-session")
        sessions = store.sessions(user_id="old-user")
    assert old is not None
    assert old.first_input == "written by schema 1"
    assert old.last_output == "still readable"
    assert old.tokens.total == 15
    assert [s.session_id for s in sessions] == ["old-session"]


def test_reader_migrates_an_old_schema_too(store_path: Path) -> None:
    write_v1_store(store_path)

    with SpanStore(store_path) as store:
        assert store.session_ids(user_id="old-user") == ["old-session"]


def test_newer_schema_is_refused_and_left_untouched(
    store_path: Path, new_turn: list[ReadableSpan], caplog: pytest.LogCaptureFixture
) -> None:
    exporter = SQLiteSpanExporter(store_path)
    assert exporter.export(new_turn) is SpanExportResult.SUCCESS
    exporter.shutdown()
    connection = sqlite3.connect(store_path)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 7}")
    connection.commit()
    connection.close()
    before = digest(store_path)

    with pytest.raises(StoreSchemaError) as caught:
        SpanStore(store_path)
    later = SQLiteSpanExporter(store_path)
    export_once_and_check_logged_once(later, new_turn, caplog)
    later.shutdown()

    assert_names_file_and_advice(caught.value, store_path, "Upgrade convotel")
    assert f"schema version {SCHEMA_VERSION + 7}" in str(caught.value)
    assert digest(store_path) == before


def test_a_database_of_another_program_is_refused_and_left_untouched(
    store_path: Path, new_turn: list[ReadableSpan]
) -> None:
    store_path.parent.mkdir(parents=True)
    connection = sqlite3.connect(store_path)
    connection.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    connection.execute("INSERT INTO invoices (total) VALUES (12.5)")
    connection.commit()
    connection.close()
    before = digest(store_path)

    exporter = SQLiteSpanExporter(store_path)
    assert exporter.export(new_turn) is SpanExportResult.FAILURE
    exporter.shutdown()

    assert isinstance(exporter.last_error, StoreSchemaError)
    assert "not a convotel span store" in str(exporter.last_error)
    assert "invoices" in str(exporter.last_error)
    assert digest(store_path) == before


@pytest.fixture
def exclusive_lock_on_old_store(store_path: Path) -> Iterator[sqlite3.Connection]:
    """A rollback-journal (schema 1) store that another connection holds exclusively."""
    write_v1_store(store_path)
    holder = sqlite3.connect(store_path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    yield holder
    if holder.in_transaction:
        holder.execute("ROLLBACK")
    holder.close()


def test_a_store_locked_by_another_process_gives_a_clear_error_and_loses_nothing(
    store_path: Path,
    exclusive_lock_on_old_store: sqlite3.Connection,
    new_turn: list[ReadableSpan],
) -> None:
    with pytest.raises(StoreLockedError) as caught:
        SpanStore(store_path, busy_timeout=0.05)
    exporter = SQLiteSpanExporter(store_path, busy_timeout=0.05)
    assert exporter.export(new_turn) is SpanExportResult.FAILURE
    assert isinstance(exporter.last_error, StoreLockedError)

    exclusive_lock_on_old_store.execute("ROLLBACK")
    assert exporter.force_flush() is True
    exporter.shutdown()

    assert_names_file_and_advice(caught.value, store_path, "Close or wait")
    with SpanStore(store_path) as store:
        assert sorted(store.session_ids()) == ["new-session", "old-session"]


def test_an_unwritable_location_gives_a_clear_error(
    tmp_path: Path, new_turn: list[ReadableSpan]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    exporter = SQLiteSpanExporter(blocker / "spans.sqlite3")

    assert exporter.export(new_turn) is SpanExportResult.FAILURE

    assert exporter.last_error is not None
    assert "cannot create its folder" in str(exporter.last_error)
    assert str(blocker / "spans.sqlite3") in str(exporter.last_error)


def damage_schema_text(path: Path) -> None:
    """Overwrite 6 bytes of the stored ``CREATE TABLE`` text with bytes that are not UTF-8."""
    data = bytearray(path.read_bytes())
    at = data.index(b"CREATE TABLE spans (") + len(b"CREATE TABLE spans (")
    data[at : at + 6] = b"'\xb3\xee\x16\x13\xc4"
    path.write_bytes(bytes(data))


def test_schema_text_that_is_not_utf8_is_corrupt_and_never_raises_into_the_application(
    store_path: Path, new_turn: list[ReadableSpan], caplog: pytest.LogCaptureFixture
) -> None:
    exporter = SQLiteSpanExporter(store_path)
    assert exporter.export(new_turn) is SpanExportResult.SUCCESS
    exporter.shutdown()
    damage_schema_text(store_path)
    before = digest(store_path)

    with pytest.raises(StoreCorruptError) as caught:
        SpanStore(store_path)
    later = SQLiteSpanExporter(store_path, busy_timeout=0.05)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(later))
    with caplog.at_level(logging.ERROR, logger="convotel.store"):
        provider.get_tracer("app").start_span("turn").end()  # exported at once, and failing
        assert later.force_flush() is False
        provider.shutdown()

    assert_names_file_and_advice(caught.value, store_path, "Move it aside")
    # Python 3.10 drops SQLite's message when it quotes bytes that are not UTF-8.
    quoted = "malformed database schema (spans)" if sys.version_info >= (3, 11) else "not UTF-8"
    assert quoted in str(caught.value)
    assert isinstance(later.last_error, StoreCorruptError)
    assert "1 spans could not be written before shutdown" in caplog.text
    assert digest(store_path) == before


def test_a_row_that_is_not_json_is_reported_as_corrupt_naming_the_span(
    store_path: Path, new_turn: list[ReadableSpan]
) -> None:
    exporter = SQLiteSpanExporter(store_path)
    assert exporter.export(new_turn) is SpanExportResult.SUCCESS
    exporter.shutdown()
    connection = sqlite3.connect(store_path)
    (span_id,) = connection.execute("SELECT span_id FROM spans WHERE name = 'chat_turn'").fetchone()
    connection.execute("UPDATE spans SET events = '[{\"name\": ' WHERE span_id = ?", (span_id,))
    connection.commit()
    connection.close()

    with pytest.raises(StoreCorruptError) as caught, SpanStore(store_path) as store:
        store.sessions()

    assert_names_file_and_advice(caught.value, store_path, "Move it aside")
    assert f"span '{span_id}'" in str(caught.value)
