"""`convotel demo --serve`: the chatbot as a real web service (FastAPI on uvicorn, OpenTelemetry's
FastAPI instrumentation), its users over HTTP, the loopback LLM server underneath; checked in the
SQLite store against what the users received and what the loopback server billed."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from demo_cli import run_cli
from openinference.semconv.trace import SpanAttributes
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from convotel import cli
from convotel.demo import app as demo_app
from convotel.demo.app import TURN_SPAN_NAME
from convotel.demo.bots import Reply
from convotel.demo.fake_replies import content_text, plan_reply
from convotel.demo.fake_server import FakeLLMServer, ServedRequest
from convotel.demo.script import CONVERSATIONS, Conversation, ScriptedTurn
from convotel.propagation import SessionSpanProcessor
from convotel.sessions import Session
from convotel.store import SpanStore
from convotel.testing import CapturedSpans

web_app = pytest.importorskip("convotel.demo.web_app", reason="--serve needs fastapi and uvicorn")
web_users = pytest.importorskip("convotel.demo.web_users", reason="--serve needs httpx-sse")

RUN_ID = "w1"
TOKEN_CAPS = ("max_completion_tokens", "max_tokens")


@dataclass(frozen=True)
class ServedDemo:
    status: int
    stdout: str
    stderr: str
    sessions: dict[str, Session]
    #: (session id, what the user said) -> the reply the user received over HTTP.
    received: dict[tuple[str, str], Reply]
    llm_requests: list[ServedRequest]


def sessions_in(store: Path) -> dict[str, Session]:
    with SpanStore(store) as reader:
        return {session.session_id: session for session in reader.sessions()}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> ServedDemo:
    """``convotel demo --serve``, recording what each user received and what the loopback LLM
    server answered."""
    store = tmp_path_factory.mktemp("served") / "spans.sqlite3"
    llm_servers: list[FakeLLMServer] = []
    received: dict[tuple[str, str], Reply] = {}
    real_send_turn = web_users.send_turn

    class RecordedLLMServer(FakeLLMServer):
        def start(self) -> FakeLLMServer:
            llm_servers.append(self)
            return super().start()

    def send_turn(client: httpx.Client, conversation: Conversation, turn: ScriptedTurn) -> Reply:
        reply: Reply = real_send_turn(client, conversation, turn)
        received[(str(client.headers["x-session-id"]), turn.text)] = reply
        return reply

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(demo_app, "FakeLLMServer", RecordedLLMServer)
        patch.setattr(web_users, "send_turn", send_turn)
        status, stdout, stderr = run_cli(
            ["demo", "--serve", "--store", str(store), "--run-id", RUN_ID]
        )
    (llm_server,) = llm_servers
    return ServedDemo(status, stdout, stderr, sessions_in(store), received, llm_server.served)


@pytest.fixture(scope="module")
def in_process(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Session]:
    """The same run of the in-process demo (``chat_turn`` roots), for comparison."""
    store = tmp_path_factory.mktemp("in_process") / "spans.sqlite3"
    status, _, stderr = run_cli(["demo", "--store", str(store), "--run-id", RUN_ID])
    assert status == 0, stderr
    return sessions_in(store)


def first_user_message(request: ServedRequest) -> str:
    messages = request.body.get("messages") or []
    return next(content_text(m.get("content")) for m in messages if m.get("role") == "user")


# -- the run -------------------------------------------------------------------------------------


def test_serve_demo_answers_every_turn_over_http(served: ServedDemo) -> None:
    assert served.status == 0, served.stderr
    assert "Chat service (FastAPI on uvicorn): POST http://127.0.0.1:" in served.stdout
    turn_lines = [line for line in served.stdout.splitlines() if line.startswith("  ✓ ")]
    assert len(turn_lines) == sum(len(c.turns) for c in CONVERSATIONS)
    assert "✗" not in served.stdout
    assert "InternalServerError (HTTP 500): the bot retried and got an answer" in served.stdout
    assert f"{len(CONVERSATIONS)} sessions of 4 users, 20 turns." in served.stdout
    assert len(served.received) == sum(len(c.turns) for c in CONVERSATIONS)


def test_every_trace_is_rooted_in_the_http_server_span_of_its_turn(served: ServedDemo) -> None:
    assert set(served.sessions) == {c.session_id(RUN_ID) for c in CONVERSATIONS}
    for conversation in CONVERSATIONS:
        session = served.sessions[conversation.session_id(RUN_ID)]
        assert len(session.turns) == len(conversation.turns)
        for turn, said in zip(session.turns, conversation.turns, strict=True):
            root = turn.root
            assert root.parent_id is None
            assert root.kind == "SERVER", root.describe()
            assert root.name == ("POST /chat/stream" if said.stream else "POST /chat")
            assert root.attributes["http.route"] == ("/chat/stream" if said.stream else "/chat")
            assert TURN_SPAN_NAME not in {span.name for span in turn.spans}
            assert root.attributes[SpanAttributes.SESSION_ID] == session.session_id
            assert root.attributes[SpanAttributes.USER_ID] == conversation.user_id


def test_every_span_carries_its_own_conversations_ids(served: ServedDemo) -> None:
    """Three users talk to the service at once: no id may leak into another's spans."""
    for conversation in CONVERSATIONS:
        session = served.sessions[conversation.session_id(RUN_ID)]
        for span in session.spans:
            assert span.session_id == session.session_id, span.describe()
            assert span.user_id == conversation.user_id, span.describe()


def test_each_root_carries_what_the_user_said_and_the_reply_they_received(
    served: ServedDemo,
) -> None:
    for conversation in CONVERSATIONS:
        session_id = conversation.session_id(RUN_ID)
        session = served.sessions[session_id]
        for turn, said in zip(session.turns, conversation.turns, strict=True):
            received = served.received[(session_id, said.text)]
            assert received.text, f"{session_id}: empty reply to {said.text!r}"
            assert turn.root.attributes[SpanAttributes.INPUT_VALUE] == said.text
            assert turn.root.attributes[SpanAttributes.OUTPUT_VALUE] == received.text
            assert turn.root.attributes[SpanAttributes.OUTPUT_MIME_TYPE] == "text/plain"
        assert session.first_input == conversation.turns[0].text
        last = served.received[(session_id, conversation.turns[-1].text)]
        assert session.last_output == last.text


def test_feedback_on_a_served_turn_names_the_trace_of_its_http_request(
    served: ServedDemo,
) -> None:
    porto = next(c for c in CONVERSATIONS if c.slug == "porto-weekend")
    session = served.sessions[porto.session_id(RUN_ID)]
    (feedback,) = session.feedback
    assert (feedback.name, feedback.label, feedback.source) == ("thumbs", "down", porto.user_id)
    assert feedback.turn == session.turns[1].trace_id
    assert session.turns[1].root.name == "POST /chat"
    with_feedback = {sid for sid, s in served.sessions.items() if s.feedback}
    slugs = ("double-charge", "lisbon-trip", "porto-weekend")
    assert with_feedback == {c.session_id(RUN_ID) for c in CONVERSATIONS if c.slug in slugs}


def test_token_totals_equal_the_usage_the_loopback_server_billed(served: ServedDemo) -> None:
    by_first_message = {c.turns[0].text: c.session_id(RUN_ID) for c in CONVERSATIONS}
    billed: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for request in served.llm_requests:
        if request.status != 200:
            continue  # the injected 429 and 500 answers bill nothing
        plan = plan_reply(request.body, max_tokens_key=TOKEN_CAPS)
        counts = billed[by_first_message[first_user_message(request)]]
        counts[0] += plan.prompt_tokens
        counts[1] += plan.completion_tokens
    assert set(billed) == set(served.sessions)
    for session_id, session in served.sessions.items():
        assert (session.tokens.prompt, session.tokens.completion) == tuple(billed[session_id])
        assert session.tokens.total == sum(billed[session_id]) > 0
        users_saw = [reply for (sid, _), reply in served.received.items() if sid == session_id]
        assert sum(reply.prompt_tokens for reply in users_saw) == session.tokens.prompt


def test_sessions_have_the_same_shape_as_in_the_in_process_demo(
    served: ServedDemo, in_process: dict[str, Session]
) -> None:
    def shape(session: Session) -> dict[str, Any]:
        return {
            "user": session.user_id,
            "turns": [(turn.input, turn.output) for turn in session.turns],
            "tokens": session.tokens,
            "llm_calls": session.llm_calls,
            "errors": session.errors,
            "tool_calls": [call.name for turn in session.turns for call in turn.tool_calls],
        }

    assert {sid: shape(s) for sid, s in served.sessions.items()} == {
        sid: shape(s) for sid, s in in_process.items()
    }
    header = cli.format_sessions_table([]).splitlines()[0].split()
    rows = [line.split() for line in served.stdout.splitlines()]
    # COST shows once some call was priced (genai-prices knows the demo's models)
    assert [[word for word in row if word != "COST"] for row in rows].count(header) == 1


# -- the service on its own ----------------------------------------------------------------------


class _FailingBot:
    def reply(self, turn: ScriptedTurn, on_text: Any = None) -> Reply:
        if on_text is not None:
            on_text("Let me check")
        raise RuntimeError("the model is down")


def finished_trace(exporter: InMemorySpanExporter) -> tuple[ReadableSpan, ...]:
    """The spans once the root has ended (the server ends it after the client has its answer)."""
    deadline = time.monotonic() + 10
    while not any(span.parent is None for span in exporter.get_finished_spans()):
        assert time.monotonic() < deadline, "the request's root span never ended"
        time.sleep(0.01)
    return exporter.get_finished_spans()


@pytest.fixture
def convotel_instrumentors() -> list[Any]:
    """For ``convotel_spans``: the failing bot calls no SDK, so nothing is instrumented."""
    return []


@pytest.fixture
def convotel_span_processors() -> list[SpanProcessor]:
    """For ``convotel_spans``: the service's provider stamps sessions as ``--serve``'s does."""
    return [SessionSpanProcessor()]


@pytest.fixture
def failing_service(convotel_spans: CapturedSpans) -> Iterator[tuple[str, CapturedSpans]]:
    service = web_app.ChatService(lambda provider: _FailingBot())
    with web_app.ServedApp(web_app.create_app(service, convotel_spans.tracer_provider)) as app:
        yield app.url, convotel_spans


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_a_failed_turn_reaches_the_user_as_an_error_and_its_root_is_an_error(
    failing_service: tuple[str, CapturedSpans], stream: bool
) -> None:
    url, spans = failing_service
    conversation = CONVERSATIONS[1]
    headers = {"x-session-id": "s-fail", "x-user-id": "u-fail"}
    with (
        httpx.Client(base_url=url, headers=headers) as client,
        pytest.raises(web_users.ChatServiceError, match="RuntimeError: the model is down"),
    ):
        web_users.send_turn(client, conversation, ScriptedTurn("Hello?", stream=stream))
    finished_trace(spans.exporter)
    (session,) = spans.sessions()
    (turn,) = session.turns
    assert session.session_id == "s-fail"
    assert turn.root.kind == "SERVER"
    assert turn.root.attributes[SpanAttributes.USER_ID] == "u-fail"
    if not stream:
        status = {"http.status_code", "http.response.status_code"} & set(turn.root.attributes)
        assert [turn.root.attributes[key] for key in status] == [502]
        assert turn.root.status_code == "ERROR"


def test_serve_without_the_web_packages_names_them_and_the_demo_still_imports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_find_spec = demo_app.importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> Any:
        return None if name.startswith("fastapi") else real_find_spec(name, package)

    monkeypatch.setattr(demo_app.importlib.util, "find_spec", find_spec)
    status, stdout, stderr = run_cli(["demo", "--serve"])
    assert status == 2
    assert "needs fastapi>=0.135 (pip install 'fastapi>=0.135')" in stderr
    assert stdout == ""
    blocked = "; ".join(f"sys.modules[{name!r}] = None" for name in ("fastapi", "uvicorn"))
    check = (
        f"import sys; {blocked}; import convotel.demo.app as app; "
        "assert app.missing_packages(otlp=False) == [], app.missing_packages(otlp=False)"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
