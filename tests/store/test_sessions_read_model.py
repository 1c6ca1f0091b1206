"""The read model: finished spans -> turns -> sessions (shared by the CLI and the pytest plugin)."""

from __future__ import annotations

import pytest
from openinference.semconv.trace import (
    MessageAttributes,
    MessageContentAttributes,
    SpanAttributes,
)
from store_spans import CHAIN, LLM, MS, T0_NS, TOOL, SpanMaker, ids, messages, trace_id_of

from convotel.sessions import (
    SpanRecord,
    TokenCounts,
    ToolCall,
    build_sessions,
    group_by_session,
)


def test_turns_are_grouped_into_sessions_in_time_order(spans: SpanMaker) -> None:
    second = spans.turn(200, session="s-1", user="alice", question="and tomorrow?", answer="rain")
    first = spans.turn(0, session="s-1", user="alice", question="weather?", answer="sun")
    other = spans.turn(100, session="s-2", user="bob", question="a joke", answer="knock knock")

    sessions = build_sessions(spans.finished())

    assert [s.session_id for s in sessions] == ["s-1", "s-2"]
    alice, bob = sessions
    assert [turn.trace_id for turn in alice.turns] == [first, second]
    assert [turn.trace_id for turn in bob.turns] == [other]
    assert alice.user_id == "alice"
    assert bob.user_id == "bob"
    assert alice.first_input == "weather?"
    assert alice.last_output == "rain"
    assert alice.first_time_ns == T0_NS
    assert alice.last_time_ns == T0_NS + 300 * MS
    assert alice.total_latency_ns == 200 * MS  # two turns of 100 ms, not the 300 ms between


def test_session_user_is_the_first_non_empty_user_id(spans: SpanMaker) -> None:
    spans.turn(0, session="s-1", user=None, question="hi", answer="hello")
    spans.turn(100, session="s-1", user="carol", question="again", answer="yes")
    spans.turn(200, session="s-1", user="dave", question="leak?", answer="hm")

    (session,) = build_sessions(spans.finished())

    assert session.user_id == "carol"
    assert session.user_ids == ("carol", "dave")


def test_trace_belongs_to_the_session_of_its_first_span_with_a_session_id(
    spans: SpanMaker,
) -> None:
    root = spans.start("agent", CHAIN, 0, {SpanAttributes.INPUT_VALUE: "plan a trip"})
    spans.llm(10, 10, session="s-first", user="u", parent=root, answer="step 1")
    spans.llm(30, 10, session="s-later", user="u", parent=root, answer="step 2")
    spans.end(root, 50)

    grouping = group_by_session(spans.finished())

    assert [s.session_id for s in grouping.sessions] == ["s-first"]
    (turn,) = grouping.sessions[0].turns
    assert [span.name for span in turn.spans_without_session] == ["agent"]
    assert [span.session_id for span in turn.stray_spans] == ["s-later"]
    assert turn.input == "plan a trip"


def test_traces_without_any_session_id_belong_to_no_session(spans: SpanMaker) -> None:
    spans.turn(0, session=None, user="u", question="anonymous", answer="ok")
    spans.turn(100, session="s-1", user="u", question="named", answer="ok")

    grouping = group_by_session(spans.finished())

    assert [s.session_id for s in grouping.sessions] == ["s-1"]
    assert [turn.input for turn in grouping.turns_without_session] == ["anonymous"]
    assert grouping.get("s-1") is grouping.sessions[0]
    assert grouping.get("s-missing") is None


def test_tokens_count_llm_spans_only_so_a_wrapping_framework_span_is_not_double_counted(
    spans: SpanMaker,
) -> None:
    # A framework span that saw a provider LLM span below it becomes CHAIN but may keep counts.
    framework = spans.start(
        "llama_index.chat",
        CHAIN,
        0,
        {
            **ids("s-1", "u"),
            SpanAttributes.LLM_TOKEN_COUNT_PROMPT: 100,
            SpanAttributes.LLM_TOKEN_COUNT_COMPLETION: 40,
            SpanAttributes.LLM_TOKEN_COUNT_TOTAL: 140,
        },
    )
    spans.llm(5, 10, session="s-1", user="u", prompt=100, completion=40, parent=framework)
    spans.end(framework, 20)
    spans.turn(100, session="s-1", user="u", question="q", answer="a", prompt=7, completion=3)

    (session,) = build_sessions(spans.finished())

    assert session.tokens == TokenCounts(prompt=107, completion=43, total=150)
    assert session.llm_calls == 2
    assert [turn.tokens for turn in session.turns] == [
        TokenCounts(100, 40, 140),
        TokenCounts(7, 3, 10),
    ]


def test_total_tokens_fall_back_to_prompt_plus_completion(spans: SpanMaker) -> None:
    spans.llm(
        0,
        10,
        session="s-1",
        extra={SpanAttributes.LLM_TOKEN_COUNT_TOTAL: 0},
        prompt=12,
        completion=8,
    )
    spans.llm(20, 10, session="s-1", prompt=1, completion=1, total=5)  # the reported total wins

    (session,) = build_sessions(spans.finished())

    assert session.tokens == TokenCounts(prompt=13, completion=9, total=25)


def test_an_error_is_counted_once_where_it_happened(spans: SpanMaker) -> None:
    failure = ConnectionError("upstream returned 503")
    spans.turn(0, session="s-1", user="u", question="q1", answer=None, error=failure)
    spans.turn(200, session="s-1", user="u", question="q2", answer="fine")

    (session,) = build_sessions(spans.finished())

    assert session.errors == 1  # the LLM span's error bubbled through the root: still one
    failed, succeeded = session.turns
    (error,) = failed.errors
    assert error.span_name == "ChatCompletion"
    assert error.message == "ConnectionError: upstream returned 503"
    assert failed.output is None
    assert succeeded.errors == ()
    assert session.last_output == "fine"


def test_a_retried_call_shows_the_error_and_the_answer_in_one_turn(spans: SpanMaker) -> None:
    root = spans.start("chat_turn", CHAIN, 0, {**ids("s-1", "u"), SpanAttributes.INPUT_VALUE: "q"})
    spans.llm(5, 10, session="s-1", parent=root, error=TimeoutError("read timed out"))
    spans.llm(20, 10, session="s-1", parent=root, answer="second try worked", prompt=3)
    spans.end(root, 40)

    (session,) = build_sessions(spans.finished())

    (turn,) = session.turns
    assert turn.llm_calls == 2
    assert [e.message for e in turn.errors] == ["TimeoutError: read timed out"]
    assert turn.output == "second try worked"


def test_error_message_falls_back_to_the_status_description(spans: SpanMaker) -> None:
    span = spans.start("ChatCompletion", LLM, 0, ids("s-1", None))
    from opentelemetry.trace import Status, StatusCode

    span.set_status(Status(StatusCode.ERROR, "rate limited"))
    spans.end(span, 10)

    (session,) = build_sessions(spans.finished())

    assert [e.message for e in session.turns[0].errors] == ["rate limited"]


def test_input_and_output_fall_back_to_llm_messages_when_the_root_holds_json(
    spans: SpanMaker,
) -> None:
    # No application span: the provider's LLM span is the root and input.value is the request.
    spans.llm(0, 10, session="s-1", question="What is 2+2?", answer="4")

    (session,) = build_sessions(spans.finished())

    assert session.first_input == "What is 2+2?"
    assert session.last_output == "4"


def test_input_and_output_fall_back_to_raw_values_without_messages(spans: SpanMaker) -> None:
    spans.llm(0, 10, session="s-1", extra={SpanAttributes.OUTPUT_VALUE: '{"id": "x"}'})

    (turn,) = build_sessions(spans.finished())[0].turns

    assert turn.input == '{"model": "gpt-4o-mini", "messages": ["..."]}'
    assert turn.output == '{"id": "x"}'


def test_output_of_a_turn_is_the_last_model_reply(spans: SpanMaker) -> None:
    root = spans.start("agent", CHAIN, 0, {**ids("s-1", "u"), SpanAttributes.INPUT_VALUE: "q"})
    spans.llm(5, 5, session="s-1", parent=root, answer="let me check")
    spans.llm(15, 5, session="s-1", parent=root, answer="final answer")
    spans.end(root, 30)

    (turn,) = build_sessions(spans.finished())[0].turns

    assert turn.output == "final answer"


def test_multi_part_message_contents_are_joined(spans: SpanMaker) -> None:
    prefix = f"{SpanAttributes.LLM_INPUT_MESSAGES}.0"
    contents = f"{prefix}.{MessageAttributes.MESSAGE_CONTENTS}"
    spans.llm(
        0,
        10,
        session="s-1",
        extra={
            f"{prefix}.{MessageAttributes.MESSAGE_ROLE}": "user",
            f"{contents}.0.{MessageContentAttributes.MESSAGE_CONTENT_TYPE}": "text",
            f"{contents}.0.{MessageContentAttributes.MESSAGE_CONTENT_TEXT}": "Describe",
            f"{contents}.1.{MessageContentAttributes.MESSAGE_CONTENT_TYPE}": "image",
            f"{contents}.2.{MessageContentAttributes.MESSAGE_CONTENT_TEXT}": "this picture",
        },
    )

    (turn,) = build_sessions(spans.finished())[0].turns

    assert turn.input == "Describe\nthis picture"


def test_tool_calls_are_read_from_output_messages(spans: SpanMaker) -> None:
    root = spans.start("chat_turn", CHAIN, 0, {**ids("s-1", "u"), SpanAttributes.INPUT_VALUE: "?"})
    spans.llm(
        5,
        10,
        session="s-1",
        parent=root,
        tool_calls=[
            ("call_1", "get_weather", '{"city": "Paris"}'),
            ("call_2", "get_time", '{"tz": "CET"}'),
        ],
    )
    tool = spans.start("get_weather", TOOL, 20, ids("s-1", "u"), root)
    spans.end(tool, 21)
    spans.llm(25, 10, session="s-1", parent=root, answer="Sunny, 18°C")
    spans.end(root, 40)

    (turn,) = build_sessions(spans.finished())[0].turns

    assert turn.tool_calls == (
        ToolCall("get_weather", '{"city": "Paris"}', "call_1"),
        ToolCall("get_time", '{"tz": "CET"}', "call_2"),
    )
    assert turn.llm_calls == 2
    assert turn.output == "Sunny, 18°C"


def test_blank_and_non_string_ids_are_ignored_and_ints_are_stringified(spans: SpanMaker) -> None:
    spans.llm(0, 10, extra={SpanAttributes.SESSION_ID: "   ", SpanAttributes.USER_ID: True})
    spans.llm(20, 10, extra={SpanAttributes.SESSION_ID: 42, SpanAttributes.USER_ID: 7})

    grouping = group_by_session(spans.finished())

    assert len(grouping.turns_without_session) == 1
    (session,) = grouping.sessions
    assert session.session_id == "42"
    assert session.user_id == "7"


def test_span_record_keeps_every_field_of_the_sdk_span(spans: SpanMaker) -> None:
    root = spans.start("root", CHAIN, 0, {"tag.tags": ("a", "b"), "flag": True, "ratio": 0.5})
    child = spans.start("child", LLM, 1, ids("s", "u"), root)
    spans.end(child, 2, error=ValueError("bad"))
    spans.end(root, 3)
    finished = {span.name: span for span in spans.finished()}

    record = SpanRecord.from_readable_span(finished["child"])
    root_record = SpanRecord.from_readable_span(finished["root"])

    assert record.parent_id == root_record.span_id
    assert record.trace_id == trace_id_of(root)
    assert root_record.parent_id is None
    assert (record.start_ns, record.end_ns) == (T0_NS + 1 * MS, T0_NS + 2 * MS)
    assert record.status_code == "ERROR"
    assert record.status_message == "ValueError: bad"
    assert record.kind == "INTERNAL"
    assert record.span_kind == LLM
    assert record.is_llm
    assert [event.name for event in record.events] == ["exception"]
    assert root_record.attributes["tag.tags"] == ("a", "b")
    assert root_record.resource_attributes["telemetry.sdk.language"] == "python"


def test_turn_needs_spans() -> None:
    from convotel.sessions import build_turn

    with pytest.raises(ValueError, match="at least one span"):
        build_turn([])


def test_input_messages_prefer_the_last_user_message(spans: SpanMaker) -> None:
    spans.llm(
        0,
        10,
        session="s-1",
        extra=messages(
            SpanAttributes.LLM_INPUT_MESSAGES,
            ("system", "You are terse."),
            ("user", "first question"),
            ("assistant", "first answer"),
            ("user", "follow-up question"),
        ),
    )

    (turn,) = build_sessions(spans.finished())[0].turns

    assert turn.input == "follow-up question"
