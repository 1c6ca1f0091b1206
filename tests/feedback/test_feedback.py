"""convotel.record_feedback: feedback on a session or a turn, into the spans, the store and the
CLI; bad input is a warning, never an exception. (Phoenix's REST API: test_feedback_phoenix.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from openinference.semconv.trace import AnnotationAttributes, SpanAttributes
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

import convotel
from convotel import InvalidFeedbackWarning, record_feedback
from convotel.sampling import SessionSampler, session_bucket
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


def test_feedback_outside_any_span_is_never_a_root_span(
    memory: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    """A root feedback span would be a session's latest root span in Phoenix: its (empty) output
    would blank the session's last output. The session's goes in a trace of its own, a turn's in
    the turn's trace, each under a remote parent that is never exported."""
    turn = "0af7651916cd43dd8448eb211c80319c"
    record_feedback("s-1", "thumbs", label="down", tracer_provider=memory)
    record_feedback("s-1", "resolved", score=1, turn=turn, tracer_provider=memory)
    on_session, on_turn = span_exporter.get_finished_spans()
    for span in (on_session, on_turn):
        assert span.parent is not None
        assert span.parent.is_remote
        assert span.parent.trace_id == span.context.trace_id
        assert span.parent.span_id != span.context.span_id
        assert span.context.trace_flags.sampled
    assert format(on_turn.context.trace_id, "032x") == turn
    assert on_session.context.trace_id != on_turn.context.trace_id


def test_feedback_on_a_turn_that_names_no_trace_id_gets_a_trace_of_its_own(
    memory: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    turns = ["0x" + "ab" * 15, "ab_" * 10 + "ab", "0" * 32, "turn-7"]  # none is a trace id
    for turn in turns:
        assert record_feedback("s-1", "resolved", score=1, turn=turn, tracer_provider=memory)
    spans = span_exporter.get_finished_spans()
    assert [span.attributes["convotel.feedback.turn"] for span in spans] == turns
    assert len({span.context.trace_id for span in spans}) == len(turns)
    assert spans[0].context.trace_id != int(turns[0], 16)  # not read as hex with a prefix
    assert all(span.parent is not None and span.parent.is_remote for span in spans)


def test_feedback_inside_a_span_is_its_child(
    memory: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    with memory.get_tracer("app").start_as_current_span("POST /feedback") as request:
        record_feedback("s-1", "thumbs", label="up", turn="ab" * 16, tracer_provider=memory)
    feedback, _ = span_exporter.get_finished_spans()
    assert feedback.parent == request.get_span_context()
    assert feedback.context.trace_id == request.get_span_context().trace_id


def test_feedback_is_sampled_with_its_session(span_exporter: InMemorySpanExporter) -> None:
    """Under a session sampler, feedback is kept exactly when its session's turns are."""
    kept, dropped = "s-kept-0", "s-dropped-0"
    assert session_bucket(kept) < 5000 <= session_bucket(dropped)
    provider = TracerProvider(sampler=SessionSampler(0.5))
    provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    for session in (kept, dropped):
        record_feedback(session, "thumbs", label="up", tracer_provider=provider)
        record_feedback(session, "thumbs", label="up", turn="cd" * 16, tracer_provider=provider)
    recorded = span_exporter.get_finished_spans()
    assert [span.attributes[SpanAttributes.SESSION_ID] for span in recorded] == [kept, kept]
    # A trace-id sampler decides a turn's feedback as it decided the turn (the same trace id).
    span_exporter.clear()
    ratio = TracerProvider(sampler=TraceIdRatioBased(0.5))
    ratio.add_span_processor(SimpleSpanProcessor(span_exporter))
    kept_turn, dropped_turn = "0" * 31 + "1", "f" * 32
    for turn in (kept_turn, dropped_turn):
        record_feedback(kept, "resolved", score=1, turn=turn, tracer_provider=ratio)
    (recorded_turn,) = span_exporter.get_finished_spans()
    assert format(recorded_turn.context.trace_id, "032x") == kept_turn


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
