"""`convotel sessions` names where a session came from: a FROM column in the table when any
session is a provider's conversation (#19), and a Source line in `sessions show`."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from convotel.cli import main
from convotel.store import SQLiteSpanExporter

#: session id -> convotel.session.source of its spans (None: not recorded, an older store).
SOURCES = {
    "resp_chain10a1b2c3": "openai.response",
    "conv_68c1a2b3c4d5e6f7": "openai.conversation",
    "conv_0198d2c6": "mistral.conversation",
    "app-session-1": "context",
    "old-session": None,
    "odd-session": "some.future_source",
}


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "spans.sqlite3"
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(SQLiteSpanExporter(path)))
    tracer = provider.get_tracer("tests.cli")
    start = time.time_ns() - 60_000_000_000
    for n, (session_id, source) in enumerate(SOURCES.items()):
        attributes = {
            "session.id": session_id,
            "openinference.span.kind": "LLM",
            "input.value": f"question {n}",
            "output.value": f"answer {n}",
        }
        if source is not None:
            attributes["convotel.session.source"] = source
        at = start + n * 1_000_000_000
        span = tracer.start_span("Response", attributes=attributes, start_time=at)
        span.end(end_time=at + 100_000_000)
    provider.shutdown()
    return path


def table(capsys: pytest.CaptureFixture[str], store: Path) -> dict[str, dict[str, str]]:
    assert main(["sessions", "--store", str(store)]) == 0
    header, *rows = (
        re.split(r"\s{2,}", line.strip())
        for line in capsys.readouterr().out.split("\n\n")[0].splitlines()
    )
    return {row[0]: dict(zip(header, row, strict=True)) for row in rows}


def test_the_table_names_each_provider_source_and_dashes_the_applications(
    store: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "160")
    rows = table(capsys, store)
    assert {session_id: row["FROM"] for session_id, row in rows.items()} == {
        "resp_chain10a1b2c3": "openai chain",
        "conv_68c1a2b3c4d5e6f7": "openai conv",
        "conv_0198d2c6": "mistral conv",
        "app-session-1": "-",
        "old-session": "-",
        "odd-session": "some.future_s…",  # cut to 14 characters
    }
    assert list(rows["app-session-1"])[:3] == ["SESSION", "FROM", "USER"]


@pytest.mark.parametrize(("width", "shown"), [(80, False), (100, True)])
def test_a_narrow_terminal_drops_the_source_column_last(
    store: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    width: int,
    shown: bool,
) -> None:
    monkeypatch.setenv("COLUMNS", str(width))
    assert main(["sessions", "--store", str(store)]) == 0
    lines = capsys.readouterr().out.split("\n\n")[0].splitlines()
    assert all(len(line) <= width for line in lines)
    assert ("FROM" in lines[0].split()) is shown
    assert any("openai chain" in line for line in lines) is shown  # never cut when shown
    assert "LAST OUTPUT" not in lines[0]  # dropped before it


@pytest.mark.parametrize(
    ("session_id", "line"),
    [
        ("resp_chain10a1b2c3", "Source    openai.response (the provider's own conversation)"),
        ("conv_0198d2c6", "Source    mistral.conversation (the provider's own conversation)"),
        ("app-session-1", "Source    context (set by the application)"),
    ],
)
def test_show_names_the_source(
    store: Path, capsys: pytest.CaptureFixture[str], session_id: str, line: str
) -> None:
    assert main(["sessions", "show", session_id, "--store", str(store)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [f"Session   {session_id}", line]


def test_show_of_a_session_without_a_recorded_source_has_no_source_line(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sessions", "show", "old-session", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "Source" not in out
    assert out.splitlines()[1].startswith("User ")
