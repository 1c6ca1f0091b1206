"""The ``convotel`` command on stores holding damaged bytes: a clear error or replaced text,
never a traceback, and the file left as it was."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from cli_store import write_scenario
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from convotel.store import SQLiteSpanExporter

CUT_REPLY = json.loads('"cut \\ud83d reply"')  # a model reply that ended inside an emoji


def convotel(*argv: str) -> subprocess.CompletedProcess[bytes]:
    """Run the command as a user would, in its own process; output kept as raw bytes."""
    return subprocess.run(
        [sys.executable, "-m", "convotel.cli", *argv],
        capture_output=True,
        check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        timeout=60,
    )


def test_a_schema_with_bytes_that_are_not_utf8_is_a_clear_error_and_left_untouched(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spans.sqlite3"
    write_scenario(path, time.time_ns())
    data = bytearray(path.read_bytes())
    at = data.index(b"CREATE TABLE spans (") + len(b"CREATE TABLE spans (")
    data[at : at + 6] = b"'\xb3\xee\x16\x13\xc4"
    path.write_bytes(bytes(data))
    before = hashlib.sha256(path.read_bytes()).hexdigest()

    for argv in (["sessions"], ["sessions", "--json"], ["sessions", "show", "s-old"]):
        completed = convotel(*argv, "--store", str(path))
        err = completed.stderr.decode()

        assert completed.returncode == 1, err
        assert completed.stdout == b""
        assert err.startswith(f"convotel: convotel span store {path}: the file is not a readable")
        # Python 3.10 drops SQLite's message when it quotes bytes that are not UTF-8.
        assert ("malformed database schema" if sys.version_info >= (3, 11) else "not UTF-8") in err
        assert "Move it aside" in err
        assert "Traceback" not in err
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_text_that_was_not_valid_utf8_is_listed_and_shown_with_replacement_characters(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spans.sqlite3"
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(SQLiteSpanExporter(path)))
    attributes = {"session.id": "s-cut", "user.id": "u-1", "input.value": "tell me \ud83d"}
    with provider.get_tracer("app").start_as_current_span("turn", attributes=attributes) as span:
        span.set_attribute("output.value", CUT_REPLY)
    provider.shutdown()
    connection = sqlite3.connect(path)  # and a row another program wrote, bytes not UTF-8
    connection.execute(
        "INSERT INTO spans (trace_id, span_id, name, kind, start_time_ns, end_time_ns,"
        " status_code, attributes, events, resource_attributes, session_id)"
        " VALUES (?, ?, 'turn', 'INTERNAL', 1, 2, 'UNSET', CAST(? AS TEXT), '[]', '{}', ?)",
        (
            "f" * 32,
            "f" * 16,
            b'{"session.id": "s-other", "input.value": "bad \xff byte",'
            b' "output.value": "escaped \\ud83d reply"}',
            "s-other",
        ),
    )
    connection.commit()
    connection.close()

    listed = convotel("sessions", "--json", "--store", str(path))
    table = convotel("sessions", "--store", str(path))
    shown = convotel("sessions", "show", "s-cut", "--store", str(path))

    for completed in (listed, table, shown):
        assert (completed.returncode, completed.stderr) == (0, b"")
        completed.stdout.decode("utf-8")  # valid UTF-8 throughout
    sessions = {entry["session_id"]: entry for entry in json.loads(listed.stdout)}
    assert sessions["s-cut"]["first_input"] == "tell me \ufffd"
    assert sessions["s-cut"]["last_output"] == "cut \ufffd reply"
    assert sessions["s-other"]["first_input"] == "bad \ufffd byte"
    assert sessions["s-other"]["last_output"] == "escaped \ufffd reply"
    assert b"\\ud83d" not in listed.stdout
    assert "cut \ufffd reply" in table.stdout.decode()
    assert "cut \ufffd reply" in shown.stdout.decode()


def test_an_id_argument_with_bytes_that_are_not_utf8_is_looked_up_not_crashed_on(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spans.sqlite3"
    write_scenario(path, time.time_ns())

    shown = convotel("sessions", "show", os.fsdecode(b"s-\xff"), "--store", str(path))
    listed = convotel("sessions", "--user", os.fsdecode(b"\xff"), "--store", str(path))

    assert shown.returncode == 1
    assert shown.stderr.decode().startswith("convotel: no session 's-\\udcff' in")
    assert (listed.returncode, listed.stderr) == (0, b"")
    assert listed.stdout.decode().startswith("No sessions matching these filters")
