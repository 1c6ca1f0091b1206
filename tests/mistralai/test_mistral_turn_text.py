"""The turn rule on Mistral calls: a web request's root span shows the turn's input and output.

Each test opens an HTTP server span as a web framework would, enters the session inside it and
makes real SDK calls replayed from ``cassettes/mistralai`` (matched without the body: the
requests here carry a longer history than the recorded ones). ``SessionSpanProcessor`` runs on
the provider, before the exporter.
"""

from __future__ import annotations

from typing import Any

import pytest
import vcr  # type: ignore[import-untyped]
from mistral_cassettes import CASSETTE_DIR
from mistralai.client import Mistral
from opentelemetry import trace as trace_api
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from turn_text_support import assert_no_tracing_warnings, llm_spans, root_of

from convotel import TraceConfig, using_session, using_user
from convotel.config import REDACTED_VALUE
from convotel.mistralai import MistralAIInstrumentor

INPUT, OUTPUT = "input.value", "output.value"
SESSION, USER = "session.id", "user.id"
MODEL = "mistral-small-latest"
QUESTION = "Now say hello in French."
HISTORY: Any = [
    {"role": "system", "content": "You are a polyglot greeter."},
    {"role": "user", "content": "Say hello in Spanish."},
    {"role": "assistant", "content": "¡Hola!"},
    {"role": "user", "content": QUESTION},
]
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
REPLAY = vcr.VCR(
    cassette_library_dir=str(CASSETTE_DIR),
    record_mode="none",
    match_on=["method", "scheme", "host", "port", "path", "query"],
    filter_headers=["authorization"],
)


def cassette(name: str) -> Any:
    return REPLAY.use_cassette(f"{name}.yaml", allow_playback_repeats=False)


@pytest.fixture
def tracer_provider(session_tracer_provider: TracerProvider) -> TracerProvider:
    """The folder's instrumentation traces through the web service's provider."""
    return session_tracer_provider


def test_root_shows_the_newest_user_message_and_the_reply_and_joins_the_session(
    client: Mistral, tracer: trace_api.Tracer, span_exporter: InMemorySpanExporter
) -> None:
    with (
        cassette("chat_complete"),
        tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER),
        using_session("m-1"),
        using_user("u-1"),
    ):
        response = client.chat.complete(model=MODEL, messages=HISTORY)

    root = root_of(span_exporter)
    assert root[INPUT] == QUESTION
    assert root[OUTPUT] == response.choices[0].message.content == "Bonjour !"
    assert root["input.mime_type"] == root["output.mime_type"] == "text/plain"
    assert (root[SESSION], root[USER]) == ("m-1", "u-1")


async def test_async_call_gives_the_same_turn(
    client: Mistral, tracer: trace_api.Tracer, span_exporter: InMemorySpanExporter
) -> None:
    with (
        cassette("chat_complete"),
        tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER),
        using_session("m-async"),
    ):
        await client.chat.complete_async(model=MODEL, messages=HISTORY)

    root = root_of(span_exporter)
    assert (root[INPUT], root[OUTPUT], root[SESSION]) == (QUESTION, "Bonjour !", "m-async")


def test_streamed_reply_is_the_streamed_text(
    client: Mistral, tracer: trace_api.Tracer, span_exporter: InMemorySpanExporter
) -> None:
    with (
        cassette("chat_stream"),
        tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER),
        using_session("m-stream"),
        client.chat.stream(model=MODEL, messages=HISTORY) as events,
    ):
        streamed = "".join(
            str(event.data.choices[0].delta.content or "") for event in events if event.data.choices
        )

    root = root_of(span_exporter)
    assert streamed
    assert (root[INPUT], root[OUTPUT]) == (QUESTION, streamed)


def test_multimodal_message_shows_its_text_parts_joined(
    client: Mistral, tracer: trace_api.Tracer, span_exporter: InMemorySpanExporter
) -> None:
    content: Any = [
        {"type": "text", "text": "Say hello in French"},
        {"type": "image_url", "image_url": "https://example.com/eiffel.jpg"},
        {"type": "text", "text": "to the person in this picture."},
    ]
    with (
        cassette("chat_complete"),
        tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER),
    ):
        client.chat.complete(
            model=MODEL, messages=[*HISTORY[:3], {"role": "user", "content": content}]
        )

    root = root_of(span_exporter)
    assert root[INPUT] == "Say hello in French\nto the person in this picture."
    assert root[OUTPUT] == "Bonjour !"


@pytest.mark.parametrize("stream", [False, True])
def test_tool_calling_turn_takes_the_first_calls_input_and_the_last_calls_reply(
    client: Mistral, tracer: trace_api.Tracer, span_exporter: InMemorySpanExporter, stream: bool
) -> None:
    question = {"role": "user", "content": "What is the weather in Paris?"}
    messages: Any = [*HISTORY[:3], question]
    with tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER):
        if stream:
            with (
                cassette("chat_stream_tools"),
                client.chat.stream(model=MODEL, messages=messages, tools=[WEATHER_TOOL]) as events,
            ):
                assert list(events)
        else:
            with cassette("chat_complete_tools"):
                first = client.chat.complete(model=MODEL, messages=messages, tools=[WEATHER_TOOL])
            assert first.choices[0].message.tool_calls
        messages += [
            {"role": "assistant", "content": "", "tool_calls": [_weather_call()]},
            {"role": "tool", "tool_call_id": "D681PevKs", "name": "get_weather", "content": "21"},
        ]
        with cassette("chat_complete"):
            client.chat.complete(model=MODEL, messages=messages, tools=[WEATHER_TOOL])

    assert len(llm_spans(span_exporter)) == 2
    root = root_of(span_exporter)
    assert root[INPUT] == question["content"]
    assert root[OUTPUT] == "Bonjour !"


def _weather_call() -> dict[str, Any]:
    return {
        "id": "D681PevKs",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }


@pytest.mark.parametrize(
    ("config", "expected_input", "expected_output"),
    [
        (TraceConfig(hide_inputs=True, hide_outputs=True), REDACTED_VALUE, REDACTED_VALUE),
        (TraceConfig(hide_input_text=True, hide_output_text=True), REDACTED_VALUE, REDACTED_VALUE),
        (TraceConfig(hide_inputs=True), REDACTED_VALUE, "Bonjour !"),
        (TraceConfig(hide_outputs=True), QUESTION, REDACTED_VALUE),
    ],
)
def test_hidden_text_never_reaches_the_root(
    tracer_provider: TracerProvider,
    tracer: trace_api.Tracer,
    span_exporter: InMemorySpanExporter,
    config: TraceConfig,
    expected_input: str | None,
    expected_output: str | None,
) -> None:
    instrumentor = MistralAIInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, config=config)
    try:
        client = Mistral(api_key="test-key")
        with (
            cassette("chat_complete"),
            tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER),
        ):
            client.chat.complete(model=MODEL, messages=HISTORY)
    finally:
        instrumentor.uninstrument()

    root = root_of(span_exporter)
    assert (root.get(INPUT), root.get(OUTPUT)) == (expected_input, expected_output)
    if config.hide_inputs or config.hide_input_text:
        assert "Spanish" not in repr(root)
        assert "French" not in repr(root)


@pytest.mark.parametrize("processor_options", [{"turn_text": False}])
def test_turn_text_off_writes_no_text_on_the_root(
    client: Mistral, tracer: trace_api.Tracer, span_exporter: InMemorySpanExporter
) -> None:
    with (
        cassette("chat_complete"),
        tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER),
        using_session("m-off"),
    ):
        client.chat.complete(model=MODEL, messages=HISTORY)

    root = root_of(span_exporter)
    assert INPUT not in root
    assert OUTPUT not in root
    assert root[SESSION] == "m-off"


@pytest.mark.parametrize("processor_options", [{"join_trace": False}])
def test_join_trace_off_leaves_the_root_out_of_the_session(
    client: Mistral, tracer: trace_api.Tracer, span_exporter: InMemorySpanExporter
) -> None:
    with (
        cassette("chat_complete"),
        tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER),
        using_session("m-nojoin"),
    ):
        client.chat.complete(model=MODEL, messages=HISTORY)

    root = root_of(span_exporter)
    assert SESSION not in root
    assert root[OUTPUT] == "Bonjour !"
    assert llm_spans(span_exporter)[0].attributes[SESSION] == "m-nojoin"  # type: ignore[index]


def test_a_stream_read_after_its_root_ended_writes_nothing_and_breaks_nothing(
    client: Mistral,
    tracer: trace_api.Tracer,
    span_exporter: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with cassette("chat_stream"):
        with tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER):
            events = client.chat.stream(model=MODEL, messages=HISTORY)
        with events:
            streamed = "".join(
                str(event.data.choices[0].delta.content or "")
                for event in events
                if event.data.choices
            )

    assert streamed
    root = root_of(span_exporter)
    assert INPUT not in root
    assert OUTPUT not in root
    (llm,) = llm_spans(span_exporter)
    assert (llm.attributes or {})[OUTPUT] == streamed
    assert_no_tracing_warnings(caplog)


@pytest.mark.parametrize("stream", [False, True])
def test_conversations_api_turn_follows_the_same_rule(
    client: Mistral, tracer: trace_api.Tracer, span_exporter: InMemorySpanExporter, stream: bool
) -> None:
    question = "Who wrote Les Misérables?"
    with tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER):
        if stream:
            with (
                cassette("conversations_start_stream"),
                client.beta.conversations.start_stream(
                    inputs=question, model="mistral-medium-latest"
                ) as events,
            ):
                assert list(events)
        else:
            with cassette("conversations_start"):
                client.beta.conversations.start(inputs=question, model="mistral-medium-latest")

    (llm,) = llm_spans(span_exporter)
    shown = llm.attributes or {}
    root = root_of(span_exporter)
    assert root[INPUT] == question
    assert root[OUTPUT] == shown["llm.output_messages.0.message.content"]
    assert "Hugo" in root[OUTPUT]


def test_agents_api_turn_follows_the_same_rule(
    client: Mistral, tracer: trace_api.Tracer, span_exporter: InMemorySpanExporter
) -> None:
    with (
        cassette("agents_complete"),
        tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER),
    ):
        response = client.agents.complete(agent_id="ag_0123", messages=HISTORY[1:])

    root = root_of(span_exporter)
    assert (root[INPUT], root[OUTPUT]) == (QUESTION, response.choices[0].message.content)


def test_a_model_call_that_is_its_traces_root_gets_nothing_written(
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    instrumentor = MistralAIInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, config=TraceConfig(hide_outputs=True))
    try:
        with cassette("chat_complete"), using_session("m-root"):
            Mistral(api_key="test-key").chat.complete(model=MODEL, messages=HISTORY)
    finally:
        instrumentor.uninstrument()

    (span,) = span_exporter.get_finished_spans()
    assert span.parent is None
    assert (span.attributes or {})[OUTPUT] == REDACTED_VALUE
    assert "output.mime_type" not in (span.attributes or {})  # as the adapter recorded it
    assert_no_tracing_warnings(caplog)
