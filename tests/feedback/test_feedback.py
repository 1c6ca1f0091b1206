"""convotel.record_feedback: feedback on a session or a turn, into the spans, the store, the CLI
and (when configured) Phoenix's REST API; bad input is a warning, never an exception."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from openinference.semconv.trace import AnnotationAttributes, SpanAttributes
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import convotel
from convotel import InvalidFeedbackWarning, record_feedback
from convotel.feedback import phoenix_request, send_to_phoenix
from convotel.sessions import group_by_session
from convotel.store import SpanStore
from convotel.store.exporter import SQLiteSpanExporter

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cost"))
from cost_store import basic_chat, replay


@pytest.fixture
def memory(tracer_provider: TracerProvider) -> TracerProvider:
    return tracer_provider


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """Two turns of ``s-fb`` through the real OpenAI SDK, feedback on the session and its second
    turn, and ``s-quiet`` without feedback."""
    import openai

    from convotel import TraceConfig, using_session, using_user
    from convotel.openai import OpenAIInstrumentor

    path = tmp_path_factory.mktemp("feedback") / "spans.sqlite3"
    provider = TracerProvider()
    in_memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(SQLiteSpanExporter(path)))
    provider.add_span_processor(SimpleSpanProcessor(in_memory))
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider, config=TraceConfig())
    client = openai.OpenAI(api_key="sk-test", max_retries=0)
    try:
        with using_user("alice"):
            for session in ("s-fb", "s-fb", "s-quiet"):
                with using_session(session), replay("openai", "chat_basic"):
                    basic_chat(client)
    finally:
        instrumentor.uninstrument()
    traces = [format(s.context.trace_id, "032x") for s in in_memory.get_finished_spans()]
    record_feedback(
        "s-fb", "thumbs", label="down", score=0, explanation="too slow", source="alice",
        tracer_provider=provider,
    )  # fmt: skip
    record_feedback("s-fb", "resolved", score=1, turn=traces[1], tracer_provider=provider)
    provider.shutdown()
    return path, traces


def convotel_cli(path: Path, *argv: str) -> str:
    completed = subprocess.run(
        [sys.executable, "-m", "convotel.cli", *argv, "--store", str(path)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "140"},
    )
    assert (completed.returncode, completed.stderr) == (0, ""), completed.stderr
    return completed.stdout


def test_feedback_is_a_span_with_openinference_annotation_attributes(
    memory: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    given = convotel.record_feedback(
        "s-1", "thumbs", score=1, label="up", source="alice", tracer_provider=memory
    )
    assert given is not None
    (span,) = span_exporter.get_finished_spans()
    assert span.name == "convotel.feedback"
    assert dict(span.attributes or {}) == {
        SpanAttributes.OPENINFERENCE_SPAN_KIND: "EVALUATOR",
        SpanAttributes.SESSION_ID: "s-1",
        AnnotationAttributes.ANNOTATION_NAME: "thumbs",
        AnnotationAttributes.ANNOTATION_SCORE: 1.0,
        AnnotationAttributes.ANNOTATION_LABEL: "up",
        AnnotationAttributes.ANNOTATION_ANNOTATOR_KIND: "HUMAN",
        "convotel.feedback.scope": "session",
        "convotel.feedback.source": "alice",
    }
    grouping = group_by_session(span_exporter.get_finished_spans())
    assert grouping.sessions == ()  # feedback alone is no turn and no session
    assert grouping.turns_without_session == ()


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        (("", "thumbs"), "the session id must be a non-blank string"),
        ((None, "thumbs"), "the session id is missing"),
        ((42, "thumbs"), "the session id must be a non-blank string"),
        (("s-1", "  "), "the name must be a non-blank string"),
        (("s-1", "thumbs", "high"), "the score must be a number"),
        (("s-1", "thumbs", float("nan")), "the score must be a finite number"),
        (("s-1", "thumbs", True), "the score must be a number"),
        (("s-1", "thumbs", None), "give a score, a label or an explanation"),
    ],
)
def test_invalid_feedback_is_a_warning_and_records_nothing(
    memory: TracerProvider,
    span_exporter: InMemorySpanExporter,
    arguments: tuple[Any, ...],
    problem: str,
) -> None:
    session, name, *score = arguments
    with pytest.warns(InvalidFeedbackWarning, match=problem):
        found = record_feedback(
            session, name, score=score[0] if score else 1, tracer_provider=memory
        )
    assert found is None
    assert span_exporter.get_finished_spans() == ()


def test_store_sessions_carry_their_feedback_not_as_turns(store: tuple[Path, list[str]]) -> None:
    path, traces = store
    with SpanStore(path) as opened:
        session = opened.session("s-fb")
    assert session is not None
    assert len(session.turns) == 2
    assert [(f.name, f.label, f.score, f.turn) for f in session.feedback] == [
        ("thumbs", "down", 0.0, None),
        ("resolved", None, 1.0, traces[1]),
    ]


def test_cli_show_lists_feedback_and_json_has_it(store: tuple[Path, list[str]]) -> None:
    path, traces = store
    shown = convotel_cli(path, "sessions", "show", "s-fb")
    assert 'Feedback  thumbs: down (0) "too slow" by alice' in shown
    assert "Feedback  resolved: 1, on turn 2" in shown
    as_json = json.loads(convotel_cli(path, "sessions", "show", "s-fb", "--json"))
    assert as_json["turn_count"] == 2
    assert [f["name"] for f in as_json["feedback"]] == ["thumbs", "resolved"]
    assert as_json["feedback"][1]["turn"] == traces[1]


@pytest.mark.parametrize(
    ("wanted", "expected"),
    [("thumbs", ["s-fb"]), ("thumbs=down", ["s-fb"]), ("thumbs=up", []), ("nps", [])],
)
def test_sessions_and_users_filter_by_feedback(
    store: tuple[Path, list[str]], wanted: str, expected: list[str]
) -> None:
    path, _ = store
    listed = json.loads(convotel_cli(path, "sessions", "--json", "--feedback", wanted))
    assert [s["session_id"] for s in listed] == expected
    users = json.loads(convotel_cli(path, "users", "--json", "--feedback", wanted))
    assert [u["session_count"] for u in users] == ([1] if expected else [])


def test_feedback_for_an_unknown_session_lists_no_session(tmp_path: Path) -> None:
    path = tmp_path / "spans.sqlite3"
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(SQLiteSpanExporter(path)))
    assert record_feedback("s-nowhere", "thumbs", label="up", tracer_provider=provider)
    provider.shutdown()
    assert json.loads(convotel_cli(path, "sessions", "--json")) == []


class _FakePhoenix(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        type(self).received.append((self.path, json.loads(body)))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"data": [{"id": "1"}]}')

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_phoenix() -> Iterator[str]:
    _FakePhoenix.received = []
    server = HTTPServer(("127.0.0.1", 0), _FakePhoenix)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_feedback_goes_to_phoenixs_session_and_trace_annotation_api(
    memory: TracerProvider, fake_phoenix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVOTEL_PHOENIX_ENDPOINT", fake_phoenix)
    record_feedback("s-1", "thumbs", label="up", score=1, source="bob", tracer_provider=memory)
    record_feedback("s-1", "resolved", score=0, turn="ab" * 16, tracer_provider=memory)
    deadline = time.monotonic() + 5
    while len(_FakePhoenix.received) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(_FakePhoenix.received, key=lambda r: r[0]) == [
        (
            "/v1/session_annotations?sync=true",
            {
                "data": [
                    {
                        "name": "thumbs",
                        "annotator_kind": "HUMAN",
                        "result": {"score": 1.0, "label": "up"},
                        "metadata": {"source": "bob"},
                        "session_id": "s-1",
                    }
                ]
            },
        ),
        (
            "/v1/trace_annotations?sync=true",
            {
                "data": [
                    {
                        "name": "resolved",
                        "annotator_kind": "HUMAN",
                        "result": {"score": 0.0},
                        "metadata": {},
                        "trace_id": "ab" * 16,
                    }
                ]
            },
        ),
    ]


def test_a_phoenix_that_is_down_never_blocks_and_is_logged_once(
    memory: TracerProvider, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    started = time.monotonic()
    given = record_feedback(
        "s-1", "thumbs", label="up", tracer_provider=memory, phoenix_endpoint=closed
    )
    assert given is not None
    assert time.monotonic() - started < 0.5  # sent from a background thread
    caplog.set_level(logging.WARNING, logger="convotel")
    assert send_to_phoenix(given, closed, timeout=1.0) is False
    assert send_to_phoenix(given, closed, timeout=1.0) is False
    failures = [r for r in caplog.records if "sending feedback to Phoenix" in r.getMessage()]
    assert len(failures) <= 1  # once per endpoint (the background send may have logged it)


def test_phoenix_request_for_a_session() -> None:
    given = convotel.Feedback("s-1", "nps", score=9, explanation="great")
    url, body = phoenix_request(given, "http://phoenix:6006/")
    assert url == "http://phoenix:6006/v1/session_annotations"
    assert body["data"][0]["result"] == {"score": 9, "explanation": "great"}
