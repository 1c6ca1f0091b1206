"""Whole-session sampling (``convotel.sampling``): sessions are kept or dropped whole."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import subprocess
import sys
from collections import defaultdict

import pytest
from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from convotel import using_session
from convotel.propagation import SessionBaggagePropagator, SessionSpanProcessor
from convotel.sampling import (
    BUCKETS,
    SESSION_SAMPLE_BUCKET,
    SessionSampler,
    session_bucket,
    session_sampler,
)

SESSIONS = 1_000
TURNS = 3
RATIO = 0.25


def traced(sampler: SessionSampler) -> tuple[trace.Tracer, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SessionSpanProcessor())  # every span carries its session
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test"), exporter


def run_turn(tracer: trace.Tracer, session_id: str | None, turn: int) -> None:
    """One turn: a root span with a model call below it, in the session if any."""
    scope = using_session(session_id) if session_id is not None else contextlib.nullcontext()
    with (
        scope,
        tracer.start_as_current_span(f"turn {turn}"),
        tracer.start_as_current_span("ChatCompletion"),
    ):
        pass


def test_sessions_are_kept_or_dropped_whole_at_the_ratio() -> None:
    tracer, exporter = traced(SessionSampler(RATIO))
    ids = [f"session-{index:04d}" for index in range(SESSIONS)]
    for turn in range(TURNS):  # interleaved, as concurrent conversations are
        for session_id in ids:
            run_turn(tracer, session_id, turn)

    spans_by_session: dict[str, list[object]] = defaultdict(list)
    for span in exporter.get_finished_spans():
        attributes = span.attributes or {}
        session_id = str(attributes["session.id"])
        bucket = attributes[SESSION_SAMPLE_BUCKET]
        assert type(bucket) is int  # tail sampling's numeric policies read int64
        assert bucket == session_bucket(session_id) < RATIO * BUCKETS
        spans_by_session[session_id].append(span)

    assert all(len(spans) == 2 * TURNS for spans in spans_by_session.values())  # whole turns
    expected = {s for s in ids if session_bucket(s) < round(RATIO * BUCKETS)}
    assert set(spans_by_session) == expected
    # 1,000 sessions at 0.25: 250 expected, binomial standard deviation ~13.7; 4 sd tolerance.
    assert abs(len(expected) - RATIO * SESSIONS) <= 55, len(expected)


def test_the_bucket_is_the_documented_function() -> None:
    for session_id in ("a", "conversation-42", "sess-0123456789abcdef", "é ✓ 🙂"):
        digest = hashlib.sha256(session_id.encode("utf-8")).digest()
        assert session_bucket(session_id) == int.from_bytes(digest[:8], "big") % BUCKETS
    assert session_bucket("conversation-42") == 8441  # pinned: other tools must get the same


def test_another_process_decides_identically() -> None:
    ids = [f"user-{index}/chat-{index * 7}" for index in range(300)]
    program = (
        "import json, sys\n"
        "from convotel.sampling import session_bucket\n"
        "print(json.dumps([session_bucket(s) for s in json.loads(sys.stdin.read())]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        input=json.dumps(ids),
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    )
    assert json.loads(done.stdout) == [session_bucket(s) for s in ids]


def test_turns_outside_a_session_use_the_fallback() -> None:
    kept = next(s for s in (f"s{i}" for i in range(100)) if session_bucket(s) < 5_000)
    tracer, exporter = traced(SessionSampler(0.5, fallback=ALWAYS_OFF))
    run_turn(tracer, None, 0)
    run_turn(tracer, kept, 1)
    assert {span.name for span in exporter.get_finished_spans()} == {"turn 1", "ChatCompletion"}

    tracer, exporter = traced(SessionSampler(0.0, fallback=ALWAYS_ON))
    run_turn(tracer, None, 0)
    run_turn(tracer, kept, 1)  # ratio 0: no session is kept
    spans = exporter.get_finished_spans()
    assert {span.name for span in spans} == {"turn 0", "ChatCompletion"}
    assert all(SESSION_SAMPLE_BUCKET not in (span.attributes or {}) for span in spans)


def test_children_follow_a_remote_parent_whatever_their_session() -> None:
    dropped = next(s for s in (f"s{i}" for i in range(100)) if session_bucket(s) >= 2_500)
    propagator = CompositePropagator(
        [TraceContextTextMapPropagator(), W3CBaggagePropagator(), SessionBaggagePropagator()]
    )
    tracer, exporter = traced(SessionSampler(RATIO))
    for flags in ("01", "00"):  # the caller sampled the trace, or did not
        headers = {
            "traceparent": f"00-{'ab' * 16}-{'cd' * 8}-{flags}",
            "baggage": f"session.id={dropped}",
        }
        token = context_api.attach(propagator.extract(headers))
        try:
            with tracer.start_as_current_span(f"server {flags}"):
                pass
        finally:
            context_api.detach(token)
    (span,) = exporter.get_finished_spans()
    assert span.name == "server 01"  # kept because its parent was, though its session is not
    assert (span.attributes or {})[SESSION_SAMPLE_BUCKET] == session_bucket(dropped)


def test_start_attributes_are_kept_and_a_session_among_them_counts() -> None:
    kept = next(s for s in (f"s{i}" for i in range(100)) if session_bucket(s) < 2_500)
    tracer, exporter = traced(SessionSampler(RATIO, fallback=ALWAYS_OFF))
    tracer.start_span("root", attributes={"session.id": kept, "custom": 7}).end()
    (span,) = exporter.get_finished_spans()
    assert dict(span.attributes or {}) == {
        "session.id": kept,
        "custom": 7,
        SESSION_SAMPLE_BUCKET: session_bucket(kept),
    }


@pytest.mark.parametrize("ratio", [-0.1, 1.5, "0.5", True, None])
def test_a_bad_ratio_is_a_clear_error(ratio: object) -> None:
    with pytest.raises(ValueError, match="ratio must be a number from 0 to 1"):
        SessionSampler(ratio)  # type: ignore[arg-type]


def test_the_entry_point_factory_reads_the_environment_argument(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert isinstance(session_sampler("0.25"), SessionSampler)
    assert session_sampler("0.25").threshold == 2_500  # type: ignore[attr-defined]
    assert session_sampler(None).threshold == BUCKETS  # type: ignore[attr-defined]
    assert session_sampler("").threshold == BUCKETS  # type: ignore[attr-defined]
    with caplog.at_level(logging.WARNING, logger="convotel.sampling"):
        assert session_sampler("lots").threshold == BUCKETS  # type: ignore[attr-defined]
    assert "OTEL_TRACES_SAMPLER_ARG='lots' is not a ratio" in caplog.text


def test_a_failing_decision_falls_back_and_never_reaches_the_application(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(session_id: str) -> int:
        raise RuntimeError("bucket store unavailable")

    monkeypatch.setattr("convotel.sampling.session_bucket", broken)
    tracer, exporter = traced(SessionSampler(RATIO, fallback=ALWAYS_ON))
    with caplog.at_level(logging.WARNING, logger="convotel.sampling"):
        run_turn(tracer, "any-session", 0)
        run_turn(tracer, "any-session", 1)
    assert len(exporter.get_finished_spans()) == 4  # the fallback kept them
    assert caplog.text.count("the session sampler failed; the fallback sampler decided") == 1
