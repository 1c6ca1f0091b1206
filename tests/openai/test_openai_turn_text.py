"""The turn rule on OpenAI calls: a web request's root span shows the turn's input and output.

Each test opens an HTTP server span as a web framework would, enters the session inside it and
makes real SDK calls replayed from ``cassettes/openai`` (matched without the body: the requests
here carry a longer history than the recorded ones). ``SessionSpanProcessor`` runs on the
provider, before the exporter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
import pytest
from openai_cassettes import Instrument, replay
from opentelemetry import trace as trace_api
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from turn_text_support import assert_no_tracing_warnings, llm_spans, root_of

from convotel import TraceConfig, using_session, using_user
from convotel.config import REDACTED_VALUE
from convotel.openai import OpenAIInstrumentor

INPUT, OUTPUT = "input.value", "output.value"
SESSION, USER = "session.id", "user.id"
MODEL = "gpt-4o-mini"
QUESTION = "And what is the capital of France?"
HISTORY: list[Any] = [
    {"role": "system", "content": "You are a terse geography tutor."},
    {"role": "user", "content": "What is the capital of Spain?"},
    {"role": "assistant", "content": "Madrid."},
    {"role": "user", "content": QUESTION},
]
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current temperature for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
Finished = Callable[[], list[ReadableSpan]]


@pytest.fixture
def tracer_provider(session_tracer_provider: TracerProvider) -> TracerProvider:
    """The folder's instrumentation traces through the web service's provider."""
    return session_tracer_provider


def test_root_shows_the_newest_user_message_and_the_reply_and_joins_the_session(
    instrumented: OpenAIInstrumentor,
    client: openai.OpenAI,
    tracer: trace_api.Tracer,
    finished: Finished,
) -> None:
    with (
        replay("chat_basic", match_body=False),
        tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER),
        using_session("web-1"),
        using_user("u-1"),
    ):
        response = client.chat.completions.create(model=MODEL, messages=HISTORY)

    root = root_of(finished())
    assert root[INPUT] == QUESTION
    assert root[OUTPUT] == response.choices[0].message.content == "The capital of France is Paris."
    assert root["input.mime_type"] == root["output.mime_type"] == "text/plain"
    assert (root[SESSION], root[USER]) == ("web-1", "u-1")


async def test_async_call_gives_the_same_turn(
    instrumented: OpenAIInstrumentor,
    async_client: openai.AsyncOpenAI,
    tracer: trace_api.Tracer,
    finished: Finished,
) -> None:
    with (
        replay("chat_basic", match_body=False),
        tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER),
        using_session("web-async"),
    ):
        response = await async_client.chat.completions.create(model=MODEL, messages=HISTORY)

    root = root_of(finished())
    assert (root[INPUT], root[OUTPUT]) == (QUESTION, response.choices[0].message.content)
    assert root[SESSION] == "web-async"


def test_streamed_reply_is_the_streamed_text(
    instrumented: OpenAIInstrumentor,
    client: openai.OpenAI,
    tracer: trace_api.Tracer,
    finished: Finished,
) -> None:
    with (
        replay("chat_stream", match_body=False),
        tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER),
        using_session("web-stream"),
    ):
        stream = client.chat.completions.create(model=MODEL, messages=HISTORY, stream=True)
        streamed = "".join(
            chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices
        )

    root = root_of(finished())
    assert streamed == "Hello there!"
    assert (root[INPUT], root[OUTPUT]) == (QUESTION, streamed)


def test_multimodal_message_shows_its_text_parts_joined(
    instrumented: OpenAIInstrumentor,
    client: openai.OpenAI,
    tracer: trace_api.Tracer,
    finished: Finished,
) -> None:
    content: Any = [
        {"type": "text", "text": "What is in these two images?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        {"type": "text", "text": "Answer in five words."},
    ]
    messages = [*HISTORY[:3], {"role": "user", "content": content}]
    with (
        replay("chat_multimodal", match_body=False),
        tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER),
    ):
        client.chat.completions.create(model=MODEL, messages=messages)

    root = root_of(finished())
    assert root[INPUT] == "What is in these two images?\nAnswer in five words."
    assert root[OUTPUT] == "A cat and a tiny PNG."
    assert "cat.jpg" not in root[INPUT]


def test_tool_calling_turn_takes_the_first_calls_input_and_the_last_calls_reply(
    instrumented: OpenAIInstrumentor,
    client: openai.OpenAI,
    tracer: trace_api.Tracer,
    finished: Finished,
) -> None:
    question = {"role": "user", "content": "What is the weather in Paris and Tokyo?"}
    with (
        replay("chat_tools", match_body=False) as played,
        tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER),
    ):
        messages: list[Any] = [*HISTORY[:3], question]
        first = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL])
        calls = first.choices[0].message.tool_calls or []
        messages.append(first.choices[0].message.model_dump(exclude_none=True))
        messages += [{"role": "tool", "tool_call_id": call.id, "content": "20°C"} for call in calls]
        second = client.chat.completions.create(
            model=MODEL, messages=messages, tools=[WEATHER_TOOL]
        )

    assert played.all_played
    assert len(llm_spans(finished())) == 2
    root = root_of(finished())
    assert root[INPUT] == question["content"]
    assert root[OUTPUT] == second.choices[0].message.content == "Paris: 18°C, Tokyo: 22°C."


@pytest.mark.parametrize(
    ("config", "expected_input", "expected_output"),
    [
        (TraceConfig(hide_inputs=True, hide_outputs=True), REDACTED_VALUE, REDACTED_VALUE),
        (TraceConfig(hide_input_text=True, hide_output_text=True), REDACTED_VALUE, REDACTED_VALUE),
        (TraceConfig(hide_inputs=True), REDACTED_VALUE, "The capital of France is Paris."),
        (TraceConfig(hide_outputs=True), QUESTION, REDACTED_VALUE),
    ],
)
def test_hidden_text_never_reaches_the_root(
    instrument: Instrument,
    client: openai.OpenAI,
    tracer: trace_api.Tracer,
    finished: Finished,
    config: TraceConfig,
    expected_input: str | None,
    expected_output: str | None,
) -> None:
    instrument(config)
    with (
        replay("chat_basic", match_body=False),
        tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER),
        using_session("web-hidden"),
    ):
        client.chat.completions.create(model=MODEL, messages=HISTORY)

    root = root_of(finished())
    assert (root.get(INPUT), root.get(OUTPUT)) == (expected_input, expected_output)
    (llm,) = llm_spans(finished())
    shown = repr(dict(llm.attributes or {}))
    assert all(str(value) in shown for value in (root.get(INPUT), root.get(OUTPUT)))
    if config.hide_inputs or config.hide_input_text:
        assert "Spain" not in repr(root)
        assert "France" not in str(root.get(INPUT))
    assert root[SESSION] == "web-hidden"


def test_hidden_messages_leave_the_root_what_the_model_call_still_shows(
    instrument: Instrument,
    client: openai.OpenAI,
    tracer: trace_api.Tracer,
    finished: Finished,
) -> None:
    """``hide_input_messages`` hides the messages, not ``input.value`` (the newest message)."""
    instrument(TraceConfig(hide_input_messages=True, hide_output_messages=True))
    with (
        replay("chat_basic", match_body=False),
        tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER),
    ):
        client.chat.completions.create(model=MODEL, messages=HISTORY)

    (llm,) = llm_spans(finished())
    shown = dict(llm.attributes or {})
    assert not [key for key in shown if key.startswith("llm.input_messages")]
    root = root_of(finished())
    assert (root[INPUT], root[OUTPUT]) == (shown[INPUT], shown[OUTPUT])
    assert "Spain" not in repr(root)  # the history stays hidden


@pytest.mark.parametrize("processor_options", [{"turn_text": False}])
def test_turn_text_off_writes_no_text_on_the_root(
    instrumented: OpenAIInstrumentor,
    client: openai.OpenAI,
    tracer: trace_api.Tracer,
    finished: Finished,
) -> None:
    with (
        replay("chat_basic", match_body=False),
        tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER),
        using_session("web-off"),
    ):
        client.chat.completions.create(model=MODEL, messages=HISTORY)

    root = root_of(finished())
    assert INPUT not in root
    assert OUTPUT not in root
    assert root[SESSION] == "web-off"


@pytest.mark.parametrize("processor_options", [{"join_trace": False}])
def test_join_trace_off_leaves_the_root_out_of_the_session(
    instrumented: OpenAIInstrumentor,
    client: openai.OpenAI,
    tracer: trace_api.Tracer,
    finished: Finished,
) -> None:
    with (
        replay("chat_basic", match_body=False),
        tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER),
        using_session("web-nojoin"),
    ):
        client.chat.completions.create(model=MODEL, messages=HISTORY)

    root = root_of(finished())
    assert SESSION not in root
    assert root[INPUT] == QUESTION
    assert llm_spans(finished())[0].attributes[SESSION] == "web-nojoin"  # type: ignore[index]


@pytest.mark.parametrize("config", [TraceConfig(), TraceConfig(hide_outputs=True)])
def test_a_model_call_that_is_its_traces_root_is_left_as_recorded(
    instrument: Instrument,
    client: openai.OpenAI,
    finished: Finished,
    config: TraceConfig,
    caplog: pytest.LogCaptureFixture,
) -> None:
    plain_exporter = InMemorySpanExporter()
    plain_provider = TracerProvider()
    plain_provider.add_span_processor(SimpleSpanProcessor(plain_exporter))
    plain = OpenAIInstrumentor()
    plain.instrument(tracer_provider=plain_provider, config=config)
    try:
        with replay("chat_basic", match_body=False), using_session("no-root"):
            client.chat.completions.create(model=MODEL, messages=HISTORY)
    finally:
        plain.uninstrument()
    instrument(config)
    with replay("chat_basic", match_body=False), using_session("no-root"):
        client.chat.completions.create(model=MODEL, messages=HISTORY)

    (span,) = finished()
    (recorded,) = plain_exporter.get_finished_spans()
    assert span.parent is None
    assert dict(span.attributes or {}) == dict(recorded.attributes or {})
    assert_no_tracing_warnings(caplog)


def test_a_stream_read_after_its_root_ended_writes_nothing_and_breaks_nothing(
    instrumented: OpenAIInstrumentor,
    client: openai.OpenAI,
    tracer: trace_api.Tracer,
    finished: Finished,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with replay("chat_stream", match_body=False):
        with tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER):
            stream = client.chat.completions.create(model=MODEL, messages=HISTORY, stream=True)
        streamed = "".join(
            chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices
        )

    assert streamed == "Hello there!"
    root = root_of(finished())
    assert INPUT not in root
    assert OUTPUT not in root
    (llm,) = llm_spans(finished())
    assert (llm.attributes or {})["output.value"] == streamed
    assert_no_tracing_warnings(caplog)


def test_responses_api_turn_follows_the_same_rule(
    instrumented: OpenAIInstrumentor,
    client: openai.OpenAI,
    tracer: trace_api.Tracer,
    finished: Finished,
) -> None:
    conversation: Any = [
        {"role": "user", "content": "What is the capital of Spain?"},
        {"role": "assistant", "content": "Madrid."},
        {"role": "user", "content": [{"type": "input_text", "text": "Capital of France?"}]},
    ]
    with (
        replay("responses_basic", match_body=False),
        tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER),
    ):
        response = client.responses.create(
            model=MODEL, input=conversation, instructions="Answer in one sentence."
        )

    root = root_of(finished())
    assert root[INPUT] == "Capital of France?"
    assert root[OUTPUT] == response.output_text == "Paris is the capital of France."
