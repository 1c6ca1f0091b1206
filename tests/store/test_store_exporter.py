"""SQLiteSpanExporter with real BatchSpanProcessors: round trip, concurrent writers, locks."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
from store_spans import LLM, SpanMaker

import convotel.store.exporter
from convotel.sessions import SpanRecord, build_sessions
from convotel.store import (
    SCHEMA_VERSION,
    STORE_ENV_VAR,
    SpanStore,
    SQLiteSpanExporter,
    StoreLockedError,
    default_store_path,
)

WRITER_SCRIPT = Path(__file__).with_name("store_writer_process.py")


def stored_records(path: Path) -> list[SpanRecord]:
    with SpanStore(path) as store:
        return store.spans()


@pytest.fixture
def conversation(spans: SpanMaker) -> list[ReadableSpan]:
    spans.turn(0, session="s-1", user="alice", question="weather?", answer="sunny")
    spans.turn(
        200,
        session="s-1",
        user="alice",
        question="book it",
        answer=None,
        tool_calls=[("call_1", "book_table", '{"seats": 2}')],
    )
    spans.turn(400, session="s-2", user="bob", question="hi", answer=None, error=OSError("503"))
    return spans.finished()


def test_batch_span_processor_round_trip_keeps_every_field(
    store_path: Path, conversation: list[ReadableSpan]
) -> None:
    exporter = SQLiteSpanExporter(store_path)
    processor = BatchSpanProcessor(exporter)
    for span in conversation:
        processor.on_end(span)
    processor.shutdown()

    assert exporter.pending_spans == 0
    expected = sorted(
        (SpanRecord.from_readable_span(span) for span in conversation), key=lambda r: r.span_id
    )
    assert sorted(stored_records(store_path), key=lambda r: r.span_id) == expected
    with SpanStore(store_path) as store:
        assert store.span_count() == len(conversation)
        assert [s.session_id for s in store.sessions()] == ["s-2", "s-1"]  # most recent first
        assert store.sessions() == sorted(
            build_sessions(conversation), key=lambda s: -s.last_time_ns
        )


def test_spans_from_a_live_tracer_provider_reach_the_store(store_path: Path) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "chatbot"}))
    provider.add_span_processor(BatchSpanProcessor(SQLiteSpanExporter(store_path)))
    tracer = provider.get_tracer("app")
    turn_attributes = {"session.id": "s-9", "user.id": "u"}
    llm_attributes = {"openinference.span.kind": LLM, "llm.token_count.prompt": 3}
    with (
        tracer.start_as_current_span("turn", attributes=turn_attributes),
        tracer.start_as_current_span("llm", attributes=llm_attributes) as llm,
    ):
        llm.add_event("first_token", {"delay_ms": 12})
    provider.shutdown()

    records = {record.name: record for record in stored_records(store_path)}
    assert records["llm"].parent_id == records["turn"].span_id
    assert records["llm"].events[0].name == "first_token"
    assert records["llm"].events[0].attributes == {"delay_ms": 12}
    assert records["turn"].resource_attributes["service.name"] == "chatbot"
    connection = sqlite3.connect(store_path)
    row = connection.execute(
        "SELECT session_id, user_id, scope_name FROM spans WHERE name = 'turn'"
    )
    assert row.fetchone() == ("s-9", "u", "app")
    assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    connection.close()


def test_default_path_comes_from_the_environment_else_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, conversation: list[ReadableSpan]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(STORE_ENV_VAR, raising=False)
    assert default_store_path() == tmp_path / ".convotel" / "spans.sqlite3"

    monkeypatch.setenv(STORE_ENV_VAR, str(tmp_path / "deep" / "er" / "mine.sqlite3"))
    exporter = SQLiteSpanExporter()
    assert exporter.path == tmp_path / "deep" / "er" / "mine.sqlite3"
    assert not exporter.path.parent.exists()  # nothing happens before the first export

    assert exporter.export(conversation) is SpanExportResult.SUCCESS
    exporter.shutdown()
    assert len(stored_records(exporter.path)) == len(conversation)


def test_exporting_the_same_spans_twice_stores_them_once(
    store_path: Path, conversation: list[ReadableSpan]
) -> None:
    exporter = SQLiteSpanExporter(store_path)
    assert exporter.export(conversation) is SpanExportResult.SUCCESS
    assert exporter.export(conversation) is SpanExportResult.SUCCESS
    exporter.shutdown()

    assert len(stored_records(store_path)) == len(conversation)


def _write_from_thread(path: Path, label: str, count: int, start: threading.Barrier) -> None:
    exporter = SQLiteSpanExporter(path)
    provider = TracerProvider()
    provider.add_span_processor(
        BatchSpanProcessor(exporter, schedule_delay_millis=5, max_export_batch_size=16)
    )
    tracer = provider.get_tracer("writer-thread")
    start.wait()
    for index in range(count):
        with tracer.start_as_current_span(
            f"{label}-{index}", attributes={"session.id": f"{label}-session", "user.id": label}
        ):
            pass
    provider.shutdown()
    assert exporter.pending_spans == 0


def test_threads_and_another_process_write_one_new_file_without_losing_a_span(
    store_path: Path,
) -> None:
    """Four threads and two processes race to create the store and write 1,400 spans."""
    store_path.parent.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    processes = [
        subprocess.Popen(
            [sys.executable, str(WRITER_SCRIPT), str(store_path), "300", f"process{number}"],
            env=env,
        )
        for number in (1, 2)
    ]
    start = threading.Barrier(4)
    threads = [
        threading.Thread(target=_write_from_thread, args=(store_path, f"thread{n}", 200, start))
        for n in range(4)
    ]
    try:
        ready = [Path(f"{store_path}.ready-process{number}") for number in (1, 2)]
        deadline = time.monotonic() + 30
        while not all(flag.exists() for flag in ready) and time.monotonic() < deadline:
            time.sleep(0.01)
        Path(f"{store_path}.go").touch()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        exit_codes = [process.wait(timeout=60) for process in processes]

    assert exit_codes == [0, 0]
    records = stored_records(store_path)
    names = {record.name for record in records}
    assert len(records) == len(names) == 4 * 200 + 2 * 300
    with SpanStore(store_path) as store:
        sessions = store.sessions(limit=None)
    assert len(sessions) == 4 + 2 * 3
    assert sum(len(session.turns) for session in sessions) == 1400


@pytest.fixture
def write_lock(store_path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection holding the store's write lock until the test releases it."""
    exporter = SQLiteSpanExporter(store_path)
    assert exporter.export([]) is SpanExportResult.SUCCESS  # creates the store
    exporter.shutdown()
    holder = sqlite3.connect(store_path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    yield holder
    if holder.in_transaction:
        holder.execute("ROLLBACK")
    holder.close()


def test_a_locked_store_keeps_spans_in_memory_and_writes_them_once_released(
    store_path: Path,
    write_lock: sqlite3.Connection,
    spans: SpanMaker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    spans.turn(0, session="s-1", user="u", question="first", answer="a")
    first_batch = spans.finished()
    spans.exporter.clear()
    spans.turn(100, session="s-1", user="u", question="second", answer="b")
    second_batch = spans.finished()
    exporter = SQLiteSpanExporter(store_path, busy_timeout=0.05)

    with caplog.at_level(logging.DEBUG, logger="convotel.store"):
        assert exporter.export(first_batch) is SpanExportResult.FAILURE
        assert exporter.export(second_batch) is SpanExportResult.FAILURE

    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, "a lasting failure is logged once"
    assert str(store_path) in errors[0].getMessage()
    assert "locked" in errors[0].getMessage()
    assert isinstance(exporter.last_error, StoreLockedError)
    assert exporter.pending_spans == 4

    write_lock.execute("ROLLBACK")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="convotel.store"):
        assert exporter.force_flush() is True
    assert "writable again" in caplog.text
    exporter.shutdown()
    assert exporter.pending_spans == 0
    inputs = [turn.input for s in build_sessions(stored_records(store_path)) for turn in s.turns]
    assert inputs == ["first", "second"]


def test_spans_still_pending_at_shutdown_are_reported(
    store_path: Path,
    write_lock: sqlite3.Connection,
    conversation: list[ReadableSpan],
    caplog: pytest.LogCaptureFixture,
) -> None:
    exporter = SQLiteSpanExporter(store_path, busy_timeout=0.02)
    assert exporter.export(conversation) is SpanExportResult.FAILURE

    exporter.shutdown()

    assert f"{len(conversation)} spans could not be written before shutdown" in caplog.text
    assert exporter.export(conversation) is SpanExportResult.FAILURE  # after shutdown


def test_a_short_lock_is_waited_out_within_one_export(
    store_path: Path, write_lock: sqlite3.Connection, conversation: list[ReadableSpan]
) -> None:
    exporter = SQLiteSpanExporter(store_path, busy_timeout=2.0)
    releaser = threading.Timer(0.2, lambda: write_lock.execute("ROLLBACK"))
    releaser.start()
    try:
        assert exporter.export(conversation) is SpanExportResult.SUCCESS
    finally:
        releaser.join()
    exporter.shutdown()
    assert len(stored_records(store_path)) == len(conversation)


def test_pending_spans_are_bounded(
    store_path: Path,
    write_lock: sqlite3.Connection,
    conversation: list[ReadableSpan],
    caplog: pytest.LogCaptureFixture,
) -> None:
    exporter = SQLiteSpanExporter(store_path, busy_timeout=0.01, max_pending_spans=4)

    assert exporter.export(conversation) is SpanExportResult.FAILURE

    assert exporter.pending_spans == 4
    assert exporter.dropped_spans == len(conversation) - 4
    assert "oldest unwritten spans dropped" in caplog.text


def test_export_never_raises_into_the_application(
    store_path: Path,
    conversation: list[ReadableSpan],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken_row(span: ReadableSpan) -> tuple[object, ...]:
        raise RuntimeError("bug in row conversion")

    monkeypatch.setattr(convotel.store.exporter, "span_row", broken_row)
    exporter = SQLiteSpanExporter(store_path)

    assert exporter.export(conversation) is SpanExportResult.FAILURE
    assert exporter.export(conversation) is SpanExportResult.FAILURE
    assert caplog.text.count("bug in row conversion") == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_opens_its_own_connection(store_path: Path, spans: SpanMaker) -> None:
    spans.turn(0, session="s-parent", user="u", question="before fork", answer="a")
    exporter = SQLiteSpanExporter(store_path)
    assert exporter.export(spans.finished()) is SpanExportResult.SUCCESS
    spans.exporter.clear()
    spans.turn(100, session="s-child", user="u", question="in child", answer="b")
    child_spans = spans.finished()

    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        result = exporter.export(child_spans)
        exporter.shutdown()
        os._exit(0 if result is SpanExportResult.SUCCESS else 1)
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    spans.exporter.clear()
    spans.turn(200, session="s-parent", user="u", question="after fork", answer="c")
    assert exporter.export(spans.finished()) is SpanExportResult.SUCCESS
    exporter.shutdown()
    with SpanStore(store_path) as store:
        assert sorted(store.session_ids()) == ["s-child", "s-parent"]
        parent_session = store.session("s-parent")
    assert parent_session is not None
    assert [turn.input for turn in parent_session.turns] == ["before fork", "after fork"]
