"""Values SQLite cannot store as given never hold up the store; damaged text reads back replaced.

A model reply cut inside an emoji leaves a lone surrogate in a str. It is stored with U+FFFD in
place of the bad code point (a surrogate *pair* becomes its character), in every text column.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

from convotel.store import SpanStore, SQLiteSpanExporter

CUT_REPLY = json.loads('"cut \\ud83d reply"')  # a reply that ended inside an emoji
PAIR = "\ud83d\ude00"  # an emoji as two surrogate code points
REPLACED = "cut \ufffd reply"


def test_a_lone_surrogate_is_stored_replaced_and_never_blocks_later_spans(
    store_path: Path,
) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "bot \udc80"}))
    exporter = SQLiteSpanExporter(store_path)
    provider.add_span_processor(SimpleSpanProcessor(exporter))  # one export per span
    tracer = provider.get_tracer("app")
    ids = {"session.id": "s-\ud83d", "user.id": "u-\udfff"}
    with tracer.start_as_current_span("turn \ud83d", attributes=ids) as span:
        span.set_attribute("input.value", f"pair {PAIR} as two code points")
        span.set_attribute("output.value", CUT_REPLY)
        span.add_event("chunk", {"text": CUT_REPLY})
        span.set_status(Status(StatusCode.ERROR, "failed \ud83d"))
    for number in range(3):
        with tracer.start_as_current_span(f"later {number}", attributes={"session.id": "s-ok"}):
            pass
    provider.shutdown()  # raises into the application if the bad row is still queued

    assert (exporter.pending_spans, exporter.dropped_spans, exporter.last_error) == (0, 0, None)
    with SpanStore(store_path) as store:
        records = {record.name: record for record in store.spans()}
        session_ids = store.session_ids()
        by_user = store.session_ids(user_id="u-\ufffd")
    assert sorted(records) == ["later 0", "later 1", "later 2", "turn \ufffd"]
    turn = records["turn \ufffd"]
    assert turn.attributes["output.value"] == REPLACED
    assert turn.attributes["input.value"] == "pair 😀 as two code points"
    assert (turn.session_id, turn.user_id) == ("s-\ufffd", "u-\ufffd")
    assert turn.status_message == "failed \ufffd"
    assert turn.events[0].attributes == {"text": REPLACED}
    assert turn.resource_attributes["service.name"] == "bot \ufffd"
    assert session_ids == ["s-ok", "s-\ufffd"]
    assert by_user == ["s-\ufffd"]


def test_in_a_batch_only_a_span_sqlite_cannot_store_at_all_is_dropped(
    store_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    provider = TracerProvider()
    exporter = SQLiteSpanExporter(store_path)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("app")
    tracer.start_span("before").end()
    tracer.start_span("reply", attributes={"output.value": CUT_REPLY}).end()
    tracer.start_span("from the far future").end(end_time=2**70)  # beyond SQLite's 64 bits
    tracer.start_span("after").end()

    with caplog.at_level(logging.ERROR, logger="convotel.store"):
        provider.shutdown()

    assert exporter.dropped_spans == 1
    assert exporter.pending_spans == 0
    assert "1 spans hold a value SQLite cannot store and are dropped" in caplog.text
    with SpanStore(store_path) as store:
        stored = {record.name: record for record in store.spans()}
    assert sorted(stored) == ["after", "before", "reply"]
    assert stored["reply"].attributes["output.value"] == REPLACED


def test_text_another_program_left_in_the_store_reads_back_replaced(store_path: Path) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(SQLiteSpanExporter(store_path)))
    provider.get_tracer("app").start_span("turn", attributes={"session.id": "s-1"}).end()
    provider.shutdown()
    connection = sqlite3.connect(store_path)
    connection.execute(
        "UPDATE spans SET name = CAST(? AS TEXT), attributes = CAST(? AS TEXT)",
        (
            b"turn \xff",
            b'{"session.id": "s-1", "input.value": "bad \xed\xa0\xbd byte",'
            b' "output.value": "escaped \\ud83d reply", "pair": "\\ud83d\\ude00"}',
        ),
    )
    connection.commit()
    connection.close()

    with SpanStore(store_path) as store:
        (record,) = store.spans()

    assert record.name == "turn \ufffd"
    assert record.attributes["input.value"] == "bad \ufffd\ufffd\ufffd byte"
    assert record.attributes["output.value"] == "escaped \ufffd reply"
    assert record.attributes["pair"] == "😀"
