"""Streamed chat completions: proxies, stream endings, tool-call deltas, SDK helpers.

Usage on streams (asked for by default, opt-out, servers rejecting it) is in
``test_openai_stream_usage.py``.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

import openai
import pytest
from openai_cassettes import replay
from openai_wire import (
    CHAT_MODEL,
    RECIPES_BY_NAME,
    STREAM_MESSAGES,
    WEATHER_QUESTION,
    WEATHER_TOOL,
    make_client,
)
from openinference.semconv.trace import MessageAttributes, SpanAttributes, ToolCallAttributes
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from convotel.openai import OpenAIInstrumentor
from convotel.spans import STREAM_OUTCOME, TIME_TO_FIRST_TOKEN_MS

OnlySpan = Callable[[], ReadableSpan]
Finished = Callable[[], list[ReadableSpan]]
OUT = SpanAttributes.LLM_OUTPUT_MESSAGES
CONTENT = MessageAttributes.MESSAGE_CONTENT
CHUNKS_WITHOUT_USAGE = 5  # role, "Hello", " there", "!", finish


def stream_chat(client: openai.OpenAI, **kwargs: Any) -> Any:
    return client.chat.completions.create(
        model=CHAT_MODEL, messages=STREAM_MESSAGES, stream=True, **kwargs
    )


def chunk_dumps(chunks: list[Any]) -> list[dict[str, Any]]:
    return [chunk.model_dump() for chunk in chunks]


@pytest.fixture(scope="module")
def plain_chunks() -> list[dict[str, Any]]:
    """The `chat_stream` chunks as the SDK yields them without instrumentation."""
    with replay("chat_stream"):
        return chunk_dumps(list(stream_chat(make_client(RECIPES_BY_NAME["chat_stream"]))))


def attributes_of(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def assert_completed_hello(span: ReadableSpan) -> None:
    attributes = attributes_of(span)
    assert span.status.status_code is StatusCode.OK
    assert attributes[STREAM_OUTCOME] == "completed"
    assert attributes[f"{OUT}.0.{CONTENT}"] == "Hello there!"
    assert attributes[f"{OUT}.0.{MessageAttributes.MESSAGE_ROLE}"] == "assistant"
    assert attributes[SpanAttributes.OUTPUT_VALUE] == "Hello there!"
    assert attributes[SpanAttributes.LLM_FINISH_REASON] == "stop"
    assert attributes[SpanAttributes.LLM_MODEL_NAME] == "gpt-4o-mini-2024-07-18"
    assert attributes[TIME_TO_FIRST_TOKEN_MS] >= 0


def test_stream_yields_exactly_the_sdk_chunks_and_ends_the_span_when_exhausted(
    plain_chunks: list[dict[str, Any]],
    client: openai.OpenAI,
    instrumented: OpenAIInstrumentor,
    finished: Finished,
) -> None:
    with replay("chat_stream"):
        stream = stream_chat(client)
        assert isinstance(stream, openai.Stream)  # a transparent proxy
        chunks = []
        for chunk in stream:
            chunks.append(chunk)
            assert finished() == []  # still streaming
    assert chunk_dumps(chunks) == plain_chunks
    (span,) = finished()
    assert_completed_hello(span)
    assert attributes_of(span)[SpanAttributes.LLM_TOKEN_COUNT_TOTAL] == 22  # asked by default


async def test_async_stream_ends_the_span_when_exhausted(
    async_client: openai.AsyncOpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with replay("chat_stream"):
        stream = await async_client.chat.completions.create(
            model=CHAT_MODEL, messages=STREAM_MESSAGES, stream=True
        )
        assert isinstance(stream, openai.AsyncStream)
        chunks = [chunk async for chunk in stream]
    assert len(chunks) == CHUNKS_WITHOUT_USAGE
    assert_completed_hello(only_span())


def test_azure_prompt_filter_chunk_without_choices_is_delivered(
    azure_client: openai.AzureOpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with replay("azure_chat_stream"):
        stream = azure_client.chat.completions.create(
            model="gpt-4o-deploy", messages=STREAM_MESSAGES, stream=True
        )
        chunks = list(stream)
    assert [len(c.choices) for c in chunks] == [0, 1, 1, 1, 1, 1]  # Azure's empty first chunk
    attributes = attributes_of(only_span())
    assert attributes[SpanAttributes.LLM_PROVIDER] == "azure"
    assert attributes[f"{OUT}.0.{CONTENT}"] == "Hello there!"


def test_tool_call_deltas_are_merged_into_whole_calls(
    client: openai.OpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with replay("chat_stream_tools"):
        list(
            client.chat.completions.create(
                model=CHAT_MODEL, messages=[WEATHER_QUESTION], tools=[WEATHER_TOOL], stream=True
            )
        )
    attributes = attributes_of(only_span())
    calls = f"{OUT}.0.{MessageAttributes.MESSAGE_TOOL_CALLS}"
    assert attributes[f"{calls}.0.{ToolCallAttributes.TOOL_CALL_ID}"] == "call_paris"
    assert attributes[f"{calls}.0.{ToolCallAttributes.TOOL_CALL_FUNCTION_NAME}"] == "get_weather"
    assert (
        attributes[f"{calls}.0.{ToolCallAttributes.TOOL_CALL_FUNCTION_ARGUMENTS_JSON}"]
        == '{"city":"Paris"}'
    )
    assert attributes[f"{calls}.1.{ToolCallAttributes.TOOL_CALL_ID}"] == "call_tokyo"
    assert (
        attributes[f"{calls}.1.{ToolCallAttributes.TOOL_CALL_FUNCTION_ARGUMENTS_JSON}"]
        == '{"city":"Tokyo"}'
    )
    assert attributes[SpanAttributes.LLM_FINISH_REASON] == "tool_calls"
    assert f"{OUT}.0.{CONTENT}" not in attributes


def test_error_event_mid_stream_reaches_the_app_and_fails_the_span(
    client: openai.OpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    received: list[Any] = []
    with replay("chat_stream_error"):
        stream = stream_chat(client)
        with pytest.raises(openai.APIError) as raised:
            received.extend(stream)
    assert len(received) == 2
    span = only_span()
    attributes = attributes_of(span)
    assert span.status.status_code is StatusCode.ERROR
    assert attributes[STREAM_OUTCOME] == "error"
    assert attributes[f"{OUT}.0.{CONTENT}"] == "Hel"  # what was streamed before the error
    (event,) = span.events
    assert event.name == "exception"
    assert event.attributes is not None
    assert event.attributes["exception.message"] == str(raised.value)


def test_breaking_out_and_closing_ends_the_span_as_closed_early(
    client: openai.OpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with replay("chat_stream"):
        stream = stream_chat(client)
        for _ in stream:
            break
        stream.close()
    attributes = attributes_of(only_span())
    assert attributes[STREAM_OUTCOME] == "closed_early"
    assert attributes[f"{OUT}.0.{MessageAttributes.MESSAGE_ROLE}"] == "assistant"


def test_leaving_a_with_block_early_ends_the_span(
    client: openai.OpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with replay("chat_stream"), stream_chat(client) as stream:
        next(iter(stream))
    assert attributes_of(only_span())[STREAM_OUTCOME] == "closed_early"


def test_abandoned_stream_ends_its_span_when_garbage_collected(
    client: openai.OpenAI, instrumented: OpenAIInstrumentor, finished: Finished
) -> None:
    with replay("chat_stream"):
        stream = stream_chat(client)
        next(stream)
    assert finished() == []
    del stream
    gc.collect()
    (span,) = finished()
    assert attributes_of(span)[STREAM_OUTCOME] == "abandoned"
    assert span.status.status_code is StatusCode.UNSET


def test_stream_helper_span_ends_with_get_final_completion(
    client: openai.OpenAI, instrumented: OpenAIInstrumentor, finished: Finished
) -> None:
    with (
        replay("chat_stream"),
        client.chat.completions.stream(model=CHAT_MODEL, messages=STREAM_MESSAGES) as stream,
    ):
        completion = stream.get_final_completion()
        assert len(finished()) == 1
    assert completion.choices[0].message.content == "Hello there!"
    assert_completed_hello(finished()[0])


def test_stream_helper_span_ends_at_an_early_with_exit(
    client: openai.OpenAI, instrumented: OpenAIInstrumentor, finished: Finished
) -> None:
    with (
        replay("chat_stream"),
        client.chat.completions.stream(model=CHAT_MODEL, messages=STREAM_MESSAGES) as stream,
    ):
        for event in stream:
            if event.type == "content.delta" and event.delta:
                break
        assert finished() == []
    (span,) = finished()  # ended by the `with` exit, not by garbage collection
    assert attributes_of(span)[STREAM_OUTCOME] == "closed_early"
    assert attributes_of(span)[f"{OUT}.0.{CONTENT}"] == "Hello"
    assert stream is not None


async def test_async_stream_helper_span_ends_with_get_final_completion(
    async_client: openai.AsyncOpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with replay("chat_stream"):
        async with async_client.chat.completions.stream(
            model=CHAT_MODEL, messages=STREAM_MESSAGES
        ) as stream:
            completion = await stream.get_final_completion()
    assert completion.choices[0].message.content == "Hello there!"
    assert_completed_hello(only_span())


async def test_async_stream_helper_span_ends_at_an_early_with_exit(
    async_client: openai.AsyncOpenAI, instrumented: OpenAIInstrumentor, finished: Finished
) -> None:
    with replay("chat_stream"):
        async with async_client.chat.completions.stream(
            model=CHAT_MODEL, messages=STREAM_MESSAGES
        ) as stream:
            async for event in stream:
                if event.type == "content.delta":
                    break
    (span,) = finished()
    assert attributes_of(span)[STREAM_OUTCOME] == "closed_early"


def test_with_streaming_response_stream_is_traced_through_parse(
    client: openai.OpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with (
        replay("chat_stream"),
        client.chat.completions.with_streaming_response.create(
            model=CHAT_MODEL, messages=STREAM_MESSAGES, stream=True
        ) as response,
    ):
        chunks = list(response.parse())
    assert len(chunks) == CHUNKS_WITHOUT_USAGE
    assert_completed_hello(only_span())


def test_with_raw_response_stream_is_traced_through_parse(
    client: openai.OpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with replay("chat_stream"):
        raw = client.chat.completions.with_raw_response.create(
            model=CHAT_MODEL, messages=STREAM_MESSAGES, stream=True
        )
        stream = raw.parse()
        assert raw.parse() is stream  # one proxy per stream, as the SDK caches one stream
        chunks = list(stream)
    assert len(chunks) == CHUNKS_WITHOUT_USAGE
    assert_completed_hello(only_span())


async def test_async_with_raw_response_stream_is_traced(
    async_client: openai.AsyncOpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with replay("chat_stream"):
        raw = await async_client.chat.completions.with_raw_response.create(
            model=CHAT_MODEL, messages=STREAM_MESSAGES, stream=True
        )
        chunks = [chunk async for chunk in raw.parse()]
    assert len(chunks) == CHUNKS_WITHOUT_USAGE
    assert_completed_hello(only_span())


def test_raw_response_never_parsed_ends_its_span_as_abandoned(
    client: openai.OpenAI, instrumented: OpenAIInstrumentor, finished: Finished
) -> None:
    with replay("chat_stream"):
        raw = client.chat.completions.with_raw_response.create(
            model=CHAT_MODEL, messages=STREAM_MESSAGES, stream=True
        )
    assert raw.status_code == 200
    assert finished() == []
    del raw
    gc.collect()
    (span,) = finished()
    assert attributes_of(span)[STREAM_OUTCOME] == "abandoned"
