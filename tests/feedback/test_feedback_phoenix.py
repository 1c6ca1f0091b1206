"""Feedback into Phoenix's REST annotation API (against a fake Phoenix on 127.0.0.1): what is
sent, the retries while Phoenix does not know the session yet, the failures logged once and never
raised or waited for, flush_feedback, and feedback on a sampled-out session not sent at all.
(The real Phoenix server: tests/e2e/test_phoenix_sessions_feedback.py.)"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import convotel
from convotel import call_span, record_feedback
from convotel import feedback as feedback_module
from convotel.feedback import flush_feedback, phoenix_request, send_to_phoenix
from convotel.sampling import SessionSampler, session_bucket

QUICK_RETRIES = (0.01, 0.02)


@dataclass
class FakePhoenix:
    """What the fake Phoenix received, and how it answers: ``statuses`` in turn (then 200),
    after ``delay`` seconds."""

    url: str
    received: list[tuple[str, Any]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    delay: float = 0.0

    def answer(self, path: str, body: Any) -> int:
        time.sleep(self.delay)
        self.received.append((path, body))
        return self.statuses.pop(0) if self.statuses else 200


@pytest.fixture
def fake_phoenix() -> Iterator[FakePhoenix]:
    phoenix = FakePhoenix("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            status = phoenix.answer(self.path, body)
            answer = (
                {"data": []} if status == 200 else {"detail": f"Sessions {status} do not exist."}
            )
            payload = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    phoenix.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield phoenix
    finally:
        assert flush_feedback(10)
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def fresh_logging(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Each test starts with nothing logged yet, and quick retries."""
    monkeypatch.setattr(call_span, "_logged", set())
    monkeypatch.setattr(feedback_module, "PHOENIX_RETRY_DELAYS", QUICK_RETRIES)
    caplog.set_level(logging.WARNING, logger="convotel")


def warnings_about_phoenix(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "feedback to Phoenix" in r.getMessage()]


def test_feedback_goes_to_phoenixs_session_and_trace_annotation_api(
    tracer_provider: TracerProvider, fake_phoenix: FakePhoenix, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVOTEL_PHOENIX_ENDPOINT", fake_phoenix.url)
    record_feedback(
        "s-1", "thumbs", label="up", score=1, source="bob", tracer_provider=tracer_provider
    )
    record_feedback("s-1", "resolved", score=0, turn="ab" * 16, tracer_provider=tracer_provider)
    assert flush_feedback(5)
    assert sorted(fake_phoenix.received, key=lambda r: r[0]) == [
        (
            "/v1/session_annotations?sync=true",
            {
                "data": [
                    {
                        "name": "thumbs",
                        "annotator_kind": "HUMAN",
                        "result": {"score": 1.0, "label": "up"},
                        "metadata": {"source": "bob"},
                        "identifier": "bob",
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
                        "identifier": "",
                        "trace_id": "ab" * 16,
                    }
                ]
            },
        ),
    ]


def test_feedback_is_sent_again_while_phoenix_does_not_know_the_session_yet(
    fake_phoenix: FakePhoenix, caplog: pytest.LogCaptureFixture
) -> None:
    fake_phoenix.statuses = [404, 404]  # the session's spans arrive meanwhile
    given = convotel.Feedback("s-1", "thumbs", label="up")
    assert send_to_phoenix(given, fake_phoenix.url, retry_delays=(0.01, 0.01, 0.01)) is True
    assert len(fake_phoenix.received) == 3
    assert warnings_about_phoenix(caplog) == []


def test_a_session_phoenix_never_learns_of_is_logged_once_naming_it(
    tracer_provider: TracerProvider, fake_phoenix: FakePhoenix, caplog: pytest.LogCaptureFixture
) -> None:
    fake_phoenix.statuses = [404] * 10
    started = time.monotonic()
    for session in ("s-unknown", "s-unknown-too"):
        record_feedback(
            session,
            "thumbs",
            label="up",
            tracer_provider=tracer_provider,
            phoenix_endpoint=fake_phoenix.url,
        )
    assert time.monotonic() - started < 0.5  # sent from background threads
    assert flush_feedback(5)
    assert len(fake_phoenix.received) == 2 * (len(QUICK_RETRIES) + 1)  # then given up
    (logged,) = warnings_about_phoenix(caplog)  # once per endpoint and problem
    assert f"sending feedback to Phoenix at {fake_phoenix.url} failed" in logged
    assert "Phoenix does not know the session 's-unknown" in logged
    assert "(HTTP 404: Sessions 404 do not exist.)" in logged


def test_an_error_that_is_not_404_is_not_retried(fake_phoenix: FakePhoenix) -> None:
    fake_phoenix.statuses = [500]
    given = convotel.Feedback("s-1", "thumbs", label="up", turn="ab" * 16)
    assert send_to_phoenix(given, fake_phoenix.url) is False
    assert len(fake_phoenix.received) == 1


def test_a_phoenix_that_is_down_never_blocks_and_is_logged_once(
    tracer_provider: TracerProvider, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    started = time.monotonic()
    given = record_feedback(
        "s-1", "thumbs", label="up", tracer_provider=tracer_provider, phoenix_endpoint=closed
    )
    assert given is not None
    assert time.monotonic() - started < 0.5  # sent from a background thread
    assert flush_feedback(5)
    assert send_to_phoenix(given, closed, timeout=1.0) is False
    (logged,) = warnings_about_phoenix(caplog)
    assert f"sending feedback to Phoenix at {closed} failed" in logged
    assert "refused" in logged.lower()


def test_flush_feedback_waits_for_the_sends_at_most_its_timeout(
    tracer_provider: TracerProvider, fake_phoenix: FakePhoenix
) -> None:
    fake_phoenix.delay = 0.5
    record_feedback(
        "s-1",
        "thumbs",
        label="up",
        tracer_provider=tracer_provider,
        phoenix_endpoint=fake_phoenix.url,
    )
    started = time.monotonic()
    assert flush_feedback(0.05) is False
    assert time.monotonic() - started < 0.3
    assert fake_phoenix.received == []
    assert flush_feedback(5) is True
    assert len(fake_phoenix.received) == 1
    assert flush_feedback(0) is True  # nothing left


def test_feedback_on_a_sampled_out_session_is_not_sent(
    span_exporter: InMemorySpanExporter, fake_phoenix: FakePhoenix
) -> None:
    kept, dropped = "s-kept-0", "s-dropped-0"
    assert session_bucket(kept) < 5000 <= session_bucket(dropped)
    provider = TracerProvider(sampler=SessionSampler(0.5))
    provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    for session in (dropped, kept):
        assert record_feedback(
            session,
            "thumbs",
            label="up",
            tracer_provider=provider,
            phoenix_endpoint=fake_phoenix.url,
        )
    assert flush_feedback(5)
    assert [body["data"][0]["session_id"] for _, body in fake_phoenix.received] == [kept]


def test_phoenix_request_for_a_session() -> None:
    given = convotel.Feedback("s-1", "nps", score=9, explanation="great", source="survey")
    url, body = phoenix_request(given, "http://phoenix:6006/")
    assert url == "http://phoenix:6006/v1/session_annotations"
    (annotation,) = body["data"]
    assert annotation["result"] == {"score": 9, "explanation": "great"}
    assert (annotation["identifier"], annotation["metadata"]) == ("survey", {"source": "survey"})


def feedback_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "convotel-feedback" and t.is_alive()]


def test_a_burst_of_feedback_is_sent_by_a_few_threads_that_end_when_done(
    tracer_provider: TracerProvider, fake_phoenix: FakePhoenix
) -> None:
    fake_phoenix.delay = 0.02
    for index in range(40):
        record_feedback(
            f"s-{index}",
            "thumbs",
            score=1,
            tracer_provider=tracer_provider,
            phoenix_endpoint=fake_phoenix.url,
        )
    most = 0
    deadline = time.monotonic() + 10
    while len(fake_phoenix.received) < 40 and time.monotonic() < deadline:
        most = max(most, len(feedback_threads()))
        time.sleep(0.005)
    assert flush_feedback(5)
    assert 1 <= most <= feedback_module.MAX_SENDERS
    sent = sorted(body["data"][0]["session_id"] for _, body in fake_phoenix.received)
    assert sent == sorted(f"s-{index}" for index in range(40))  # each once
    deadline = time.monotonic() + 2
    while feedback_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert feedback_threads() == []  # no thread waits around once the queue is empty


def test_feedback_beyond_the_pending_bound_is_not_sent_and_logged_once(
    tracer_provider: TracerProvider,
    fake_phoenix: FakePhoenix,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(feedback_module, "MAX_PENDING", 3)
    fake_phoenix.delay = 0.2
    for index in range(6):
        assert record_feedback(
            f"s-{index}",
            "thumbs",
            score=1,
            tracer_provider=tracer_provider,
            phoenix_endpoint=fake_phoenix.url,
        )  # recorded in the spans all the same
    assert flush_feedback(5)
    assert len(fake_phoenix.received) == 3
    full = [r.getMessage() for r in caplog.records if "are waiting" in r.getMessage()]
    assert len(full) == 1
    assert "more than 3 feedback sends to Phoenix" in full[0]


def test_a_sender_thread_that_cannot_start_never_reaches_the_app(
    tracer_provider: TracerProvider,
    fake_phoenix: FakePhoenix,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    with monkeypatch.context() as patched:
        patched.setattr(threading.Thread, "start", refuse)
        assert record_feedback(
            "s-1",
            "thumbs",
            score=1,
            tracer_provider=tracer_provider,
            phoenix_endpoint=fake_phoenix.url,
        )
    assert flush_feedback(0)  # nothing is left waiting for a sender that never came
    assert fake_phoenix.received == []
    assert any("starting a feedback sender failed" in r.getMessage() for r in caplog.records)
