"""The turn rule (``convotel.turns``) on real SDK spans: which model call's text a turn shows.

Model-call spans here carry the attributes the adapters write (built with the core's own
builders); the root is an HTTP server span made by the test, as a web framework would make it.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import pytest
from opentelemetry import trace as trace_api
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from convotel import using_session, using_user
from convotel.attributes import (
    ContentPart,
    Message,
    ToolCall,
    input_value_attributes,
    message_attributes,
    output_value_attributes,
)
from convotel.config import REDACTED_VALUE
from convotel.propagation import SessionSpanProcessor
from convotel.turns import TraceJoiner, reply_text, turn_input_text

KIND = "openinference.span.kind"
INPUT, INPUT_MIME = "input.value", "input.mime_type"
OUTPUT, OUTPUT_MIME = "output.value", "output.mime_type"
SESSION, USER = "session.id", "user.id"

HISTORY = [
    Message(role="system", content="You are a travel guide."),
    Message(role="user", content="I am going to Lisbon."),
    Message(role="assistant", content="Lovely city! How can I help?"),
    Message(role="user", content="What should I see there?"),
]
WEATHER_CALL = ToolCall(id="call-1", name="get_weather", arguments='{"city": "Lisbon"}')
DSPY_REQUEST = (
    "[[ ## question ## ]]\nWhat should I see there?\n\n"
    "Respond with the corresponding output fields, starting with the field `[[ ## answer ## ]]`, "
    "and then ending with the marker for `[[ ## completed ## ]]`."
)
DSPY_REPLY = (
    "[[ ## reasoning ## ]]\nThe user asks about Lisbon.\n\n"
    "[[ ## answer ## ]]\nThe Belém Tower.\n\n[[ ## completed ## ]]"
)


def llm_attributes(
    messages: Iterable[Message] = HISTORY,
    reply: Message | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """What an adapter records on a model call: kind, input messages, input/output values."""
    messages = list(messages)
    found: dict[str, Any] = {KIND: "LLM"}
    found.update(input_value_attributes({"messages": [m.content for m in messages]}))
    found.update(message_attributes("llm.input_messages", messages))
    if reply is not None:
        found.update(message_attributes("llm.output_messages", [reply]))
        if reply.content:
            found.update(output_value_attributes(reply.content))
    found.update(extra)
    return found


def finished_attributes(attributes: Mapping[str, Any]) -> Mapping[str, Any]:
    """The attributes as a processor sees them: on an ended SDK span."""
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.get_tracer("test").start_span("model call", attributes=attributes).end()
    (span,) = exporter.get_finished_spans()
    return span.attributes or {}


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def provider_with(exporter: InMemorySpanExporter, **options: bool) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SessionSpanProcessor(**options))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


@pytest.fixture
def tracer(exporter: InMemorySpanExporter) -> Iterator[trace_api.Tracer]:
    provider = provider_with(exporter)
    yield provider.get_tracer("test")
    provider.shutdown()


def by_name(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    (span,) = [s for s in exporter.get_finished_spans() if s.name == name]
    return span


def model_call(tracer: trace_api.Tracer, reply: Message | None, **extra: Any) -> None:
    """One model call span, ended with its reply (as an adapter ends it)."""
    with tracer.start_as_current_span("ChatCompletion", attributes={KIND: "LLM"}) as span:
        span.set_attributes(llm_attributes(reply=reply, **extra))


# --- the rule on one model call's attributes --------------------------------------------------


def test_input_is_the_newest_user_message_not_the_history() -> None:
    attributes = finished_attributes(llm_attributes())
    assert turn_input_text(attributes) == "What should I see there?"


def test_input_index_order_is_numeric() -> None:
    messages = [Message(role="user", content=f"message {i}") for i in range(12)]
    attributes = finished_attributes(llm_attributes(messages))
    assert turn_input_text(attributes) == "message 11"


def test_a_user_message_after_tool_results_is_still_the_newest() -> None:
    messages = [
        *HISTORY,
        Message(role="assistant", tool_calls=[WEATHER_CALL]),
        Message(role="tool", content="21 °C", tool_call_id="call-1"),
    ]
    attributes = finished_attributes(llm_attributes(messages))
    assert turn_input_text(attributes) == "What should I see there?"


def test_multimodal_text_parts_are_joined_in_part_order() -> None:
    parts = [ContentPart("text", text=f"part {i}") for i in range(11)]
    parts.insert(1, ContentPart("image", image_url="https://example.test/tram.png"))
    messages = [*HISTORY[:3], Message(role="user", parts=parts)]
    attributes = finished_attributes(llm_attributes(messages))
    assert turn_input_text(attributes) == "\n".join(f"part {i}" for i in range(11))


def test_an_image_only_message_has_no_input_text() -> None:
    image = [ContentPart("image", image_url="https://example.test/tram.png")]
    attributes = finished_attributes(llm_attributes([Message(role="user", parts=image)]))
    assert turn_input_text(attributes) is None  # input.value is JSON: not a text of the turn


def test_without_messages_a_text_input_value_counts_but_json_does_not() -> None:
    assert turn_input_text({INPUT: "Plain prompt", INPUT_MIME: "text/plain"}) == "Plain prompt"
    assert turn_input_text({INPUT: REDACTED_VALUE}) == REDACTED_VALUE
    assert turn_input_text({INPUT: '{"prompt": "x"}', INPUT_MIME: "application/json"}) is None
    assert turn_input_text({INPUT: ""}) is None
    assert turn_input_text({}) is None


def test_reply_is_the_first_output_message() -> None:
    attributes = finished_attributes(
        llm_attributes(reply=Message(role="assistant", content="See the Belém Tower."))
    )
    assert reply_text(attributes) == "See the Belém Tower."


def test_a_multimodal_reply_joins_its_text_parts() -> None:
    parts = [ContentPart("text", text="First."), ContentPart("text", text="Second.")]
    attributes = finished_attributes(llm_attributes(reply=Message(role="assistant", parts=parts)))
    assert reply_text(attributes) == "First.\nSecond."


def test_a_tool_call_only_reply_has_no_text_even_with_a_json_output_value() -> None:
    reply = Message(role="assistant", tool_calls=[WEATHER_CALL])
    attributes = finished_attributes(
        llm_attributes(reply=reply, **dict(output_value_attributes({"tool_calls": ["x"]})))
    )
    assert reply_text(attributes) is None


def test_without_output_messages_a_text_output_value_counts() -> None:
    assert reply_text({OUTPUT: "Streamed text", OUTPUT_MIME: "text/plain"}) == "Streamed text"
    assert reply_text({OUTPUT: REDACTED_VALUE, OUTPUT_MIME: "text/plain"}) == REDACTED_VALUE
    assert reply_text({OUTPUT: '{"a": 1}', OUTPUT_MIME: "application/json"}) is None


def test_dspy_field_format_counts_by_its_fields() -> None:
    messages = [*HISTORY[:3], Message(role="user", content=DSPY_REQUEST)]
    reply = Message(role="assistant", content=DSPY_REPLY)
    attributes = finished_attributes(llm_attributes(messages, reply=reply))
    assert turn_input_text(attributes) == "What should I see there?"
    assert reply_text(attributes) == "The Belém Tower."


def test_dspy_several_fields_are_named_and_a_lone_reasoning_counts() -> None:
    request = "[[ ## context ## ]]\nLisbon has trams.\n\n[[ ## question ## ]]\nHow to get around?"
    assert turn_input_text({"llm.input_messages.0.message.role": "user",
                            "llm.input_messages.0.message.content": request}) == (
        "context: Lisbon has trams.\n\nquestion: How to get around?"
    )  # fmt: skip
    reply = "[[ ## reasoning ## ]]\nOnly thoughts.\n\n[[ ## completed ## ]]"
    assert reply_text({OUTPUT: reply, OUTPUT_MIME: "text/plain"}) == "Only thoughts."


@pytest.mark.parametrize(
    "text",
    [
        "Plain [[ ## answer ## ]] text",
        "Intro line\n[[ ## answer ## ]]\nvalue",
        "[[ ## not a field ## ]] but prose",
        "[[ ## completed ## ]]",
    ],
)
def test_text_not_in_dspy_field_format_is_kept_whole(text: str) -> None:
    assert reply_text({OUTPUT: text, OUTPUT_MIME: "text/plain"}) == text


# --- the rule applied to a trace ------------------------------------------------------------


def test_the_root_gets_the_turn_and_joins_the_session_entered_inside_it(
    tracer: trace_api.Tracer, exporter: InMemorySpanExporter
) -> None:
    with (
        tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER),
        tracer.start_as_current_span("route"),
        using_session("s-1"),
        using_user("u-1"),
    ):
        model_call(tracer, Message(role="assistant", content="The Belém Tower."))

    root = by_name(exporter, "POST /chat").attributes or {}
    assert root[INPUT] == "What should I see there?"
    assert root[OUTPUT] == "The Belém Tower."
    assert root[INPUT_MIME] == root[OUTPUT_MIME] == "text/plain"
    assert (root[SESSION], root[USER]) == ("s-1", "u-1")
    route = by_name(exporter, "route").attributes or {}
    assert (route[SESSION], route[USER]) == ("s-1", "u-1")
    assert INPUT not in route  # only the root carries the turn


def test_a_tool_calling_turn_takes_input_from_the_first_call_and_output_from_the_last(
    tracer: trace_api.Tracer, exporter: InMemorySpanExporter
) -> None:
    with tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER):
        model_call(tracer, Message(role="assistant", tool_calls=[WEATHER_CALL]))
        with tracer.start_as_current_span("ChatCompletion") as span:
            history = [
                *HISTORY,
                Message(role="assistant", tool_calls=[WEATHER_CALL]),
                Message(role="tool", content="21 °C", tool_call_id="call-1"),
                Message(role="user", content="a later user message in the same turn"),
            ]
            reply = Message(role="assistant", content="It is 21 °C: see the Belém Tower.")
            span.set_attributes(llm_attributes(history, reply=reply))

    root = by_name(exporter, "POST /chat").attributes or {}
    assert root[INPUT] == "What should I see there?"
    assert root[OUTPUT] == "It is 21 °C: see the Belém Tower."


def test_a_tool_call_only_last_reply_leaves_the_previous_text(
    tracer: trace_api.Tracer, exporter: InMemorySpanExporter
) -> None:
    with tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER):
        model_call(tracer, Message(role="assistant", content="Let me check."))
        model_call(tracer, Message(role="assistant", tool_calls=[WEATHER_CALL]))

    assert by_name(exporter, "POST /chat").attributes[OUTPUT] == "Let me check."  # type: ignore[index]


def test_values_the_application_set_on_the_root_are_kept(
    tracer: trace_api.Tracer, exporter: InMemorySpanExporter
) -> None:
    with tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER) as root_span:
        root_span.set_attribute(INPUT, "set by the app")
        model_call(tracer, Message(role="assistant", content="first reply"))
        root_span.set_attribute(OUTPUT, "also set by the app")
        model_call(tracer, Message(role="assistant", content="second reply"))

    root = by_name(exporter, "POST /chat").attributes or {}
    assert (root[INPUT], root[OUTPUT]) == ("set by the app", "also set by the app")
    assert INPUT_MIME not in root


def test_a_model_call_that_is_the_root_gets_nothing_written(
    tracer: trace_api.Tracer, exporter: InMemorySpanExporter
) -> None:
    attributes = llm_attributes(reply=Message(role="assistant", content="Answer."))
    with tracer.start_as_current_span("ChatCompletion") as span:
        span.set_attributes(attributes)

    assert dict(by_name(exporter, "ChatCompletion").attributes or {}) == attributes


def test_a_model_call_ending_after_its_root_writes_nothing_and_logs_nothing(
    tracer: trace_api.Tracer, exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    root = tracer.start_span("POST /chat", kind=SpanKind.SERVER)
    late = tracer.start_span("ChatCompletion", context=trace_api.set_span_in_context(root))
    root.end()
    with caplog.at_level(logging.DEBUG):
        late.set_attributes(llm_attributes(reply=Message(role="assistant", content="late")))
        late.end()

    assert INPUT not in (by_name(exporter, "POST /chat").attributes or {})
    assert not [r for r in caplog.records if r.levelno >= logging.DEBUG and "convotel" in r.name]
    assert not [r for r in caplog.records if "ended span" in r.getMessage()]


def test_the_root_gets_the_turn_when_the_model_calls_parent_ended_first(
    tracer: trace_api.Tracer, exporter: InMemorySpanExporter
) -> None:
    """A stream returned from a framework span and read after it ended (a streamed body)."""
    with tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER) as root:
        handler = tracer.start_span("handler", context=trace_api.set_span_in_context(root))
        stream = tracer.start_span("ChatCompletion", trace_api.set_span_in_context(handler))
        handler.end()
        stream.set_attributes(llm_attributes(reply=Message(role="assistant", content="streamed")))
        with using_session("s-late"):  # entered while the stream is read: joins the root too
            stream.end()
            tracer.start_span("send body", trace_api.set_span_in_context(stream)).end()

    root_attributes = by_name(exporter, "POST /chat").attributes or {}
    assert root_attributes[INPUT] == "What should I see there?"
    assert root_attributes[OUTPUT] == "streamed"


def test_a_span_started_in_a_session_stamps_its_open_ancestors_up_to_the_root(
    tracer: trace_api.Tracer, exporter: InMemorySpanExporter
) -> None:
    with (
        tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER) as root,
        tracer.start_as_current_span("middleware") as middleware,
    ):
        middleware.set_attribute(SESSION, "kept")  # an id already set is never replaced
        context = trace_api.set_span_in_context(middleware)
        with using_session("s-2"), using_user("u-2"):
            tracer.start_span("db query", context).end()
        root.set_attribute("checked", True)

    assert by_name(exporter, "POST /chat").attributes[SESSION] == "s-2"  # type: ignore[index]
    middleware_attributes = by_name(exporter, "middleware").attributes or {}
    assert (middleware_attributes[SESSION], middleware_attributes[USER]) == ("kept", "u-2")


def test_spans_started_outside_the_session_inherit_it_from_their_open_parent(
    tracer: trace_api.Tracer, exporter: InMemorySpanExporter
) -> None:
    with tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER):
        with using_session("s-3"), using_user("u-3"):
            pass  # the handler ran in the session; the body is sent after it
        with tracer.start_as_current_span("http send"):
            tracer.start_span("chunk").end()

    for name in ("http send", "chunk"):
        attributes = by_name(exporter, name).attributes or {}
        assert (attributes[SESSION], attributes[USER]) == ("s-3", "u-3")


def test_a_span_with_a_remote_parent_is_its_process_root(
    tracer: trace_api.Tracer, exporter: InMemorySpanExporter
) -> None:
    remote = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1))
    context = trace_api.set_span_in_context(NonRecordingSpan(remote))
    with tracer.start_as_current_span("POST /chat", context=context, kind=SpanKind.SERVER):
        model_call(tracer, Message(role="assistant", content="Answer."))

    assert by_name(exporter, "POST /chat").attributes[OUTPUT] == "Answer."  # type: ignore[index]


def test_hidden_text_reaches_the_root_only_as_the_marker(
    tracer: trace_api.Tracer, exporter: InMemorySpanExporter
) -> None:
    hidden = {
        "llm.input_messages.0.message.role": "user",
        "llm.input_messages.0.message.content": REDACTED_VALUE,
        OUTPUT: REDACTED_VALUE,
        OUTPUT_MIME: "text/plain",
    }
    with (
        tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER),
        tracer.start_as_current_span("ChatCompletion") as span,
    ):
        span.set_attributes({KIND: "LLM", **hidden})

    root = by_name(exporter, "POST /chat").attributes or {}
    assert (root[INPUT], root[OUTPUT]) == (REDACTED_VALUE, REDACTED_VALUE)


@pytest.mark.parametrize(
    ("options", "environment"),
    [
        ({"turn_text": False}, {}),
        ({}, {"CONVOTEL_TURN_TEXT": "false"}),
    ],
)
def test_turn_text_switched_off_writes_nothing(
    exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
    options: dict[str, bool],
    environment: dict[str, str],
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    provider = provider_with(exporter, **options)
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER), using_session("s-4"):
        model_call(tracer, Message(role="assistant", content="Answer."))

    root = by_name(exporter, "POST /chat").attributes or {}
    assert INPUT not in root
    assert OUTPUT not in root
    assert root[SESSION] == "s-4"  # joining stays on


@pytest.mark.parametrize(
    ("options", "environment"),
    [
        ({"join_trace": False}, {}),
        ({}, {"CONVOTEL_JOIN_TRACE": "off"}),
    ],
)
def test_join_trace_switched_off_stamps_nothing_beyond_the_context(
    exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
    options: dict[str, bool],
    environment: dict[str, str],
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    provider = provider_with(exporter, **options)
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER):
        with using_session("s-5"):
            model_call(tracer, Message(role="assistant", content="Answer."))
        tracer.start_span("http send").end()

    root = by_name(exporter, "POST /chat").attributes or {}
    assert SESSION not in root
    assert SESSION not in (by_name(exporter, "http send").attributes or {})
    assert by_name(exporter, "ChatCompletion").attributes[SESSION] == "s-5"  # type: ignore[index]
    assert root[OUTPUT] == "Answer."  # the turn text stays on


def test_concurrent_requests_each_get_their_own_turn(
    tracer: trace_api.Tracer, exporter: InMemorySpanExporter
) -> None:
    def request(n: int) -> None:
        messages = [*HISTORY[:3], Message(role="user", content=f"question {n}")]
        reply = Message(role="assistant", content=f"answer {n}")
        with (
            tracer.start_as_current_span(f"POST /chat {n}", kind=SpanKind.SERVER),
            using_session(f"s-{n}"),
            tracer.start_as_current_span("ChatCompletion") as span,
        ):
            span.set_attributes(llm_attributes(messages, reply=reply))

    threads = [threading.Thread(target=request, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    for n in range(8):
        root = by_name(exporter, f"POST /chat {n}").attributes or {}
        assert (root[INPUT], root[OUTPUT], root[SESSION]) == (
            f"question {n}",
            f"answer {n}",
            f"s-{n}",
        )


def test_a_span_collected_without_ending_is_forgotten(exporter: InMemorySpanExporter) -> None:
    joiner = TraceJoiner()
    provider = provider_with(exporter)
    span = provider.get_tracer("test").start_span("never ended")
    joiner.span_started(span, has_ids=False)
    assert len(joiner._open) == 1
    del span
    gc.collect()
    assert joiner._open == {}


def test_an_id_the_application_set_after_the_span_started_is_never_replaced(
    tracer: trace_api.Tracer, exporter: InMemorySpanExporter
) -> None:
    with tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER) as root:
        tracer.start_span("http receive").end()  # the joiner has looked at the root by now
        root.set_attribute(SESSION, "set by the app")
        with using_session("s-6"), using_user("u-6"):
            tracer.start_span("db query").end()

    root_attributes = by_name(exporter, "POST /chat").attributes or {}
    assert (root_attributes[SESSION], root_attributes[USER]) == ("set by the app", "u-6")


def test_children_inherit_the_ids_a_span_was_started_with(
    tracer: trace_api.Tracer, exporter: InMemorySpanExporter
) -> None:
    with (
        tracer.start_as_current_span("worker", attributes={SESSION: "given", USER: "u-7"}),
        tracer.start_as_current_span("step"),
    ):
        tracer.start_span("leaf", attributes={USER: "own"}).end()

    step = by_name(exporter, "step").attributes or {}
    leaf = by_name(exporter, "leaf").attributes or {}
    assert (step[SESSION], step[USER]) == ("given", "u-7")
    assert (leaf[SESSION], leaf[USER]) == ("given", "own")


# --- a model call made from a prompt rendered around a framework operation's input -----------

RAG_QUESTION = "Which tower is in Belém?"
RAG_PROMPT = (
    "Context information is below.\n---\nBelém has a tower.\n---\n"
    f"Answer the query using only the context.\nQuery: {RAG_QUESTION}\nAnswer: "
)


def rag_call(tracer: trace_api.Tracer, context: Any = None) -> trace_api.Span:
    """A model call (not ended) whose one user message is the rendered RAG prompt."""
    span = tracer.start_span("MockLLM.complete", context)
    span.set_attributes(
        llm_attributes(
            [Message(role="user", content=RAG_PROMPT)],
            reply=Message(role="assistant", content="The Belém Tower."),
        )
    )
    return span


def framework_span(tracer: trace_api.Tracer, name: str, kind: str = "CHAIN") -> Any:
    return tracer.start_as_current_span(name, attributes={KIND: kind})


@pytest.mark.parametrize("kind", ["CHAIN", "AGENT"])
def test_a_prompt_rendered_around_the_enclosing_operations_input_shows_that_input(
    tracer: trace_api.Tracer, exporter: InMemorySpanExporter, kind: str
) -> None:
    with (
        tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER),
        framework_span(tracer, "QueryEngine.query", kind) as query,
    ):
        with framework_span(tracer, "Synthesizer.synthesize") as synthesize:
            rag_call(tracer).end()
            synthesize.set_attributes(dict(input_value_attributes("Belém")))  # inner, shorter
        query.set_attributes(dict(input_value_attributes(RAG_QUESTION)))  # set at its end

    root = by_name(exporter, "POST /chat").attributes or {}
    assert root[INPUT] == RAG_QUESTION  # the outermost operation's input
    assert root[OUTPUT] == "The Belém Tower."


def test_a_streamed_call_ending_after_its_operation_still_shows_the_operations_input(
    tracer: trace_api.Tracer, exporter: InMemorySpanExporter
) -> None:
    with tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER):
        with framework_span(tracer, "QueryEngine.query") as query:
            stream = rag_call(tracer)
            query.set_attributes(dict(input_value_attributes(RAG_QUESTION)))
        stream.end()  # the response body was read after the query returned

    assert by_name(exporter, "POST /chat").attributes[INPUT] == RAG_QUESTION  # type: ignore[index]


def test_only_enclosing_framework_operations_count(
    tracer: trace_api.Tracer, exporter: InMemorySpanExporter
) -> None:
    with tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER):
        with framework_span(tracer, "earlier step") as earlier:  # a sibling, not around the call
            earlier.set_attributes(dict(input_value_attributes(RAG_QUESTION)))
        with tracer.start_as_current_span("app span") as plain:  # not a framework operation
            rag_call(tracer).end()
            plain.set_attributes(dict(input_value_attributes(RAG_QUESTION)))
        with framework_span(tracer, "later step") as later:
            later.set_attributes(dict(input_value_attributes(RAG_QUESTION)))

    assert by_name(exporter, "POST /chat").attributes[INPUT] == RAG_PROMPT  # type: ignore[index]


@pytest.mark.parametrize("operation_input", ["Where is Porto?", '{"query": "Belém"}'])
def test_an_operation_input_the_prompt_does_not_embed_leaves_the_message(
    tracer: trace_api.Tracer, exporter: InMemorySpanExporter, operation_input: str
) -> None:
    with (
        tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER),
        framework_span(tracer, "QueryEngine.query") as query,
    ):
        rag_call(tracer).end()
        query.set_attributes(dict(input_value_attributes(operation_input)))

    assert by_name(exporter, "POST /chat").attributes[INPUT] == RAG_PROMPT  # type: ignore[index]


def test_an_input_the_application_set_on_the_root_is_kept_over_the_operations(
    tracer: trace_api.Tracer, exporter: InMemorySpanExporter
) -> None:
    with tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER) as root:
        root.set_attribute(INPUT, "set by the app")
        with framework_span(tracer, "QueryEngine.query") as query:
            rag_call(tracer).end()
            query.set_attributes(dict(input_value_attributes(RAG_QUESTION)))

    assert by_name(exporter, "POST /chat").attributes[INPUT] == "set by the app"  # type: ignore[index]


def test_a_long_lived_root_keeps_only_the_newest_operation_inputs(
    exporter: InMemorySpanExporter,
) -> None:
    processor = SessionSpanProcessor()
    provider = TracerProvider()
    provider.add_span_processor(processor)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("worker", kind=SpanKind.SERVER):
        for n in range(1000):
            with framework_span(tracer, "step") as step:
                step.set_attributes(dict(input_value_attributes(f"step {n}")))
        with framework_span(tracer, "QueryEngine.query") as query:
            stream = rag_call(tracer)
            query.set_attributes(dict(input_value_attributes(RAG_QUESTION)))
        (turn,) = processor._joiner._turns.values()
        assert len(turn.ended_inputs) == 32
        stream.end()

    assert by_name(exporter, "worker").attributes[INPUT] == RAG_QUESTION  # type: ignore[index]
    assert processor._joiner._turns == {}


def test_a_json_reply_to_a_dspy_request_counts_by_its_fields() -> None:
    request = DSPY_REQUEST.replace(
        "Respond with the corresponding output fields, starting with the field "
        "`[[ ## answer ## ]]`, and then ending with the marker for `[[ ## completed ## ]]`.",
        "Respond with a JSON object in the following order of fields: `answer`.",
    )
    messages = [*HISTORY[:3], Message(role="user", content=request)]
    reply = Message(role="assistant", content='{"reasoning": "Lisbon.", "answer": "Belém."}')
    attributes = finished_attributes(llm_attributes(messages, reply=reply))
    assert turn_input_text(attributes) == "What should I see there?"
    assert reply_text(attributes) == "Belém."
    several = Message(role="assistant", content='{"answer": "Belém.", "confidence": 0.9}')
    attributes = finished_attributes(llm_attributes(messages, reply=several))
    assert reply_text(attributes) == "answer: Belém.\n\nconfidence: 0.9"
    broken = Message(role="assistant", content='{"answer": "Belém.')
    attributes = finished_attributes(llm_attributes(messages, reply=broken))
    assert reply_text(attributes) == '{"answer": "Belém.'


@pytest.mark.parametrize("reply", ['{"answer": "Belém."}', "{not json", "[1, 2]", "{}"])
def test_a_json_reply_to_any_other_request_is_kept_whole(reply: str) -> None:
    attributes = finished_attributes(llm_attributes(reply=Message(role="assistant", content=reply)))
    assert reply_text(attributes) == reply
