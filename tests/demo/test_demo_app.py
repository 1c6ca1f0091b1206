"""`convotel demo` end to end: real SDKs and instrumentors, loopback server, SQLite store, CLI."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from demo_cli import conversation, run_cli
from openinference.semconv.trace import (
    MessageAttributes,
    OpenInferenceSpanKindValues,
    SpanAttributes,
    ToolCallAttributes,
)
from opentelemetry.instrumentation.dependencies import get_dependency_conflicts
from opentelemetry.semconv.attributes.http_attributes import (
    HTTP_REQUEST_RESEND_COUNT,
    HTTP_RESPONSE_STATUS_CODE,
)

from convotel import cli
from convotel.demo.app import TURN_SPAN_NAME
from convotel.demo.script import CONVERSATIONS, FEEDBACK, MISTRAL_MODEL
from convotel.sessions import Session, SpanRecord, Turn
from convotel.spans import STREAM_OUTCOME, TIME_TO_FIRST_TOKEN_MS
from convotel.store import SpanStore

RUN_ID = "t1"
LLM = OpenInferenceSpanKindValues.LLM.value
TOOL = OpenInferenceSpanKindValues.TOOL.value
OUTPUT_TOOL_NAME = (
    f"{SpanAttributes.LLM_OUTPUT_MESSAGES}.0.{MessageAttributes.MESSAGE_TOOL_CALLS}.0."
    f"{ToolCallAttributes.TOOL_CALL_FUNCTION_NAME}"
)


@dataclass(frozen=True)
class DemoRun:
    status: int
    stdout: str
    stderr: str
    store_path: Path
    sessions: dict[str, Session]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    store_path = tmp_path_factory.mktemp("demo") / "spans.sqlite3"
    status, stdout, stderr = run_cli(["demo", "--store", str(store_path), "--run-id", RUN_ID])
    with SpanStore(store_path) as store:
        sessions = {session.session_id: session for session in store.sessions()}
    return DemoRun(status, stdout, stderr, store_path, sessions)


def session_of(demo: DemoRun, slug: str) -> Session:
    return demo.sessions[conversation(slug).session_id(RUN_ID)]


def number(span: SpanRecord, key: str) -> float:
    value = span.attributes.get(key)
    assert isinstance(value, (int, float)), f"{key} of {span.describe()} is {value!r}"
    return value


def llm_spans(session: Session) -> list[SpanRecord]:
    return [span for span in session.spans if span.is_llm]


# -- the run and its output ------------------------------------------------------------------


def test_demo_succeeds_and_prints_one_progress_line_per_turn(demo: DemoRun) -> None:
    assert demo.status == 0, demo.stderr
    turn_lines = [line for line in demo.stdout.splitlines() if line.startswith("  ✓ ")]
    assert len(turn_lines) == sum(len(c.turns) for c in CONVERSATIONS)
    assert all(" tok " in line for line in turn_lines), "every turn reports its tokens"
    assert "✗" not in demo.stdout
    assert "InternalServerError (HTTP 500): the bot retried and got an answer" in demo.stdout


def test_demo_prints_the_cli_sessions_table_of_its_run(demo: DemoRun) -> None:
    header = cli.format_sessions_table([]).splitlines()[0].split()
    rows = [line.split() for line in demo.stdout.splitlines()]
    # COST shows once some call was priced (genai-prices knows the demo's models)
    assert [[word for word in row if word != "COST"] for row in rows].count(header) == 1
    for c in CONVERSATIONS:
        assert c.session_id(RUN_ID) in demo.stdout
    assert f"{len(CONVERSATIONS)} sessions of 4 users" in demo.stdout
    assert f"convotel sessions --store {demo.store_path} show " in demo.stdout


def test_store_holds_at_least_five_sessions_of_at_least_three_users(demo: DemoRun) -> None:
    expected = {c.session_id(RUN_ID): c for c in CONVERSATIONS}
    assert set(demo.sessions) == set(expected)
    assert len(demo.sessions) >= 5
    assert len({s.user_id for s in demo.sessions.values()}) >= 3
    for session_id, session in demo.sessions.items():
        assert session.user_id == expected[session_id].user_id
        assert len(session.turns) == len(expected[session_id].turns)
        assert session.tokens.prompt > 0
        assert session.tokens.completion > 0


def test_every_span_of_a_turn_carries_its_own_conversations_ids(demo: DemoRun) -> None:
    """Conversations run on three threads at once: no id may leak into another's spans."""
    for c in CONVERSATIONS:
        session = demo.sessions[c.session_id(RUN_ID)]
        for turn in session.turns:
            assert turn.root.name == TURN_SPAN_NAME
            for span in turn.spans:
                assert span.session_id == session.session_id, span.describe()
                assert span.user_id == c.user_id, span.describe()
            assert turn.root.attributes[SpanAttributes.METADATA] == json.dumps(
                {"demo_run": RUN_ID, "provider": c.provider}
            )


def test_turn_spans_record_the_users_words_and_the_answer(demo: DemoRun) -> None:
    session = session_of(demo, "python-bug")
    scripted = conversation("python-bug").turns
    for turn, said in zip(session.turns, scripted, strict=True):
        assert turn.root.attributes[SpanAttributes.INPUT_VALUE] == said.text
        assert turn.root.attributes[SpanAttributes.OUTPUT_VALUE]
        assert turn.input == said.text
        assert turn.output == turn.root.attributes[SpanAttributes.OUTPUT_VALUE]
    assert session.first_input == scripted[0].text


def test_streamed_turn_has_tokens_and_time_to_first_token(demo: DemoRun) -> None:
    session = session_of(demo, "python-bug")
    streamed = [s for s in llm_spans(session) if s.attributes.get(STREAM_OUTCOME) == "completed"]
    assert len(streamed) == 2
    for span in streamed:
        assert number(span, SpanAttributes.LLM_TOKEN_COUNT_PROMPT) > 0
        assert number(span, SpanAttributes.LLM_TOKEN_COUNT_COMPLETION) > 0
        assert number(span, TIME_TO_FIRST_TOKEN_MS) > 0
        assert span.status_code == "OK"


def test_tool_call_turn_calls_the_tool_and_sends_the_result_back(demo: DemoRun) -> None:
    session = session_of(demo, "lisbon-trip")
    turn = session.turns[1]
    assert [call.name for call in turn.tool_calls] == ["get_weather"]
    assert json.loads(turn.tool_calls[0].arguments or "{}") == {"city": "Lisbon", "unit": "celsius"}
    asking, answering = sorted((s for s in turn.spans if s.is_llm), key=lambda span: span.start_ns)
    assert asking.attributes[OUTPUT_TOOL_NAME] == "get_weather"
    assert asking.attributes[SpanAttributes.LLM_FINISH_REASON] == "tool_calls"
    (tool,) = [s for s in turn.spans if s.span_kind == TOOL]
    assert tool.parent_id == turn.root.span_id
    assert tool.attributes[SpanAttributes.TOOL_NAME] == "get_weather"
    result = json.loads(str(tool.attributes[SpanAttributes.OUTPUT_VALUE]))
    assert result["city"] == "Lisbon"
    roles = [
        value
        for key, value in answering.attributes.items()
        if key.startswith(SpanAttributes.LLM_INPUT_MESSAGES)
        and key.endswith(MessageAttributes.MESSAGE_ROLE)
    ]
    assert "tool" in roles
    assert f"temperature {result['temperature']}" in (turn.output or "")


def test_parallel_tool_calls_in_a_streamed_turn(demo: DemoRun) -> None:
    turn = session_of(demo, "porto-weekend").turns[0]
    cities = [json.loads(call.arguments or "{}")["city"] for call in turn.tool_calls]
    assert cities == ["Porto", "Madrid"]
    assert len([s for s in turn.spans if s.span_kind == TOOL]) == 2
    first_llm = min((s for s in turn.spans if s.is_llm), key=lambda span: span.start_ns)
    assert first_llm.attributes[STREAM_OUTCOME] == "completed"


def test_error_session_shows_the_failed_call_the_sdk_retries_and_the_recovery(
    demo: DemoRun,
) -> None:
    session = session_of(demo, "double-charge")
    assert session.errors == 1
    rate_limited, failing, _ = session.turns
    (retried,) = llm_spans_of(rate_limited)
    assert retried.status_code == "OK"
    assert retried.attributes[HTTP_REQUEST_RESEND_COUNT] == 1
    assert [e.attributes[HTTP_RESPONSE_STATUS_CODE] for e in retried.events] == [429]
    failed, recovered = sorted(llm_spans_of(failing), key=lambda span: span.start_ns)
    assert failed.status_code == "ERROR"
    assert failed.attributes[HTTP_RESPONSE_STATUS_CODE] == 500
    assert failed.attributes[HTTP_REQUEST_RESEND_COUNT] == 2
    assert [e.name for e in failed.events] == ["retry", "retry", "exception"]
    assert recovered.status_code == "OK"
    assert [error.span_id for error in failing.errors] == [failed.span_id]
    assert failing.root.status_code == "OK"
    assert failing.output


def llm_spans_of(turn: Turn) -> list[SpanRecord]:
    return [span for span in turn.spans if span.is_llm]


def test_mistral_session_is_traced_by_the_mistral_instrumentor(demo: DemoRun) -> None:
    session = session_of(demo, "marathon-plan")
    spans = llm_spans(session)
    assert len(spans) == 3
    for span in spans:
        assert span.attributes[SpanAttributes.LLM_PROVIDER] == "mistralai"
        assert span.attributes[SpanAttributes.LLM_MODEL_NAME] == MISTRAL_MODEL
        assert number(span, SpanAttributes.LLM_TOKEN_COUNT_COMPLETION) > 0
    assert [s.attributes.get(STREAM_OUTCOME) for s in spans] == [None, "completed", "completed"]
    assert {s.name for s in session.spans if s.span_kind != "CHAIN"} == {
        "mistralai.chat.complete",
        "mistralai.chat.stream",
    }


def test_llama_index_session_counts_each_model_call_once(demo: DemoRun) -> None:
    session = session_of(demo, "book-club")
    spans = llm_spans(session)
    assert len(spans) == len(conversation("book-club").turns)
    assert all(span.attributes[SpanAttributes.LLM_PROVIDER] == "openai" for span in spans)
    assert session.tokens.prompt == sum(
        number(span, SpanAttributes.LLM_TOKEN_COUNT_PROMPT) for span in spans
    )


def test_llama_index_instrumentor_adds_the_framework_spans(demo: DemoRun) -> None:
    adapter = pytest.importorskip("convotel.llama_index")
    requirements = adapter.LlamaIndexInstrumentor().instrumentation_dependencies()
    conflict = get_dependency_conflicts(list(requirements))
    if conflict is not None:
        pytest.skip(f"the LlamaIndex instrumentor is off here: {conflict}")
    session = session_of(demo, "book-club")
    names = [span.name for span in session.turns[0].spans]
    assert "SimpleChatEngine.chat" in names
    (framework,) = [span for span in session.turns[0].spans if span.name.endswith("LLM.chat")]
    assert framework.span_kind == "CHAIN"
    (provider,) = llm_spans_of(session.turns[0])
    assert provider.parent_id == framework.span_id


# -- the CLI on the demo's store ---------------------------------------------------------------


def test_cli_lists_the_demo_sessions_as_json(demo: DemoRun) -> None:
    status, stdout, _ = run_cli(["sessions", "--store", str(demo.store_path), "--json"])
    assert status == 0
    listed = {item["session_id"]: item for item in json.loads(stdout)}
    assert set(listed) == set(demo.sessions)
    assert listed[session_of(demo, "double-charge").session_id]["errors"] == 1


def test_cli_shows_a_conversation_turn_by_turn(demo: DemoRun) -> None:
    session_id = session_of(demo, "lisbon-trip").session_id
    status, stdout, _ = run_cli(["sessions", "--store", str(demo.store_path), "show", session_id])
    assert status == 0
    assert f"Session   {session_id}" in stdout
    assert 'tool    get_weather({"city": "Lisbon", "unit": "celsius"})' in stdout
    assert stdout.count("-- Turn ") == 4


def test_cli_filters_the_error_session(demo: DemoRun) -> None:
    status, stdout, _ = run_cli(
        ["sessions", "--store", str(demo.store_path), "--errors-only", "--json"]
    )
    assert status == 0
    assert [item["session_id"] for item in json.loads(stdout)] == [
        session_of(demo, "double-charge").session_id
    ]


# -- the users' feedback ---------------------------------------------------------------------


def test_the_users_feedback_is_on_their_sessions_and_turns(demo: DemoRun) -> None:
    given = {
        session_id: [(f.name, f.label, f.score, f.source, f.turn) for f in session.feedback]
        for session_id, session in demo.sessions.items()
        if session.feedback
    }
    porto = session_of(demo, "porto-weekend")
    assert given == {
        session_of(demo, "double-charge").session_id: [("thumbs", "down", 0.0, "bob", None)],
        session_of(demo, "lisbon-trip").session_id: [("thumbs", "up", 1.0, "alice", None)],
        porto.session_id: [("thumbs", "down", 0.0, "chloe", porto.turns[1].trace_id)],
    }
    assert len(FEEDBACK) == 3
    assert "Feedback the users gave (convotel.record_feedback):" in demo.stdout
    assert f"--store {demo.store_path} --feedback thumbs=down" in demo.stdout


def test_feedback_on_what_the_script_lacks_is_a_script_problem() -> None:
    from convotel.demo.script import ScriptedFeedback
    from convotel.demo.user_feedback import feedback_problems

    assert feedback_problems() == []
    assert feedback_problems(
        [
            ScriptedFeedback("nowhere", "thumbs", "up", 1),
            ScriptedFeedback("porto-weekend", "thumbs", "up", 1, turn=3),
        ]
    ) == [
        "feedback on 'nowhere', which is no conversation",
        "feedback on turn 3 of 'porto-weekend', which has no such turn",
    ]


def test_cli_lists_exactly_the_thumbs_down_sessions(demo: DemoRun) -> None:
    listed = {}
    for wanted in ("thumbs=down", "thumbs=up", "thumbs"):
        status, stdout, stderr = run_cli(
            ["sessions", "--store", str(demo.store_path), "--feedback", wanted, "--json"]
        )
        assert status == 0, stderr
        listed[wanted] = sorted(item["session_id"] for item in json.loads(stdout))
    down = sorted(session_of(demo, slug).session_id for slug in ("double-charge", "porto-weekend"))
    assert listed["thumbs=down"] == down
    assert listed["thumbs=up"] == [session_of(demo, "lisbon-trip").session_id]
    assert listed["thumbs"] == sorted([*down, *listed["thumbs=up"]])


def test_cli_show_lists_the_feedback_of_a_session_and_of_its_turn(demo: DemoRun) -> None:
    shown = {}
    for slug in ("double-charge", "porto-weekend", "python-bug"):
        session_id = session_of(demo, slug).session_id
        status, stdout, _ = run_cli(
            ["sessions", "--store", str(demo.store_path), "show", session_id]
        )
        assert status == 0
        shown[slug] = [line for line in stdout.splitlines() if line.startswith("Feedback")]
    assert shown == {
        "double-charge": [
            'Feedback  thumbs: down (0) "Two errors before it would look at my refund." by bob'
        ],
        "porto-weekend": [
            'Feedback  thumbs: down (0) "I asked which city, it never picked one." by chloe, '
            "on turn 2"
        ],
        "python-bug": [],
    }
