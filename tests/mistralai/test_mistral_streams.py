"""Streamed Mistral calls: the returned stream behaves as without convotel; the span ends once."""

from __future__ import annotations

import gc
from typing import Any

import pydantic
import pytest
from mistral_cassettes import cassette, replay
from mistral_spans import (
    AGENT_ID,
    CHAT_MODEL,
    CONVERSATION_ERROR_INPUT,
    HELLO,
    WEATHER_QUESTION,
    WEATHER_TOOL,
    attributes,
    only_span,
)
from mistralai.client import Mistral, errors
from mistralai.client.utils.eventstreaming import EventStream, EventStreamAsync
from openinference.semconv.trace import MessageAttributes, SpanAttributes, ToolCallAttributes
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv._incubating.attributes.gen_ai_attributes import GEN_AI_CONVERSATION_ID
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE
from opentelemetry.trace import StatusCode

from convotel import using_session
from convotel.spans import STREAM_OUTCOME, TIME_TO_FIRST_TOKEN_MS

OUTPUT_0 = f"{SpanAttributes.LLM_OUTPUT_MESSAGES}.0."


def texts(events: list[object]) -> list[str]:
    return [str(event.data.choices[0].delta.content) for event in events]  # type: ignore[attr-defined]


def test_stream_in_a_with_block_yields_every_event_and_records_the_reply(
    client: Mistral, span_exporter: InMemorySpanExporter
) -> None:
    with (
        using_session("s-stream"),
        replay.use_cassette(cassette("chat_stream")),
        client.chat.stream(model=CHAT_MODEL, messages=HELLO) as stream,
    ):
        assert isinstance(stream, EventStream)
        events = list(stream)

    assert texts(events) == ["", "Bon", "jour", " !", ""]
    span = only_span(span_exporter)
    found = attributes(span)
    assert span.name == "mistralai.chat.stream"
    assert span.status.status_code is StatusCode.OK
    assert found[SpanAttributes.SESSION_ID] == "s-stream"
    assert found[STREAM_OUTCOME] == "completed"
    assert found[TIME_TO_FIRST_TOKEN_MS] >= 0
    assert found[OUTPUT_0 + MessageAttributes.MESSAGE_CONTENT] == "Bonjour !"
    assert found[SpanAttributes.LLM_FINISH_REASON] == "stop"
    assert found[SpanAttributes.LLM_TOKEN_COUNT_PROMPT] == 9
    assert found[SpanAttributes.LLM_TOKEN_COUNT_COMPLETION] == 4
    assert found[SpanAttributes.LLM_TOKEN_COUNT_TOTAL] == 13


def test_stream_is_lazy_and_the_span_ends_when_iteration_ends(
    client: Mistral, span_exporter: InMemorySpanExporter
) -> None:
    with replay.use_cassette(cassette("chat_stream")):
        stream = client.chat.stream(model=CHAT_MODEL, messages=HELLO)
        assert span_exporter.get_finished_spans() == ()
        first = next(stream)
        assert first.data.choices[0].delta.role == "assistant"
        assert span_exporter.get_finished_spans() == ()
        rest = list(stream)

    assert len(rest) == 4
    assert attributes(only_span(span_exporter))[STREAM_OUTCOME] == "completed"
    assert list(stream) == []  # exhausted like the original; still one span
    assert len(span_exporter.get_finished_spans()) == 1


def test_breaking_out_of_a_with_block_ends_the_span_as_closed_early(
    client: Mistral, span_exporter: InMemorySpanExporter
) -> None:
    with replay.use_cassette(cassette("chat_stream")):
        with client.chat.stream(model=CHAT_MODEL, messages=HELLO) as stream:
            for event in stream:
                if event.data.choices[0].delta.content == "Bon":
                    break
        assert stream.response.is_closed

    span = only_span(span_exporter)
    assert span.status.status_code is StatusCode.OK
    assert attributes(span)[STREAM_OUTCOME] == "closed_early"
    assert attributes(span)[OUTPUT_0 + MessageAttributes.MESSAGE_CONTENT] == "Bon"


def test_close_ends_the_span_once(client: Mistral, span_exporter: InMemorySpanExporter) -> None:
    if not hasattr(EventStream, "close"):
        pytest.skip("EventStream.close() is newer than this mistralai (2.0 closes on with-exit)")
    with replay.use_cassette(cassette("chat_stream")):
        stream = client.chat.stream(model=CHAT_MODEL, messages=HELLO)
        next(stream)
        closable: Any = stream  # EventStream.close() is untyped in the SDK
        closable.close()
        closable.close()

    assert list(stream) == []  # the SDK's closed stream yields nothing more
    assert attributes(only_span(span_exporter))[STREAM_OUTCOME] == "closed_early"


def test_abandoned_stream_is_ended_by_garbage_collection(
    client: Mistral, span_exporter: InMemorySpanExporter
) -> None:
    with replay.use_cassette(cassette("chat_stream")):
        stream = client.chat.stream(model=CHAT_MODEL, messages=HELLO)
        next(stream)
        del stream
        gc.collect()

    span = only_span(span_exporter)
    assert attributes(span)[STREAM_OUTCOME] == "abandoned"
    assert span.status.status_code is StatusCode.UNSET


async def test_async_stream_works_with_async_with_and_records_usage(
    client: Mistral, span_exporter: InMemorySpanExporter
) -> None:
    with using_session("s-async-stream"), replay.use_cassette(cassette("chat_stream")):
        stream = await client.chat.stream_async(model=CHAT_MODEL, messages=HELLO)
        assert isinstance(stream, EventStreamAsync)
        assert span_exporter.get_finished_spans() == ()
        async with stream:
            events = [event async for event in stream]

    assert texts(events) == ["", "Bon", "jour", " !", ""]
    span = only_span(span_exporter)
    assert attributes(span)[SpanAttributes.SESSION_ID] == "s-async-stream"
    assert attributes(span)[STREAM_OUTCOME] == "completed"
    assert attributes(span)[SpanAttributes.LLM_TOKEN_COUNT_TOTAL] == 13


async def test_async_stream_closed_early_ends_the_span(
    client: Mistral, span_exporter: InMemorySpanExporter
) -> None:
    with replay.use_cassette(cassette("chat_stream")):
        async with await client.chat.stream_async(model=CHAT_MODEL, messages=HELLO) as stream:
            async for _ in stream:
                break

    assert attributes(only_span(span_exporter))[STREAM_OUTCOME] == "closed_early"


def test_streamed_tool_call_is_recorded(
    client: Mistral, span_exporter: InMemorySpanExporter
) -> None:
    with replay.use_cassette(cassette("chat_stream_tools")):
        events = list(
            client.chat.stream(model=CHAT_MODEL, messages=WEATHER_QUESTION, tools=[WEATHER_TOOL])
        )

    assert events[-1].data.choices[0].finish_reason == "tool_calls"
    found = attributes(only_span(span_exporter))
    call = f"{OUTPUT_0}{MessageAttributes.MESSAGE_TOOL_CALLS}.0."
    assert found[call + ToolCallAttributes.TOOL_CALL_ID] == "Xk3Lm9QzR"
    assert found[call + ToolCallAttributes.TOOL_CALL_FUNCTION_NAME] == "get_weather"
    assert found[call + ToolCallAttributes.TOOL_CALL_FUNCTION_ARGUMENTS_JSON] == '{"city": "Paris"}'
    assert found[SpanAttributes.LLM_FINISH_REASON] == "tool_calls"
    assert found[SpanAttributes.LLM_TOKEN_COUNT_TOTAL] == 105


async def test_fim_and_agent_streams_are_traced(
    client: Mistral, span_exporter: InMemorySpanExporter
) -> None:
    with replay.use_cassette(cassette("fim_stream")):
        code = "".join(
            str(event.data.choices[0].delta.content)
            for event in client.fim.stream(model="codestral-latest", prompt="def add(a, b):\n")
        )
    with replay.use_cassette(cassette("agents_stream")):
        stream = await client.agents.stream_async(agent_id=AGENT_ID, messages=HELLO)
        reply = "".join([str(event.data.choices[0].delta.content) async for event in stream])

    assert (code, reply) == ("    return a + b", "Bonjour !")
    fim, agent = span_exporter.get_finished_spans()
    assert fim.name == "mistralai.fim.stream"
    assert attributes(fim)[OUTPUT_0 + MessageAttributes.MESSAGE_CONTENT] == "    return a + b"
    assert attributes(fim)[SpanAttributes.LLM_TOKEN_COUNT_TOTAL] == 19
    assert agent.name == "mistralai.agents.stream"
    assert attributes(agent)[SpanAttributes.LLM_MODEL_NAME] == "mistral-medium-2508"
    assert attributes(agent)[SpanAttributes.LLM_TOKEN_COUNT_TOTAL] == 45


def test_conversation_stream_records_reply_usage_and_conversation_id(
    client: Mistral, span_exporter: InMemorySpanExporter
) -> None:
    with (
        replay.use_cassette(cassette("conversations_start_stream")),
        client.beta.conversations.start_stream(
            inputs="Who wrote Les Misérables?", model="mistral-medium-latest"
        ) as stream,
    ):
        kinds = [event.event for event in stream]

    assert kinds[-1] == "conversation.response.done"
    span = only_span(span_exporter)
    found = attributes(span)
    assert span.name == "mistralai.conversations.start_stream"
    assert found[GEN_AI_CONVERSATION_ID] == "conv_0198d2c6f3b27e8a9c4d1f0b2a3e5c7d"
    assert (
        found[OUTPUT_0 + MessageAttributes.MESSAGE_CONTENT] == "Victor Hugo wrote Les Misérables."
    )
    assert found[SpanAttributes.LLM_MODEL_NAME] == "mistral-medium-latest"
    assert found[SpanAttributes.LLM_TOKEN_COUNT_TOTAL] == 19


def conversation_error_events(client: Mistral) -> list[dict[str, Any]]:
    """The events of the failing conversation stream, as the application sees them."""
    with replay.use_cassette(cassette("conversations_start_stream_error")):
        stream = client.beta.conversations.start_stream(
            inputs=CONVERSATION_ERROR_INPUT, model="mistral-medium-latest"
        )
        return [event.model_dump() for event in stream]


def assert_failed_by_the_conversation_error(span: ReadableSpan) -> None:
    found = attributes(span)
    assert found[STREAM_OUTCOME] == "error"
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "Internal error while generating the response"
    assert found[ERROR_TYPE] == "3000"
    assert found[GEN_AI_CONVERSATION_ID] == "conv_0198d2c8b5c61f2a3b4c5d6e7f8a9b0c"
    assert found[OUTPUT_0 + MessageAttributes.MESSAGE_CONTENT] == "Here is"
    assert span.events == ()  # the SDK raised nothing


def test_conversation_error_event_fails_the_span_and_reaches_the_application_unchanged(
    client: Mistral, span_exporter: InMemorySpanExporter
) -> None:
    with suppress_instrumentation():
        uninstrumented = conversation_error_events(client)
    assert span_exporter.get_finished_spans() == ()

    events = conversation_error_events(client)

    assert events == uninstrumented
    assert events[-1]["data"]["type"] == "conversation.response.error"
    span = only_span(span_exporter)
    assert span.name == "mistralai.conversations.start_stream"
    assert_failed_by_the_conversation_error(span)


async def test_async_conversation_error_event_fails_the_span(
    client: Mistral, span_exporter: InMemorySpanExporter
) -> None:
    with replay.use_cassette(cassette("conversations_start_stream_error")):
        stream = await client.beta.conversations.start_stream_async(
            inputs=CONVERSATION_ERROR_INPUT, model="mistral-medium-latest"
        )
        kinds = [event.event async for event in stream]

    assert kinds[-1] == "conversation.response.error"
    assert_failed_by_the_conversation_error(only_span(span_exporter))


def test_malformed_chunk_error_reaches_the_caller_and_fails_the_span(
    client: Mistral, span_exporter: InMemorySpanExporter
) -> None:
    received: list[object] = []
    with replay.use_cassette(cassette("malformed_stream_chunk")):
        stream = client.chat.stream(model=CHAT_MODEL, messages=HELLO)
        # ResponseValidationError since 2.x; 2.0 raised pydantic's ValidationError directly.
        with pytest.raises((errors.ResponseValidationError, pydantic.ValidationError)) as caught:
            received.extend(stream)

    assert len(received) == 1
    span = only_span(span_exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert attributes(span)[STREAM_OUTCOME] == "error"
    assert attributes(span)[OUTPUT_0 + MessageAttributes.MESSAGE_CONTENT] == "Bon"
    assert span.events[0].attributes is not None
    assert str(span.events[0].attributes["exception.type"]).endswith(type(caught.value).__name__)


def test_rate_limited_stream_request_fails_the_span_with_http_status(
    client: Mistral, span_exporter: InMemorySpanExporter
) -> None:
    with (
        replay.use_cassette(cassette("error_429_stream")),
        pytest.raises(errors.SDKError) as caught,
    ):
        client.chat.stream(model=CHAT_MODEL, messages=HELLO)

    assert caught.value.status_code == 429
    span = only_span(span_exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert attributes(span)[HTTP_RESPONSE_STATUS_CODE] == 429
    assert attributes(span)[SpanAttributes.LLM_MODEL_NAME] == CHAT_MODEL
