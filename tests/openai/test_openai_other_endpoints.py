"""Responses API, embeddings, legacy completions, and calls that are not model calls."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import openai
from openai_cassettes import Instrument, replay
from openai_wire import (
    CHAT_MODEL,
    EMBEDDING_VECTORS,
    RESPONSES_INCOMPLETE_TEXT,
    RESPONSES_TEXT,
    RESPONSES_WEATHER_TOOL,
)
from openinference.semconv.trace import (
    ChoiceAttributes,
    EmbeddingAttributes,
    MessageAttributes,
    OpenInferenceSpanKindValues,
    PromptAttributes,
    SpanAttributes,
    ToolAttributes,
    ToolCallAttributes,
)
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.trace import StatusCode

from convotel import REDACTED_VALUE, TraceConfig
from convotel.openai import OpenAIInstrumentor
from convotel.spans import STREAM_OUTCOME

OnlySpan = Callable[[], ReadableSpan]
Finished = Callable[[], list[ReadableSpan]]
IN = SpanAttributes.LLM_INPUT_MESSAGES
OUT = SpanAttributes.LLM_OUTPUT_MESSAGES
ROLE = MessageAttributes.MESSAGE_ROLE
CONTENT = MessageAttributes.MESSAGE_CONTENT
EMBEDDINGS = SpanAttributes.EMBEDDING_EMBEDDINGS
RESPONSE_REQUEST: dict[str, Any] = {
    "model": CHAT_MODEL,
    "instructions": "Answer in one sentence.",
    "input": "Capital of France?",
}


def attributes_of(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def assert_paris_response(span: ReadableSpan, *, cached: int, reasoning: int) -> None:
    attributes = attributes_of(span)
    assert span.name == "Response"
    assert (
        attributes[SpanAttributes.OPENINFERENCE_SPAN_KIND] == OpenInferenceSpanKindValues.LLM.value
    )
    assert attributes[f"{IN}.0.{ROLE}"] == "system"
    assert attributes[f"{IN}.0.{CONTENT}"] == "Answer in one sentence."
    assert attributes[f"{IN}.1.{ROLE}"] == "user"
    assert attributes[f"{IN}.1.{CONTENT}"] == "Capital of France?"
    assert attributes[f"{OUT}.0.{ROLE}"] == "assistant"
    assert attributes[f"{OUT}.0.{CONTENT}"] == RESPONSES_TEXT
    assert attributes[SpanAttributes.OUTPUT_VALUE] == RESPONSES_TEXT
    assert attributes[SpanAttributes.LLM_FINISH_REASON] == "completed"
    assert attributes[SpanAttributes.LLM_MODEL_NAME] == "gpt-4o-mini-2024-07-18"
    assert attributes[SpanAttributes.LLM_TOKEN_COUNT_PROMPT] == 36
    assert attributes[SpanAttributes.LLM_TOKEN_COUNT_COMPLETION] == 9
    assert attributes[SpanAttributes.LLM_TOKEN_COUNT_TOTAL] == 45
    assert attributes[SpanAttributes.LLM_TOKEN_COUNT_PROMPT_DETAILS_CACHE_READ] == cached
    assert attributes[SpanAttributes.LLM_TOKEN_COUNT_COMPLETION_DETAILS_REASONING] == reasoning


def test_responses_create_records_instructions_input_output_and_usage(
    client: openai.OpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with replay("responses_basic"):
        response = client.responses.create(**RESPONSE_REQUEST, temperature=1.0)
    assert response.output_text == RESPONSES_TEXT
    span = only_span()
    assert_paris_response(span, cached=16, reasoning=4)
    parameters = json.loads(attributes_of(span)[SpanAttributes.LLM_INVOCATION_PARAMETERS])
    assert parameters == {"model": CHAT_MODEL, "temperature": 1.0}


async def test_async_responses_create_is_traced(
    async_client: openai.AsyncOpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with replay("responses_basic"):
        await async_client.responses.create(**RESPONSE_REQUEST, temperature=1.0)
    assert_paris_response(only_span(), cached=16, reasoning=4)


def test_responses_function_tools_and_calls_are_recorded(
    client: openai.OpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with replay("responses_tools"):
        client.responses.create(
            model=CHAT_MODEL,
            input=[{"role": "user", "content": "Weather in Paris?"}],
            tools=[RESPONSES_WEATHER_TOOL],
        )
    attributes = attributes_of(only_span())
    schema = attributes[f"{SpanAttributes.LLM_TOOLS}.0.{ToolAttributes.TOOL_JSON_SCHEMA}"]
    assert json.loads(schema)["name"] == "get_weather"
    # without instructions message 0 is left out: the input starts at 1, as OpenInference's
    assert f"{IN}.0.{ROLE}" not in attributes
    assert attributes[f"{IN}.1.{CONTENT}"] == "Weather in Paris?"
    call = f"{OUT}.0.{MessageAttributes.MESSAGE_TOOL_CALLS}.0."
    assert attributes[call + ToolCallAttributes.TOOL_CALL_ID] == "call_weather_paris"
    assert attributes[call + ToolCallAttributes.TOOL_CALL_FUNCTION_NAME] == "get_weather"
    assert (
        attributes[call + ToolCallAttributes.TOOL_CALL_FUNCTION_ARGUMENTS_JSON]
        == '{"city":"Paris"}'
    )


def test_responses_stream_records_the_completed_response(
    client: openai.OpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with replay("responses_stream"):
        events = list(client.responses.create(**RESPONSE_REQUEST, stream=True))
    assert events[-1].type == "response.completed"
    span = only_span()
    assert attributes_of(span)[STREAM_OUTCOME] == "completed"
    assert_paris_response(span, cached=0, reasoning=0)


async def test_async_responses_stream_is_traced(
    async_client: openai.AsyncOpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with replay("responses_stream"):
        stream = await async_client.responses.create(**RESPONSE_REQUEST, stream=True)
        texts = [
            event.delta async for event in stream if event.type == "response.output_text.delta"
        ]
    assert "".join(texts) == RESPONSES_TEXT
    assert_paris_response(only_span(), cached=0, reasoning=0)


def test_responses_stream_closed_early_records_the_text_so_far(
    client: openai.OpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with (
        replay("responses_stream"),
        client.responses.create(**RESPONSE_REQUEST, stream=True) as stream,
    ):
        for event in stream:
            if event.type == "response.output_text.delta":
                break
    attributes = attributes_of(only_span())
    assert attributes[STREAM_OUTCOME] == "closed_early"
    assert attributes[f"{OUT}.0.{CONTENT}"] == "Paris is"


def test_responses_stream_helper_span_ends_with_the_final_response(
    client: openai.OpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with (
        replay("responses_stream", match_body=False),
        client.responses.stream(**RESPONSE_REQUEST) as stream,
    ):
        final = stream.get_final_response()
    assert final.output_text == RESPONSES_TEXT
    assert_paris_response(only_span(), cached=0, reasoning=0)


def test_responses_stream_failed_event_fails_the_span_and_reaches_the_app_unchanged(
    client: openai.OpenAI, instrumented: OpenAIInstrumentor, finished: Finished
) -> None:
    def stream_events() -> list[dict[str, Any]]:
        with replay("responses_stream_failed"):
            return [
                e.model_dump() for e in client.responses.create(**RESPONSE_REQUEST, stream=True)
            ]

    with suppress_instrumentation():
        uninstrumented = stream_events()
    assert finished() == []

    events = stream_events()

    assert events == uninstrumented
    assert events[-1]["type"] == "response.failed"
    [span] = finished()
    attributes = attributes_of(span)
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "The model failed to generate a response."
    assert attributes[ERROR_TYPE] == "server_error"
    assert attributes[STREAM_OUTCOME] == "error"
    assert attributes[SpanAttributes.LLM_FINISH_REASON] == "failed"
    assert attributes[SpanAttributes.LLM_MODEL_NAME] == "gpt-4o-mini-2024-07-18"
    assert span.events == ()  # the SDK raised nothing


async def test_async_responses_stream_error_event_fails_the_span(
    async_client: openai.AsyncOpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with replay("responses_stream_error_event"):
        stream = await async_client.responses.create(**RESPONSE_REQUEST, stream=True)
        kinds = [event.type async for event in stream]

    assert kinds[-1] == "error"
    span = only_span()
    attributes = attributes_of(span)
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "Rate limit reached for gpt-4o-mini on tokens per min (TPM)."
    assert attributes[ERROR_TYPE] == "rate_limit_exceeded"
    assert attributes[STREAM_OUTCOME] == "error"
    assert attributes[f"{OUT}.0.{CONTENT}"] == "Paris is"


def test_responses_stream_incomplete_is_not_an_error_and_records_its_reason(
    client: openai.OpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with replay("responses_stream_incomplete"):
        stream = client.responses.create(**RESPONSE_REQUEST, stream=True, max_output_tokens=3)
        kinds = [event.type for event in stream]

    assert kinds[-1] == "response.incomplete"
    span = only_span()
    attributes = attributes_of(span)
    assert span.status.status_code is StatusCode.OK
    assert ERROR_TYPE not in attributes
    assert attributes[STREAM_OUTCOME] == "completed"
    assert attributes[SpanAttributes.LLM_FINISH_REASON] == "max_output_tokens"
    assert attributes[f"{OUT}.0.{CONTENT}"] == RESPONSES_INCOMPLETE_TEXT
    assert attributes[SpanAttributes.LLM_TOKEN_COUNT_COMPLETION] == 3


def test_embeddings_record_model_texts_vectors_and_usage(
    client: openai.OpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with replay("embeddings"):
        client.embeddings.create(model="text-embedding-3-small", input=["cat", "dog"])
    span = only_span()
    attributes = attributes_of(span)
    assert span.name == "CreateEmbeddings"
    assert span.status.status_code is StatusCode.OK
    assert (
        attributes[SpanAttributes.OPENINFERENCE_SPAN_KIND]
        == OpenInferenceSpanKindValues.EMBEDDING.value
    )
    assert attributes[SpanAttributes.EMBEDDING_MODEL_NAME] == "text-embedding-3-small"
    for index, (text, vector) in enumerate(zip(["cat", "dog"], EMBEDDING_VECTORS, strict=True)):
        assert attributes[f"{EMBEDDINGS}.{index}.{EmbeddingAttributes.EMBEDDING_TEXT}"] == text
        assert (
            list(attributes[f"{EMBEDDINGS}.{index}.{EmbeddingAttributes.EMBEDDING_VECTOR}"])
            == vector
        )
    assert attributes[SpanAttributes.LLM_TOKEN_COUNT_PROMPT] == 6
    assert attributes[SpanAttributes.LLM_TOKEN_COUNT_TOTAL] == 6
    # the SDK's own encoding_format=base64 default is not a parameter the user set
    parameters = json.loads(attributes[SpanAttributes.EMBEDDING_INVOCATION_PARAMETERS])
    assert parameters == {"model": "text-embedding-3-small"}
    assert SpanAttributes.LLM_INVOCATION_PARAMETERS not in attributes


async def test_async_embeddings_with_parameters_are_traced(
    async_client: openai.AsyncOpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with replay("embeddings_float"):
        await async_client.embeddings.create(
            model="text-embedding-3-small",
            input="cat and dog",
            encoding_format="float",
            dimensions=3,
        )
    attributes = attributes_of(only_span())
    assert attributes[f"{EMBEDDINGS}.0.{EmbeddingAttributes.EMBEDDING_TEXT}"] == "cat and dog"
    parameters = json.loads(attributes[SpanAttributes.EMBEDDING_INVOCATION_PARAMETERS])
    assert parameters == {
        "model": "text-embedding-3-small",
        "encoding_format": "float",
        "dimensions": 3,
    }


def test_hide_embedding_vectors_redacts_them(
    client: openai.OpenAI, instrument: Instrument, only_span: OnlySpan
) -> None:
    instrument(TraceConfig(hide_embedding_vectors=True))
    with replay("embeddings"):
        client.embeddings.create(model="text-embedding-3-small", input=["cat", "dog"])
    attributes = attributes_of(only_span())
    assert attributes[f"{EMBEDDINGS}.0.{EmbeddingAttributes.EMBEDDING_VECTOR}"] == REDACTED_VALUE
    assert attributes[f"{EMBEDDINGS}.0.{EmbeddingAttributes.EMBEDDING_TEXT}"] == "cat"


def test_legacy_completion_records_prompt_choices_and_usage(
    client: openai.OpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with replay("completions_legacy"):
        client.completions.create(
            model="gpt-3.5-turbo-instruct", prompt="Say this is a test", max_tokens=7, temperature=0
        )
    span = only_span()
    attributes = attributes_of(span)
    assert span.name == "Completion"
    assert (
        attributes[f"{SpanAttributes.LLM_PROMPTS}.0.{PromptAttributes.PROMPT_TEXT}"]
        == "Say this is a test"
    )
    text = attributes[f"{SpanAttributes.LLM_CHOICES}.0.{ChoiceAttributes.COMPLETION_TEXT}"]
    assert text == "\n\nThis is indeed a test"
    assert attributes[SpanAttributes.OUTPUT_VALUE] == text
    assert attributes[SpanAttributes.LLM_FINISH_REASON] == "length"
    assert attributes[SpanAttributes.LLM_TOKEN_COUNT_TOTAL] == 12
    parameters = json.loads(attributes[SpanAttributes.LLM_INVOCATION_PARAMETERS])
    assert parameters == {"model": "gpt-3.5-turbo-instruct", "max_tokens": 7, "temperature": 0}


def test_legacy_completion_stream_is_accumulated(
    client: openai.OpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with replay("completions_legacy_stream"):
        stream = client.completions.create(
            model="gpt-3.5-turbo-instruct", prompt="Say this is a test", max_tokens=7, stream=True
        )
        assert "".join(chunk.choices[0].text for chunk in stream) == "This is a test"
    attributes = attributes_of(only_span())
    assert (
        attributes[f"{SpanAttributes.LLM_CHOICES}.0.{ChoiceAttributes.COMPLETION_TEXT}"]
        == "This is a test"
    )
    assert attributes[SpanAttributes.LLM_FINISH_REASON] == "stop"
    assert attributes[STREAM_OUTCOME] == "completed"


def test_calls_that_are_not_model_calls_produce_no_span(
    client: openai.OpenAI, instrumented: OpenAIInstrumentor, finished: Finished
) -> None:
    with replay("models_list"):
        assert [model.id for model in client.models.list()] == [
            "gpt-4o-mini",
            "text-embedding-3-small",
        ]
    assert finished() == []
