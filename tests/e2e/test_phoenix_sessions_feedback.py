"""End to end: ``convotel.record_feedback`` into a real Phoenix server, read back over its REST API.

A session of two turns through the real OpenAI SDK (convotel's instrumentor, the demo's loopback
LLM server) goes to Phoenix over OTLP; once Phoenix knows it, feedback on the session and on its
second turn is recorded through the same tracer provider, with Phoenix's endpoint. Phoenix must
hold it as a session annotation and as an annotation of the turn's trace, one per source, and
still show the session's turns, first input and last output. Feedback on a session Phoenix does
not know is logged once, never raised and never waited for.
"""

from __future__ import annotations

import logging
import time
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from phoenix_e2e import FEEDBACK_SPAN, SESSION_ROOTS_QUERY, Phoenix, wait_for_sessions

from convotel import call_span, record_feedback, using_session, using_user
from convotel import feedback as feedback_module
from convotel.demo.fake_server import FakeLLMServer
from convotel.feedback import flush_feedback
from convotel.propagation import SessionSpanProcessor

pytestmark = pytest.mark.e2e

QUESTIONS = ("Which train goes from Lisbon to Porto?", "And how long does it take?")
SLOW = "Too slow, and the second answer missed my question."
MISSED = "It did not say how long."
#: Seconds the feedback may take to reach Phoenix (its 404 retries included).
FLUSH_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class FeedbackRun:
    project: str
    session_id: str
    #: The turns' trace ids and the replies the user read, oldest first.
    turns: tuple[str, ...]
    replies: tuple[str, ...]
    #: Phoenix's session node (SESSIONS_QUERY) once the feedback spans are in too.
    node: dict[str, Any]


@pytest.fixture(scope="module")
def feedback_run(phoenix: Phoenix, run_id: str) -> Iterator[FeedbackRun]:
    openai = pytest.importorskip("openai")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    from convotel.openai import OpenAIInstrumentor

    phoenix.wait_until_healthy()
    project, session_id = f"convotel-e2e-feedback-{run_id}", f"feedback-{run_id}"
    provider = TracerProvider(resource=Resource.create({"openinference.project.name": project}))
    provider.add_span_processor(SessionSpanProcessor())
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{phoenix.base_url}/v1/traces"))
    )
    local = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(local))
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    replies = []
    try:
        with FakeLLMServer() as server, using_session(session_id), using_user("erin"):
            client = openai.OpenAI(base_url=server.openai_base_url, api_key="sk-test")
            for question in QUESTIONS:  # no span around a call: each is a trace, a turn
                answer = client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": question}]
                )
                replies.append(str(answer.choices[0].message.content))
    finally:
        instrumentor.uninstrument()
    turns = tuple(format(span.context.trace_id, "032x") for span in local.get_finished_spans())
    assert len(set(turns)) == len(QUESTIONS)
    wait_for_sessions(phoenix, project, {session_id: len(QUESTIONS)}, spans=len(QUESTIONS))

    def give(name: str, **given: Any) -> None:
        assert record_feedback(
            session_id, name, tracer_provider=provider, phoenix_endpoint=phoenix.base_url, **given
        )

    give("thumbs", label="up", score=1, source="e2e")
    assert flush_feedback(FLUSH_TIMEOUT_S)  # in Phoenix before the same source's next one
    give("thumbs", label="down", score=0, explanation=SLOW, source="e2e")  # replaces it there
    give("thumbs", label="up", score=1, source="kim")
    give("helpful", label="no", score=0, explanation=MISSED, turn=turns[1], source="e2e")
    assert flush_feedback(FLUSH_TIMEOUT_S)
    # Each feedback on the session is a trace of it; the turn's is a span of the turn's trace.
    found = wait_for_sessions(phoenix, project, {session_id: len(QUESTIONS) + 3}, spans=6)
    try:
        yield FeedbackRun(project, session_id, turns, tuple(replies), found[session_id])
    finally:
        provider.shutdown()


def test_session_feedback_is_one_session_annotation_per_source(
    phoenix: Phoenix, feedback_run: FeedbackRun
) -> None:
    listed = phoenix.annotations(feedback_run.project, "session", [feedback_run.session_id])
    by_source = {annotation["identifier"]: annotation for annotation in listed}
    assert sorted(by_source) == ["e2e", "kim"]  # e2e's thumbs-down replaced its thumbs-up
    down, up = by_source["e2e"], by_source["kim"]
    assert down["session_id"] == up["session_id"] == feedback_run.session_id
    assert down["name"] == up["name"] == "thumbs"
    assert down["result"] == {"label": "down", "score": 0.0, "explanation": SLOW}
    assert up["result"] == {"label": "up", "score": 1.0, "explanation": None}
    assert down["metadata"] == {"source": "e2e"}
    assert up["metadata"] == {"source": "kim"}
    for annotation in listed:
        assert annotation["annotator_kind"] == "HUMAN"
        assert annotation["source"] == "API"  # Phoenix's word for "sent over its REST API"
        assert annotation["user_id"] is None  # Phoenix runs without authentication here


def test_turn_feedback_is_an_annotation_of_the_turns_trace(
    phoenix: Phoenix, feedback_run: FeedbackRun
) -> None:
    (annotation,) = phoenix.annotations(feedback_run.project, "trace", feedback_run.turns)
    assert annotation["trace_id"] == feedback_run.turns[1]
    assert annotation["name"] == "helpful"
    assert annotation["result"] == {"label": "no", "score": 0.0, "explanation": MISSED}
    assert (annotation["annotator_kind"], annotation["identifier"]) == ("HUMAN", "e2e")
    assert annotation["metadata"] == {"source": "e2e"}
    on_session = phoenix.annotations(feedback_run.project, "session", [feedback_run.session_id])
    assert "helpful" not in {a["name"] for a in on_session}


def test_the_session_keeps_its_turns_first_input_and_last_output(
    phoenix: Phoenix, feedback_run: FeedbackRun
) -> None:
    node = feedback_run.node
    assert node["userId"] == "erin"
    assert node["firstInput"]["value"] == QUESTIONS[0]
    assert node["lastOutput"]["value"] == feedback_run.replies[-1]  # not a feedback span's
    assert node["tokenUsage"]["prompt"] > 0
    data = phoenix.graphql(SESSION_ROOTS_QUERY, {"name": feedback_run.project})
    (session,) = data["getProjectByName"]["sessions"]["edges"]
    traces = {
        t["node"]["traceId"]: t["node"]["rootSpan"] for t in session["node"]["traces"]["edges"]
    }
    turns = {
        trace_id: root["name"] for trace_id, root in traces.items() if root["parentId"] is None
    }
    assert turns == dict.fromkeys(feedback_run.turns, "ChatCompletion")
    feedback = [root for root in traces.values() if root["parentId"] is not None]
    assert [root["name"] for root in feedback] == [FEEDBACK_SPAN] * 3
    (on_turn,) = [
        span
        for span in phoenix.spans(feedback_run.project)
        if span["attributes"].get("convotel.feedback.scope") == "turn"
    ]
    assert on_turn["context"]["trace_id"] == feedback_run.turns[1]
    assert on_turn["span_kind"] == "EVALUATOR"
    assert on_turn["parent_id"] is not None


def test_feedback_on_a_session_phoenix_does_not_know_is_logged_once_and_never_blocks(
    phoenix: Phoenix, run_id: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The application's spans never reached this Phoenix (here: a provider of its own): Phoenix
    answers 404 to each attempt, the feedback is given up, and the problem logged once."""
    phoenix.wait_until_healthy()
    monkeypatch.setattr(call_span, "_logged", set())
    monkeypatch.setattr(feedback_module, "PHOENIX_RETRY_DELAYS", (0.2, 0.4))
    caplog.set_level(logging.WARNING, logger="convotel")
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    unknown = f"nowhere-{run_id}"
    started = time.monotonic()
    for session in (unknown, f"{unknown}-too"):
        assert record_feedback(
            session,
            "thumbs",
            label="down",
            tracer_provider=provider,
            phoenix_endpoint=phoenix.base_url,
        )
    assert time.monotonic() - started < 0.2  # sent in the background
    assert flush_feedback(FLUSH_TIMEOUT_S)
    assert time.monotonic() - started < 0.6 + 3 * feedback_module.PHOENIX_TIMEOUT  # bounded
    logged = [r.getMessage() for r in caplog.records if "feedback to Phoenix" in r.getMessage()]
    assert len(logged) == 1, logged  # once for the endpoint and the problem
    assert f"sending feedback to Phoenix at {phoenix.base_url} failed" in logged[0]
    assert "Phoenix does not know the session 'nowhere-" in logged[0]
    assert "HTTP 404" in logged[0]
    assert "do not exist" in logged[0]  # Phoenix's own words
    with pytest.raises(urllib.error.HTTPError, match="404"):
        phoenix.rest(f"/v1/sessions/{unknown}")  # nothing was made up on Phoenix's side
    provider.shutdown()
