"""The attribute shapes OpenInference users rely on (issue #18), through the real SDK.

OpenInference's own OpenAI suite is the yardstick: each test pins one shape its users' dashboards,
evals or queries read, so parity does not drift. Where convotel differs on purpose, the README's
"Differences from OpenInference" says so and why.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import openai
import pytest
from openai_cassettes import Instrument, replay
from openai_wire import (
    BASIC_MESSAGES,
    CHAT_MODEL,
    FUNCTION_CALL,
    FUNCTION_CALL_FOLLOW_UP,
    IMAGE_ONLY_MESSAGES,
    IMAGE_URL,
    STREAM_MESSAGES,
    TOOL_CALL_ONLY_MESSAGES,
    WEATHER_FUNCTION,
    WEATHER_QUESTION,
    WEATHER_TOOL,
)
from openinference.semconv.trace import (
    ImageAttributes,
    MessageAttributes,
    MessageContentAttributes,
    OpenInferenceLLMProviderValues,
    OpenInferenceMimeTypeValues,
    SpanAttributes,
)
from opentelemetry.sdk.trace import ReadableSpan

from convotel import REDACTED_VALUE, TraceConfig
from convotel.openai import OpenAIInstrumentor
from convotel.openai.extraction import provider_for_host

Finished = Callable[[], list[ReadableSpan]]
OnlySpan = Callable[[], ReadableSpan]
IN = SpanAttributes.LLM_INPUT_MESSAGES
OUT = SpanAttributes.LLM_OUTPUT_MESSAGES
ROLE = MessageAttributes.MESSAGE_ROLE
CONTENT = MessageAttributes.MESSAGE_CONTENT
NAME = MessageAttributes.MESSAGE_NAME
FUNCTION_NAME = MessageAttributes.MESSAGE_FUNCTION_CALL_NAME
FUNCTION_ARGUMENTS = MessageAttributes.MESSAGE_FUNCTION_CALL_ARGUMENTS_JSON
PART = f"{MessageAttributes.MESSAGE_CONTENTS}.0.{MessageContentAttributes.MESSAGE_CONTENT_TYPE}"
IMAGE = (
    f"{MessageAttributes.MESSAGE_CONTENTS}.0."
    f"{MessageContentAttributes.MESSAGE_CONTENT_IMAGE}.{ImageAttributes.IMAGE_URL}"
)
OUTPUT_VALUE = SpanAttributes.OUTPUT_VALUE
JSON_MIME = OpenInferenceMimeTypeValues.JSON.value
TEXT_MIME = OpenInferenceMimeTypeValues.TEXT.value
CALL_AS_OUTPUT = [{"name": "get_weather", "arguments": '{"city":"Paris"}'}]


def attributes_of(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


# --- 1. legacy function calling ------------------------------------------------------------------


def test_legacy_function_call_reply_and_history_keep_the_call(
    client: openai.OpenAI, instrumented: OpenAIInstrumentor, finished: Finished
) -> None:
    with replay("chat_function_call"):
        client.chat.completions.create(
            model=CHAT_MODEL, messages=[WEATHER_QUESTION], functions=[WEATHER_FUNCTION]
        )
        client.chat.completions.create(
            model=CHAT_MODEL, messages=FUNCTION_CALL_FOLLOW_UP, functions=[WEATHER_FUNCTION]
        )
    reply, follow_up = map(attributes_of, finished())

    assert reply[f"{OUT}.0.{ROLE}"] == "assistant"
    assert reply[f"{OUT}.0.{FUNCTION_NAME}"] == FUNCTION_CALL["name"]
    assert reply[f"{OUT}.0.{FUNCTION_ARGUMENTS}"] == FUNCTION_CALL["arguments"]
    assert reply[SpanAttributes.LLM_FINISH_REASON] == "function_call"
    assert json.loads(reply[OUTPUT_VALUE]) == CALL_AS_OUTPUT
    assert reply[SpanAttributes.OUTPUT_MIME_TYPE] == JSON_MIME

    assert follow_up[f"{IN}.1.{ROLE}"] == "assistant"
    assert follow_up[f"{IN}.1.{FUNCTION_NAME}"] == FUNCTION_CALL["name"]
    assert follow_up[f"{IN}.1.{FUNCTION_ARGUMENTS}"] == FUNCTION_CALL["arguments"]
    assert follow_up[f"{IN}.2.{ROLE}"] == "function"
    assert follow_up[f"{IN}.2.{NAME}"] == "get_weather"
    assert follow_up[f"{IN}.2.{CONTENT}"] == "18°C, cloudy"
    assert follow_up[SpanAttributes.INPUT_VALUE] == WEATHER_QUESTION["content"]


def test_streamed_legacy_function_call_is_assembled_from_its_deltas(
    client: openai.OpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with replay("chat_function_call_stream"):
        stream = client.chat.completions.create(
            model=CHAT_MODEL, messages=[WEATHER_QUESTION], functions=[WEATHER_FUNCTION], stream=True
        )
        assert len([chunk for chunk in stream if chunk.choices]) == 5
    attributes = attributes_of(only_span())
    assert attributes[f"{OUT}.0.{FUNCTION_NAME}"] == "get_weather"
    assert attributes[f"{OUT}.0.{FUNCTION_ARGUMENTS}"] == '{"city":"Paris"}'
    assert json.loads(attributes[OUTPUT_VALUE]) == CALL_AS_OUTPUT
    assert attributes[SpanAttributes.LLM_TOKEN_COUNT_TOTAL] == 22  # the usage convotel asked for


# --- 2. and 4. output.value of every reply, and the marker when it is hidden ----------------------


def _function_call(client: openai.OpenAI) -> object:
    return client.chat.completions.create(
        model=CHAT_MODEL, messages=[WEATHER_QUESTION], functions=[WEATHER_FUNCTION]
    )


def _function_call_stream(client: openai.OpenAI) -> object:
    return list(
        client.chat.completions.create(
            model=CHAT_MODEL, messages=[WEATHER_QUESTION], functions=[WEATHER_FUNCTION], stream=True
        )
    )


def _empty_reply(client: openai.OpenAI) -> object:
    return client.chat.completions.create(
        model="o4-mini", messages=STREAM_MESSAGES, max_completion_tokens=64
    )


def _reasoning_only(client: openai.OpenAI) -> object:
    return client.responses.create(
        model="o4-mini", input="Capital of France?", max_output_tokens=16
    )


def _basic_chat(client: openai.OpenAI) -> object:
    return client.chat.completions.create(
        model=CHAT_MODEL,
        messages=BASIC_MESSAGES,
        temperature=0.2,
        max_tokens=50,
        user="end-user-hash",
    )


def _embeddings(client: openai.OpenAI) -> object:
    return client.embeddings.create(model="text-embedding-3-small", input=["cat", "dog"])


#: Replies OpenInference writes an ``output.value`` for, and what convotel writes.
REPLY_SHAPES = {
    "function call only": ("chat_function_call", _function_call, json.dumps(CALL_AS_OUTPUT)),
    "streamed function call": (
        "chat_function_call_stream",
        _function_call_stream,
        json.dumps(CALL_AS_OUTPUT),
    ),
    "empty text (reasoning used every token)": ("chat_empty_reply", _empty_reply, ""),
    "Responses API, reasoning items only": ("responses_reasoning_only", _reasoning_only, ""),
    "embeddings": ("embeddings", _embeddings, "2 vectors of 3 dimensions"),
}


@pytest.mark.parametrize("shape", REPLY_SHAPES)
def test_every_reply_has_an_output_value(
    shape: str, client: openai.OpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    cassette, call, expected = REPLY_SHAPES[shape]
    with replay(cassette):
        call(client)
    attributes = attributes_of(only_span())
    assert attributes[OUTPUT_VALUE] == expected


@pytest.mark.parametrize("shape", REPLY_SHAPES)
def test_hidden_outputs_leave_the_redaction_marker_for_every_reply(
    shape: str, client: openai.OpenAI, instrument: Instrument, only_span: OnlySpan
) -> None:
    instrument(TraceConfig(hide_outputs=True))
    cassette, call, _ = REPLY_SHAPES[shape]
    with replay(cassette):
        call(client)
    attributes = attributes_of(only_span())
    assert attributes[OUTPUT_VALUE] == REDACTED_VALUE
    assert not any(key.startswith(OUT) for key in attributes)


def test_embedding_output_value_says_what_came_back_without_the_vectors(
    client: openai.OpenAI, instrument: Instrument, only_span: OnlySpan
) -> None:
    instrument(TraceConfig(hide_embedding_vectors=True))
    with replay("embeddings_float"):
        client.embeddings.create(
            model="text-embedding-3-small",
            input="cat and dog",
            encoding_format="float",
            dimensions=3,
        )
    attributes = attributes_of(only_span())
    assert attributes[OUTPUT_VALUE] == "2 vectors of 3 dimensions"
    assert attributes[SpanAttributes.OUTPUT_MIME_TYPE] == TEXT_MIME


# --- 3. and 5. images given as a plain URL, requests without text ---------------------------------


def test_image_given_as_a_plain_url_string_keeps_its_url(
    client: openai.OpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with replay("chat_image_only"):
        client.chat.completions.create(model=CHAT_MODEL, messages=IMAGE_ONLY_MESSAGES)
    attributes = attributes_of(only_span())
    assert attributes[f"{IN}.0.{PART}"] == "image"
    assert attributes[f"{IN}.0.{IMAGE}"] == IMAGE_URL
    # no text anywhere: input.value says what was sent, never the image itself
    assert json.loads(attributes[SpanAttributes.INPUT_VALUE]) == [{"type": "image"}]
    assert attributes[SpanAttributes.INPUT_MIME_TYPE] == JSON_MIME


def test_hidden_input_images_stay_out_of_input_value(
    client: openai.OpenAI, instrument: Instrument, only_span: OnlySpan
) -> None:
    instrument(TraceConfig(hide_input_images=True))
    with replay("chat_image_only"):
        client.chat.completions.create(model=CHAT_MODEL, messages=IMAGE_ONLY_MESSAGES)
    attributes = attributes_of(only_span())
    assert f"{IN}.0.{IMAGE}" not in attributes
    assert IMAGE_URL not in repr(attributes)


def test_request_ending_with_a_tool_call_only_message_has_its_calls_as_input_value(
    client: openai.OpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with replay("chat_tool_call_last"):
        client.chat.completions.create(
            model=CHAT_MODEL, messages=TOOL_CALL_ONLY_MESSAGES, tools=[WEATHER_TOOL]
        )
    attributes = attributes_of(only_span())
    assert json.loads(attributes[SpanAttributes.INPUT_VALUE]) == [
        {"id": "call_paris", "name": "get_weather", "arguments": '{"city":"Paris"}'}
    ]
    assert attributes[SpanAttributes.INPUT_MIME_TYPE] == JSON_MIME


# --- 6. conventions decided: model parameter, provider by host, Responses numbering --------------


def test_model_is_an_invocation_parameter(
    client: openai.OpenAI, instrumented: OpenAIInstrumentor, finished: Finished
) -> None:
    with replay("chat_basic"):
        _basic_chat(client)
    with replay("embeddings"):
        _embeddings(client)
    chat, embedding = map(attributes_of, finished())
    assert json.loads(chat[SpanAttributes.LLM_INVOCATION_PARAMETERS])["model"] == CHAT_MODEL
    embedding_parameters = json.loads(embedding[SpanAttributes.EMBEDDING_INVOCATION_PARAMETERS])
    assert embedding_parameters["model"] == "text-embedding-3-small"


def test_plain_openai_client_at_an_azure_endpoint_is_provider_azure(
    instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    from openai_wire import RECIPES_BY_NAME, make_client

    recipe = RECIPES_BY_NAME["azure_v1_chat"]
    client = make_client(recipe)
    assert type(client) is openai.OpenAI
    with replay(recipe.name):
        recipe.call(client)
    attributes = attributes_of(only_span())
    assert attributes[SpanAttributes.LLM_PROVIDER] == OpenInferenceLLMProviderValues.AZURE.value
    assert attributes[SpanAttributes.LLM_SYSTEM] == "openai"


@pytest.mark.parametrize(
    ("host", "provider"),
    [
        ("api.openai.com", OpenInferenceLLMProviderValues.OPENAI),
        ("convotel-test.openai.azure.com", OpenInferenceLLMProviderValues.AZURE),
        ("CONVOTEL.OPENAI.AZURE.COM", OpenInferenceLLMProviderValues.AZURE),
        ("my-hub.services.ai.azure.com", OpenInferenceLLMProviderValues.AZURE),
        ("api.groq.com", OpenInferenceLLMProviderValues.GROQ),
        ("api.x.ai", OpenInferenceLLMProviderValues.XAI),
        ("generativelanguage.googleapis.com", OpenInferenceLLMProviderValues.GOOGLE),
        ("bedrock-runtime.us-east-1.amazonaws.com", OpenInferenceLLMProviderValues.AWS),
        # not a subdomain of a known host: the API the SDK speaks
        ("notopenai.azure.com", OpenInferenceLLMProviderValues.OPENAI),
        ("openai.azure.com.proxy.test", OpenInferenceLLMProviderValues.OPENAI),
        ("127.0.0.1", OpenInferenceLLMProviderValues.OPENAI),
        ("llm.compatible.test", OpenInferenceLLMProviderValues.OPENAI),
        (None, OpenInferenceLLMProviderValues.OPENAI),
    ],
)
def test_provider_is_told_by_the_api_host(
    host: str | None, provider: OpenInferenceLLMProviderValues
) -> None:
    assert provider_for_host(host) == provider.value


def test_a_client_whose_base_url_changes_is_recorded_by_its_new_host(
    client: openai.OpenAI, instrumented: OpenAIInstrumentor, finished: Finished
) -> None:
    from openai_wire import AZURE_V1_BASE_URL

    with replay("chat_basic"):
        _basic_chat(client)
    client.base_url = AZURE_V1_BASE_URL  # type: ignore[assignment]  # the SDK's setter
    with replay("azure_v1_chat"):
        client.chat.completions.create(model="gpt-4o-deploy", messages=BASIC_MESSAGES)
    providers = [attributes_of(span)[SpanAttributes.LLM_PROVIDER] for span in finished()]
    assert providers == ["openai", "azure"]


def test_responses_input_is_numbered_from_1_with_instructions_at_0(
    client: openai.OpenAI, instrumented: OpenAIInstrumentor, finished: Finished
) -> None:
    with replay("responses_basic"):
        client.responses.create(
            model=CHAT_MODEL,
            instructions="Answer in one sentence.",
            input="Capital of France?",
            temperature=1.0,
        )
    with replay("responses_reasoning_only"):
        _reasoning_only(client)
    with_instructions, without = map(attributes_of, finished())
    assert with_instructions[f"{IN}.0.{ROLE}"] == "system"
    assert with_instructions[f"{IN}.0.{CONTENT}"] == "Answer in one sentence."
    assert with_instructions[f"{IN}.1.{ROLE}"] == "user"
    assert with_instructions[f"{IN}.1.{CONTENT}"] == "Capital of France?"
    assert f"{IN}.0.{ROLE}" not in without
    assert without[f"{IN}.1.{CONTENT}"] == "Capital of France?"
    assert without[SpanAttributes.INPUT_VALUE] == "Capital of France?"
