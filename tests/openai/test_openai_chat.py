"""Non-streamed chat completions: create, parse, tools, multi-modal, raw responses, Azure."""

from __future__ import annotations

import json
from collections.abc import Callable

import openai
import pytest
from openai_cassettes import Instrument, replay
from openai_wire import (
    API_KEY,
    BASIC_MESSAGES,
    CHAT_MODEL,
    CHAT_TEXT,
    MULTIMODAL_MESSAGES,
    TINY_PNG_B64,
    WEATHER_FOLLOW_UP,
    WEATHER_QUESTION,
    WEATHER_TOOL,
    CalendarEvent,
)
from openinference.semconv.trace import (
    ImageAttributes,
    MessageAttributes,
    MessageContentAttributes,
    OpenInferenceSpanKindValues,
    SpanAttributes,
    ToolAttributes,
    ToolCallAttributes,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from convotel import REDACTED_VALUE, TraceConfig, using_session, using_user
from convotel.openai import OpenAIInstrumentor

OnlySpan = Callable[[], ReadableSpan]
IN = SpanAttributes.LLM_INPUT_MESSAGES
OUT = SpanAttributes.LLM_OUTPUT_MESSAGES
ROLE = MessageAttributes.MESSAGE_ROLE
CONTENT = MessageAttributes.MESSAGE_CONTENT
CONTENTS = MessageAttributes.MESSAGE_CONTENTS
CALLS = MessageAttributes.MESSAGE_TOOL_CALLS
IMAGE_URL = f"{MessageContentAttributes.MESSAGE_CONTENT_IMAGE}.{ImageAttributes.IMAGE_URL}"


def basic_chat(client: openai.OpenAI) -> object:
    return client.chat.completions.create(
        model=CHAT_MODEL,
        messages=BASIC_MESSAGES,
        temperature=0.2,
        max_tokens=50,
        user="end-user-hash",
    )


def assert_basic_chat_span(span: ReadableSpan, provider: str = "openai") -> None:
    attributes = dict(span.attributes or {})
    assert span.name == "ChatCompletion"
    assert span.status.status_code is StatusCode.OK
    assert (
        attributes[SpanAttributes.OPENINFERENCE_SPAN_KIND] == OpenInferenceSpanKindValues.LLM.value
    )
    assert attributes[SpanAttributes.LLM_PROVIDER] == provider
    assert attributes[SpanAttributes.LLM_SYSTEM] == "openai"
    assert attributes[f"{IN}.0.{ROLE}"] == "system"
    assert attributes[f"{IN}.0.{CONTENT}"] == "You are a terse geography tutor."
    assert attributes[f"{IN}.1.{ROLE}"] == "user"
    assert attributes[f"{IN}.1.{CONTENT}"] == "What is the capital of France?"
    assert attributes[f"{OUT}.0.{ROLE}"] == "assistant"
    assert attributes[f"{OUT}.0.{CONTENT}"] == CHAT_TEXT
    assert attributes[SpanAttributes.LLM_FINISH_REASON] == "stop"
    assert attributes[SpanAttributes.OUTPUT_VALUE] == CHAT_TEXT
    assert attributes[SpanAttributes.LLM_TOKEN_COUNT_PROMPT] == 24
    assert attributes[SpanAttributes.LLM_TOKEN_COUNT_COMPLETION] == 8
    assert attributes[SpanAttributes.LLM_TOKEN_COUNT_TOTAL] == 32
    assert API_KEY not in repr(attributes)


def test_chat_completion_records_messages_model_usage_and_user_parameters(
    client: openai.OpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with replay("chat_basic"):
        completion = basic_chat(client)

    assert isinstance(completion, openai.types.chat.ChatCompletion)
    span = only_span()
    assert_basic_chat_span(span)
    attributes = dict(span.attributes or {})
    assert attributes[SpanAttributes.LLM_REQUEST_MODEL_NAME] == "gpt-4o-mini"
    assert attributes[SpanAttributes.LLM_RESPONSE_MODEL_NAME] == "gpt-4o-mini-2024-07-18"
    assert attributes[SpanAttributes.LLM_MODEL_NAME] == "gpt-4o-mini-2024-07-18"
    parameters = json.loads(str(attributes[SpanAttributes.LLM_INVOCATION_PARAMETERS]))
    assert parameters == {
        "model": "gpt-4o-mini",
        "temperature": 0.2,
        "max_tokens": 50,
        "user": "end-user-hash",
    }
    assert attributes[SpanAttributes.INPUT_VALUE] == "What is the capital of France?"
    assert attributes[SpanAttributes.INPUT_MIME_TYPE] == "text/plain"


async def test_async_chat_completion_is_traced_like_sync(
    async_client: openai.AsyncOpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with replay("chat_basic"):
        await async_client.chat.completions.create(
            model=CHAT_MODEL,
            messages=BASIC_MESSAGES,
            temperature=0.2,
            max_tokens=50,
            user="end-user-hash",
        )
    assert_basic_chat_span(only_span())


def test_cached_and_reasoning_token_counts_are_recorded(
    client: openai.OpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with replay("chat_reasoning_cached"):
        client.chat.completions.create(
            model="o4-mini",
            messages=[{"role": "user", "content": "The answer to everything?"}],
            reasoning_effort="low",
        )
    attributes = dict(only_span().attributes or {})
    assert attributes[SpanAttributes.LLM_TOKEN_COUNT_PROMPT] == 1200
    assert attributes[SpanAttributes.LLM_TOKEN_COUNT_PROMPT_DETAILS_CACHE_READ] == 1024
    assert attributes[SpanAttributes.LLM_TOKEN_COUNT_COMPLETION_DETAILS_REASONING] == 256
    assert attributes[SpanAttributes.LLM_TOKEN_COUNT_TOTAL] == 1500
    assert json.loads(str(attributes[SpanAttributes.LLM_INVOCATION_PARAMETERS])) == {
        "model": "o4-mini",
        "reasoning_effort": "low",
    }


def test_tool_definitions_calls_and_results_are_recorded(
    client: openai.OpenAI,
    instrumented: OpenAIInstrumentor,
    finished: Callable[[], list[ReadableSpan]],
) -> None:
    with replay("chat_tools"):
        client.chat.completions.create(
            model=CHAT_MODEL, messages=[WEATHER_QUESTION], tools=[WEATHER_TOOL], tool_choice="auto"
        )
        client.chat.completions.create(
            model=CHAT_MODEL, messages=WEATHER_FOLLOW_UP, tools=[WEATHER_TOOL]
        )

    first, second = (dict(span.attributes or {}) for span in finished())
    schema = json.loads(
        str(first[f"{SpanAttributes.LLM_TOOLS}.0.{ToolAttributes.TOOL_JSON_SCHEMA}"])
    )
    assert schema == WEATHER_TOOL
    assert first[SpanAttributes.LLM_FINISH_REASON] == "tool_calls"
    for index, (call_id, city) in enumerate([("call_paris", "Paris"), ("call_tokyo", "Tokyo")]):
        call = f"{OUT}.0.{CALLS}.{index}."
        assert first[call + ToolCallAttributes.TOOL_CALL_ID] == call_id
        assert first[call + ToolCallAttributes.TOOL_CALL_FUNCTION_NAME] == "get_weather"
        assert (
            first[call + ToolCallAttributes.TOOL_CALL_FUNCTION_ARGUMENTS_JSON]
            == f'{{"city":"{city}"}}'
        )
        # the second call sends the calls back, then one tool result per call
        assert second[f"{IN}.1.{CALLS}.{index}.{ToolCallAttributes.TOOL_CALL_ID}"] == call_id
    assert second[f"{IN}.1.{ROLE}"] == "assistant"
    assert second[f"{IN}.2.{ROLE}"] == "tool"
    assert second[f"{IN}.2.{MessageAttributes.MESSAGE_TOOL_CALL_ID}"] == "call_paris"
    assert second[f"{IN}.2.{CONTENT}"] == "18°C, cloudy"
    assert second[f"{IN}.3.{MessageAttributes.MESSAGE_TOOL_CALL_ID}"] == "call_tokyo"
    assert second[f"{OUT}.0.{CONTENT}"] == "Paris: 18°C, Tokyo: 22°C."


def test_sdk_message_objects_echoed_back_as_input_are_recorded(
    client: openai.OpenAI,
    instrumented: OpenAIInstrumentor,
    finished: Callable[[], list[ReadableSpan]],
) -> None:
    with replay("chat_tools", match_body=False):
        first = client.chat.completions.create(
            model=CHAT_MODEL, messages=[WEATHER_QUESTION], tools=[WEATHER_TOOL], tool_choice="auto"
        )
        # the common pattern: append the returned message object itself to the history
        history = [WEATHER_QUESTION, first.choices[0].message, *WEATHER_FOLLOW_UP[2:]]
        client.chat.completions.create(model=CHAT_MODEL, messages=history, tools=[WEATHER_TOOL])

    second = dict(finished()[1].attributes or {})
    assert second[f"{IN}.1.{ROLE}"] == "assistant"
    assert (
        second[f"{IN}.1.{CALLS}.1.{ToolCallAttributes.TOOL_CALL_FUNCTION_ARGUMENTS_JSON}"]
        == '{"city":"Tokyo"}'
    )


def test_multimodal_parts_record_text_and_image_urls(
    client: openai.OpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with replay("chat_multimodal"):
        client.chat.completions.create(model=CHAT_MODEL, messages=MULTIMODAL_MESSAGES)
    attributes = dict(only_span().attributes or {})
    parts = f"{IN}.0.{CONTENTS}"
    assert attributes[f"{parts}.0.{MessageContentAttributes.MESSAGE_CONTENT_TYPE}"] == "text"
    assert (
        attributes[f"{parts}.0.{MessageContentAttributes.MESSAGE_CONTENT_TEXT}"]
        == "What is in these two images?"
    )
    assert attributes[f"{parts}.1.{MessageContentAttributes.MESSAGE_CONTENT_TYPE}"] == "image"
    assert attributes[f"{parts}.1.{IMAGE_URL}"] == "https://example.com/cat.jpg"
    assert attributes[f"{parts}.2.{IMAGE_URL}"] == f"data:image/png;base64,{TINY_PNG_B64}"


@pytest.mark.parametrize(
    ("config", "expected_urls"),
    [
        (TraceConfig(hide_input_images=True), [None, None]),
        (TraceConfig(base64_image_max_length=10), ["https://example.com/cat.jpg", REDACTED_VALUE]),
        (TraceConfig(hide_inputs=True), [None, None]),
    ],
    ids=["hide_input_images", "base64_image_max_length", "hide_inputs"],
)
def test_trace_config_hides_images(
    client: openai.OpenAI,
    instrument: Instrument,
    only_span: OnlySpan,
    config: TraceConfig,
    expected_urls: list[str | None],
) -> None:
    instrument(config)
    with replay("chat_multimodal"):
        client.chat.completions.create(model=CHAT_MODEL, messages=MULTIMODAL_MESSAGES)
    attributes = dict(only_span().attributes or {})
    urls = [attributes.get(f"{IN}.0.{CONTENTS}.{i}.{IMAGE_URL}") for i in (1, 2)]
    assert urls == expected_urls
    if config.hide_inputs:
        assert attributes[SpanAttributes.INPUT_VALUE] == REDACTED_VALUE
        assert TINY_PNG_B64 not in repr(attributes)


def test_parse_records_structured_output_and_its_schema(
    client: openai.OpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with replay("chat_parse"):
        completion = client.chat.completions.parse(
            model=CHAT_MODEL,
            messages=[{"role": "user", "content": "Alice and Bob go to a science fair on Friday."}],
            response_format=CalendarEvent,
        )
    assert completion.choices[0].message.parsed == CalendarEvent(
        name="Science fair", date="Friday", participants=["Alice", "Bob"]
    )
    span = only_span()
    attributes = dict(span.attributes or {})
    assert span.name == "ChatCompletion"
    response_format = json.loads(str(attributes[SpanAttributes.LLM_INVOCATION_PARAMETERS]))[
        "response_format"
    ]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["name"] == "CalendarEvent"
    assert json.loads(str(attributes[f"{OUT}.0.{CONTENT}"]))["participants"] == ["Alice", "Bob"]
    assert attributes[SpanAttributes.LLM_TOKEN_COUNT_TOTAL] == 110


async def test_async_parse_is_traced(
    async_client: openai.AsyncOpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with replay("chat_parse"):
        await async_client.chat.completions.parse(
            model=CHAT_MODEL,
            messages=[{"role": "user", "content": "Alice and Bob go to a science fair on Friday."}],
            response_format=CalendarEvent,
        )
    assert only_span().attributes[SpanAttributes.LLM_TOKEN_COUNT_TOTAL] == 110  # type: ignore[index]


def test_with_raw_response_is_traced_and_parses_once(
    client: openai.OpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with replay("chat_basic"):
        raw = client.chat.completions.with_raw_response.create(
            model=CHAT_MODEL,
            messages=BASIC_MESSAGES,
            temperature=0.2,
            max_tokens=50,
            user="end-user-hash",
        )
    assert raw.status_code == 200
    assert raw.parse() is raw.parse()  # the SDK's cache, shared with the instrumentation
    assert raw.parse().choices[0].message.content == CHAT_TEXT
    assert_basic_chat_span(only_span())


async def test_async_with_raw_response_is_traced(
    async_client: openai.AsyncOpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with replay("chat_basic"):
        raw = await async_client.chat.completions.with_raw_response.create(
            model=CHAT_MODEL,
            messages=BASIC_MESSAGES,
            temperature=0.2,
            max_tokens=50,
            user="end-user-hash",
        )
    assert raw.parse().choices[0].message.content == CHAT_TEXT
    assert_basic_chat_span(only_span())


def test_with_streaming_response_span_ends_when_parsed(
    client: openai.OpenAI,
    instrumented: OpenAIInstrumentor,
    finished: Callable[[], list[ReadableSpan]],
) -> None:
    with replay("chat_basic"):
        manager = client.chat.completions.with_streaming_response.create(
            model=CHAT_MODEL,
            messages=BASIC_MESSAGES,
            temperature=0.2,
            max_tokens=50,
            user="end-user-hash",
        )
        with manager as response:
            assert response.headers["content-type"] == "application/json"
            assert finished() == []  # the body is not read yet
            completion = response.parse()
            assert len(finished()) == 1
    assert completion.choices[0].message.content == CHAT_TEXT
    assert_basic_chat_span(finished()[0])


async def test_async_with_streaming_response_span_ends_when_parsed(
    async_client: openai.AsyncOpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with replay("chat_basic"):
        manager = async_client.chat.completions.with_streaming_response.create(
            model=CHAT_MODEL,
            messages=BASIC_MESSAGES,
            temperature=0.2,
            max_tokens=50,
            user="end-user-hash",
        )
        async with manager as response:
            completion = await response.parse()
    assert completion.choices[0].message.content == CHAT_TEXT
    assert_basic_chat_span(only_span())


def test_with_streaming_response_closed_unread_ends_the_span_without_output(
    client: openai.OpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with (
        replay("chat_basic", match_body=False),
        client.chat.completions.with_streaming_response.create(
            model=CHAT_MODEL, messages=BASIC_MESSAGES
        ) as response,
    ):
        assert json.loads(response.read())["id"] == "chatcmpl-AQ1"
    span = only_span()
    assert span.status.status_code is StatusCode.OK
    assert SpanAttributes.OUTPUT_VALUE not in (span.attributes or {})


def test_azure_client_records_azure_provider_and_deployment(
    azure_client: openai.AzureOpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with replay("azure_chat"):
        azure_client.chat.completions.create(
            model="gpt-4o-deploy", messages=BASIC_MESSAGES, temperature=0.2
        )
    span = only_span()
    assert_basic_chat_span(span, provider="azure")
    attributes = dict(span.attributes or {})
    assert attributes[SpanAttributes.LLM_REQUEST_MODEL_NAME] == "gpt-4o-deploy"
    assert attributes[SpanAttributes.LLM_MODEL_NAME] == "gpt-4o-2024-11-20"


async def test_async_azure_client_is_traced(
    async_azure_client: openai.AsyncAzureOpenAI,
    instrumented: OpenAIInstrumentor,
    only_span: OnlySpan,
) -> None:
    with replay("azure_chat"):
        await async_azure_client.chat.completions.create(
            model="gpt-4o-deploy", messages=BASIC_MESSAGES, temperature=0.2
        )
    assert_basic_chat_span(only_span(), provider="azure")


def test_response_of_unexpected_shape_still_reaches_the_app_and_ends_the_span(
    client: openai.OpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with replay("chat_unexpected_shape"):
        completion = client.chat.completions.create(model=CHAT_MODEL, messages=BASIC_MESSAGES)
    assert completion.id == "chatcmpl-odd"
    span = only_span()
    assert span.status.status_code is StatusCode.OK
    assert (span.attributes or {})[SpanAttributes.LLM_REQUEST_MODEL_NAME] == CHAT_MODEL
    assert SpanAttributes.LLM_TOKEN_COUNT_TOTAL not in (span.attributes or {})


def test_session_and_user_ids_from_the_context_are_on_the_span(
    client: openai.OpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with replay("chat_basic"), using_session("session-42"), using_user("user-7"):
        basic_chat(client)
    attributes = dict(only_span().attributes or {})
    assert attributes[SpanAttributes.SESSION_ID] == "session-42"
    assert attributes[SpanAttributes.USER_ID] == "user-7"
