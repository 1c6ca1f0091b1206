"""The attribute shapes OpenInference's Mistral users rely on (issue #18), through the real SDK.

OpenInference's own ``mistralai`` suite is the yardstick: each test pins one shape its users'
dashboards, evals or queries read (span kind, provider, messages, tool calls, token counts,
invocation parameters, errors, the ``hide_*`` options and their redaction marker), so parity does
not drift. Where convotel differs on purpose, the README's "Differences from OpenInference" says
so and why.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from mistral_cassettes import cassette, replay
from mistral_parity_calls import (
    IMAGE_URL,
    TOOL_HISTORY,
    TWO_ANSWERS,
    chat_empty_reply,
    chat_image_url,
    chat_tool_history,
    chat_two_choices,
)
from mistral_spans import AGENT_ID, CHAT_MODEL, HELLO, WEATHER_QUESTION, WEATHER_TOOL
from mistralai.client import Mistral, errors
from openinference.instrumentation import using_attributes as openinference_using_attributes
from openinference.semconv.trace import (
    ImageAttributes,
    MessageAttributes,
    MessageContentAttributes,
    OpenInferenceLLMProviderValues,
    OpenInferenceLLMSystemValues,
    OpenInferenceMimeTypeValues,
    OpenInferenceSpanKindValues,
    SpanAttributes,
    ToolAttributes,
    ToolCallAttributes,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv._incubating.attributes.gen_ai_attributes import GEN_AI_AGENT_ID
from opentelemetry.trace import StatusCode

from convotel import REDACTED_VALUE, TraceConfig
from convotel.mistralai import MistralAIInstrumentor

Call = Callable[[Mistral], object]
Instrument = Callable[[TraceConfig], None]

IN = SpanAttributes.LLM_INPUT_MESSAGES
OUT = SpanAttributes.LLM_OUTPUT_MESSAGES
ROLE = MessageAttributes.MESSAGE_ROLE
CONTENT = MessageAttributes.MESSAGE_CONTENT
NAME = MessageAttributes.MESSAGE_NAME
TOOL_CALL_ID = MessageAttributes.MESSAGE_TOOL_CALL_ID
CALL_0 = f"{MessageAttributes.MESSAGE_TOOL_CALLS}.0."
CALL_NAME = CALL_0 + ToolCallAttributes.TOOL_CALL_FUNCTION_NAME
CALL_ARGUMENTS = CALL_0 + ToolCallAttributes.TOOL_CALL_FUNCTION_ARGUMENTS_JSON
CALL_ID = CALL_0 + ToolCallAttributes.TOOL_CALL_ID
PARTS = MessageAttributes.MESSAGE_CONTENTS
PART_TYPE = MessageContentAttributes.MESSAGE_CONTENT_TYPE
PART_TEXT = MessageContentAttributes.MESSAGE_CONTENT_TEXT
PART_IMAGE = f"{MessageContentAttributes.MESSAGE_CONTENT_IMAGE}.{ImageAttributes.IMAGE_URL}"
TOOL_SCHEMA_0 = f"{SpanAttributes.LLM_TOOLS}.0.{ToolAttributes.TOOL_JSON_SCHEMA}"
PARAMETERS = SpanAttributes.LLM_INVOCATION_PARAMETERS
INPUT_VALUE, INPUT_MIME = SpanAttributes.INPUT_VALUE, SpanAttributes.INPUT_MIME_TYPE
OUTPUT_VALUE, OUTPUT_MIME = SpanAttributes.OUTPUT_VALUE, SpanAttributes.OUTPUT_MIME_TYPE
JSON_MIME = OpenInferenceMimeTypeValues.JSON.value
TEXT_MIME = OpenInferenceMimeTypeValues.TEXT.value
CALL_AS_OUTPUT = [{"id": "D681PevKs", "name": "get_weather", "arguments": '{"city": "Paris"}'}]
STREAMED_CALL_AS_OUTPUT = [
    {"id": "Xk3Lm9QzR", "name": "get_weather", "arguments": '{"city": "Paris"}'}
]


@pytest.fixture
def instrument(tracer_provider: TracerProvider) -> Iterator[Instrument]:
    """Instruments with a given ``TraceConfig`` (uninstrumented after the test)."""
    instrumentors: list[MistralAIInstrumentor] = []

    def instrument(config: TraceConfig) -> None:
        instrumentor = MistralAIInstrumentor()
        instrumentor.instrument(tracer_provider=tracer_provider, config=config)
        instrumentors.append(instrumentor)

    yield instrument
    for instrumentor in instrumentors:
        instrumentor.uninstrument()


Traced = Callable[..., dict[str, Any]]


@pytest.fixture
def traced(instrument: Instrument, span_exporter: InMemorySpanExporter) -> Traced:
    """Instruments (with ``config``), replays ``call`` against a cassette, returns the attributes
    of the one span it made."""

    def traced(name: str, call: Call, config: TraceConfig | None = None) -> dict[str, Any]:
        instrument(config or TraceConfig())
        run(name, call)
        return attributes_of(span_exporter)

    return traced


def spans_of(exporter: InMemorySpanExporter) -> list[dict[str, Any]]:
    return [dict(span.attributes or {}) for span in exporter.get_finished_spans()]


def only_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    spans = exporter.get_finished_spans()
    assert len(spans) == 1, [span.name for span in spans]
    return spans[0]


def attributes_of(exporter: InMemorySpanExporter) -> dict[str, Any]:
    return dict(only_span(exporter).attributes or {})


def run(name: str, call: Call) -> None:
    """``call`` against the cassette ``name`` (``record_mode="none"``: a missed request fails)."""
    with replay.use_cassette(cassette(name)):
        call(Mistral(api_key="test-key"))


# The calls the older cassettes were recorded with (tests/mistralai/generate_cassettes.py).


def chat_complete(client: Mistral) -> None:
    client.chat.complete(model=CHAT_MODEL, messages=HELLO, temperature=0.2, max_tokens=64)


def chat_complete_tools(client: Mistral) -> None:
    client.chat.complete(
        model=CHAT_MODEL, messages=WEATHER_QUESTION, tools=[WEATHER_TOOL], tool_choice="auto"
    )


def fim_complete(client: Mistral) -> None:
    client.fim.complete(model="codestral-latest", prompt="def add(a, b):\n")


def conversations_start(client: Mistral) -> None:
    client.beta.conversations.start(
        inputs="Who wrote Les Misérables?", model="mistral-medium-latest"
    )


def embeddings_create(client: Mistral) -> None:
    client.embeddings.create(model="mistral-embed", inputs=["Bonjour", "Hello"])


# --- the LLM span every OpenInference query starts from ------------------------------------------


def test_chat_span_carries_what_openinference_queries_read(
    instrument: Instrument, span_exporter: InMemorySpanExporter
) -> None:
    instrument(TraceConfig())
    with openinference_using_attributes(  # OpenInference's own context managers feed our spans
        session_id="s-oi",
        user_id="u-oi",
        metadata={"plan": "pro"},
        tags=["parity"],
        prompt_template="Say hello in {language}.",
        prompt_template_version="v1",
        prompt_template_variables={"language": "French"},
    ):
        run("chat_complete", chat_complete)

    span = only_span(span_exporter)
    found = dict(span.attributes or {})
    assert span.status.status_code is StatusCode.OK
    assert found[SpanAttributes.OPENINFERENCE_SPAN_KIND] == OpenInferenceSpanKindValues.LLM.value
    assert found[SpanAttributes.LLM_PROVIDER] == OpenInferenceLLMProviderValues.MISTRALAI.value
    assert found[SpanAttributes.LLM_SYSTEM] == OpenInferenceLLMSystemValues.MISTRALAI.value
    assert found[SpanAttributes.LLM_MODEL_NAME] == CHAT_MODEL
    assert found[f"{IN}.0.{ROLE}"] == "user"
    assert found[f"{IN}.0.{CONTENT}"] == HELLO[0]["content"]
    assert found[f"{OUT}.0.{ROLE}"] == "assistant"
    assert found[f"{OUT}.0.{CONTENT}"] == "Bonjour !"
    assert found[SpanAttributes.LLM_FINISH_REASON] == "stop"
    counts = ("prompt", "completion", "total")
    assert [found[f"llm.token_count.{count}"] for count in counts] == [9, 4, 13]
    assert json.loads(found[PARAMETERS]) == {
        "model": CHAT_MODEL,
        "temperature": 0.2,
        "max_tokens": 64,
    }
    assert found[SpanAttributes.SESSION_ID] == "s-oi"
    assert found[SpanAttributes.USER_ID] == "u-oi"
    assert json.loads(found[SpanAttributes.METADATA]) == {"plan": "pro"}
    assert list(found[SpanAttributes.TAG_TAGS]) == ["parity"]
    assert found[SpanAttributes.LLM_PROMPT_TEMPLATE] == "Say hello in {language}."
    assert found[SpanAttributes.LLM_PROMPT_TEMPLATE_VERSION] == "v1"
    variables = json.loads(found[SpanAttributes.LLM_PROMPT_TEMPLATE_VARIABLES])
    assert variables == {"language": "French"}


# --- invocation parameters: model, agent_id, stream ----------------------------------------------


def _chat_stream(client: Mistral) -> None:
    with client.chat.stream(model=CHAT_MODEL, messages=HELLO) as stream:
        for _ in stream:
            pass


#: Every model call with a ``model``: cassette, call, the parameters' attribute and model.
MODEL_CALLS = {
    "chat": ("chat_complete", chat_complete, PARAMETERS, CHAT_MODEL),
    "chat stream": ("chat_stream", _chat_stream, PARAMETERS, CHAT_MODEL),
    "fim": ("fim_complete", fim_complete, PARAMETERS, "codestral-latest"),
    "conversation": (
        "conversations_start",
        conversations_start,
        PARAMETERS,
        "mistral-medium-latest",
    ),
    "embeddings": (
        "embeddings_create",
        embeddings_create,
        SpanAttributes.EMBEDDING_INVOCATION_PARAMETERS,
        "mistral-embed",
    ),
}


@pytest.mark.parametrize("call", MODEL_CALLS)
def test_model_is_an_invocation_parameter(call: str, traced: Traced) -> None:
    name, make_call, key, model = MODEL_CALLS[call]
    assert json.loads(traced(name, make_call)[key])["model"] == model


def test_agent_id_is_an_invocation_parameter(traced: Traced) -> None:
    found = traced(
        "agents_complete", lambda client: client.agents.complete(agent_id=AGENT_ID, messages=HELLO)
    )
    assert json.loads(found[PARAMETERS]) == {"agent_id": AGENT_ID}
    assert found[GEN_AI_AGENT_ID] == AGENT_ID
    assert found[SpanAttributes.LLM_MODEL_NAME] == "mistral-medium-2508"  # the agent's model


def test_stream_the_caller_sets_is_an_invocation_parameter(traced: Traced) -> None:
    found = traced(
        "chat_complete", lambda c: c.chat.complete(model=CHAT_MODEL, messages=HELLO, stream=False)
    )
    assert json.loads(found[PARAMETERS]) == {
        "model": CHAT_MODEL,
        "stream": False,
    }


# --- messages: tool calls, tool results, content parts, several choices ---------------------------


def test_tool_call_reply_keeps_its_calls_and_the_tool_definitions(traced: Traced) -> None:
    found = traced("chat_complete_tools", chat_complete_tools)
    assert found[f"{OUT}.0.{ROLE}"] == "assistant"
    assert found[f"{OUT}.0.{CALL_NAME}"] == "get_weather"
    assert json.loads(found[f"{OUT}.0.{CALL_ARGUMENTS}"]) == {"city": "Paris"}
    assert found[f"{OUT}.0.{CALL_ID}"] == "D681PevKs"
    assert f"{OUT}.0.{CONTENT}" not in found  # the reply's "" is no content
    assert found[SpanAttributes.LLM_FINISH_REASON] == "tool_calls"
    assert json.loads(found[TOOL_SCHEMA_0]) == WEATHER_TOOL
    assert json.loads(found[PARAMETERS]) == {"model": CHAT_MODEL, "tool_choice": "auto"}


def test_tool_loop_history_keeps_the_call_and_the_named_result(traced: Traced) -> None:
    found = traced("chat_tool_history", chat_tool_history)
    assert found[f"{IN}.1.{ROLE}"] == "assistant"
    assert found[f"{IN}.1.{CALL_NAME}"] == "get_weather"
    assert found[f"{IN}.1.{CALL_ARGUMENTS}"] == '{"city": "Paris"}'
    assert found[f"{IN}.2.{ROLE}"] == "tool"
    assert found[f"{IN}.2.{NAME}"] == "get_weather"
    assert found[f"{IN}.2.{TOOL_CALL_ID}"] == "D681PevKs"
    assert found[f"{IN}.2.{CONTENT}"] == TOOL_HISTORY[2]["content"]
    assert found[INPUT_VALUE] == WEATHER_QUESTION[0]["content"]  # the question, not the result


def test_image_given_as_a_plain_url_is_an_image_part(traced: Traced) -> None:
    found = traced("chat_image_url", chat_image_url)
    assert found[f"{IN}.0.{PARTS}.0.{PART_TYPE}"] == "text"
    assert found[f"{IN}.0.{PARTS}.0.{PART_TEXT}"] == "Which monument is this?"
    assert found[f"{IN}.0.{PARTS}.1.{PART_TYPE}"] == "image"
    assert found[f"{IN}.0.{PARTS}.1.{PART_IMAGE}"] == IMAGE_URL
    assert found[INPUT_VALUE] == "Which monument is this?"


def test_hidden_input_images_leave_no_url(traced: Traced) -> None:
    found = traced("chat_image_url", chat_image_url, TraceConfig(hide_input_images=True))
    assert found[f"{IN}.0.{PARTS}.1.{PART_TYPE}"] == "image"
    assert IMAGE_URL not in repr(found)


def test_each_choice_is_an_output_message_numbered_by_its_index(traced: Traced) -> None:
    found = traced("chat_two_choices", chat_two_choices)
    assert [found[f"{OUT}.{index}.{CONTENT}"] for index in (0, 1)] == list(TWO_ANSWERS)
    assert found[SpanAttributes.LLM_FINISH_REASON] == "stop"  # the first choice's
    assert found[OUTPUT_VALUE] == TWO_ANSWERS[0]


# --- streams ----------------------------------------------------------------------------------


async def _chat_stream_async(client: Mistral) -> None:
    stream = await client.chat.stream_async(model=CHAT_MODEL, messages=HELLO)
    async for _ in stream:
        pass


async def test_streamed_reply_has_the_shape_of_a_complete_one(
    instrument: Instrument, span_exporter: InMemorySpanExporter
) -> None:
    instrument(TraceConfig())
    with replay.use_cassette(cassette("chat_stream")):
        _chat_stream(Mistral(api_key="test-key"))
    with replay.use_cassette(cassette("chat_stream")):
        await _chat_stream_async(Mistral(api_key="test-key"))
    for found in spans_of(span_exporter):
        assert found[f"{OUT}.0.{ROLE}"] == "assistant"
        assert found[f"{OUT}.0.{CONTENT}"] == "Bonjour !"
        assert found[OUTPUT_VALUE] == "Bonjour !"
        assert found[SpanAttributes.LLM_FINISH_REASON] == "stop"
        assert found[SpanAttributes.LLM_MODEL_NAME] == CHAT_MODEL
        assert found[SpanAttributes.LLM_TOKEN_COUNT_TOTAL] == 13
        assert json.loads(found[PARAMETERS]) == {"model": CHAT_MODEL}
    assert len(span_exporter.get_finished_spans()) == 2


def _chat_stream_tools(client: Mistral) -> None:
    for _ in client.chat.stream(model=CHAT_MODEL, messages=WEATHER_QUESTION, tools=[WEATHER_TOOL]):
        pass


def test_streamed_tool_call_is_assembled_with_its_usage(traced: Traced) -> None:
    found = traced("chat_stream_tools", _chat_stream_tools)
    assert found[f"{OUT}.0.{CALL_NAME}"] == "get_weather"
    assert json.loads(found[f"{OUT}.0.{CALL_ARGUMENTS}"]) == {"city": "Paris"}
    assert found[SpanAttributes.LLM_FINISH_REASON] == "tool_calls"
    assert found[SpanAttributes.LLM_TOKEN_COUNT_PROMPT] == 88
    assert json.loads(found[OUTPUT_VALUE]) == STREAMED_CALL_AS_OUTPUT


# --- output.value on every reply, and the redaction marker when hidden ----------------------------

#: Replies OpenInference writes an ``output.value`` for, and what convotel writes.
REPLY_SHAPES: dict[str, tuple[str, Call, str]] = {
    "text": ("chat_complete", chat_complete, "Bonjour !"),
    "tool calls only": ("chat_complete_tools", chat_complete_tools, json.dumps(CALL_AS_OUTPUT)),
    "streamed tool call": (
        "chat_stream_tools",
        _chat_stream_tools,
        json.dumps(STREAMED_CALL_AS_OUTPUT),
    ),
    "empty text": ("chat_empty_reply", chat_empty_reply, ""),
    "embeddings": ("embeddings_create", embeddings_create, "2 vectors of 3 dimensions"),
}


@pytest.mark.parametrize("shape", REPLY_SHAPES)
def test_every_reply_has_an_output_value(shape: str, traced: Traced) -> None:
    name, call, expected = REPLY_SHAPES[shape]
    assert traced(name, call)[OUTPUT_VALUE] == expected


@pytest.mark.parametrize("shape", REPLY_SHAPES)
def test_hidden_outputs_leave_the_redaction_marker_for_every_reply(
    shape: str, traced: Traced
) -> None:
    name, call, _ = REPLY_SHAPES[shape]
    found = traced(name, call, TraceConfig(hide_outputs=True))
    assert found[OUTPUT_VALUE] == REDACTED_VALUE
    assert OUTPUT_MIME not in found
    assert not [key for key in found if key.startswith(OUT)]


# --- the other hide_* options, as OpenInference applies them -------------------------------------

ABSENT = object()

#: Per option: what the tool-call reply's span holds (``ABSENT``: not recorded).
HIDING: dict[str, tuple[TraceConfig, dict[str, object]]] = {
    "hide_inputs": (
        TraceConfig(hide_inputs=True),
        {
            INPUT_VALUE: REDACTED_VALUE,
            INPUT_MIME: ABSENT,
            f"{IN}.0.{ROLE}": ABSENT,
            TOOL_SCHEMA_0: ABSENT,
            PARAMETERS: json.dumps({"model": CHAT_MODEL, "tool_choice": "auto"}),
            f"{OUT}.0.{CALL_NAME}": "get_weather",
        },
    ),
    "hide_input_messages": (
        TraceConfig(hide_input_messages=True),
        {f"{IN}.0.{ROLE}": ABSENT, INPUT_VALUE: WEATHER_QUESTION[0]["content"]},
    ),
    "hide_output_messages": (
        TraceConfig(hide_output_messages=True),
        {f"{OUT}.0.{ROLE}": ABSENT, OUTPUT_VALUE: json.dumps(CALL_AS_OUTPUT)},
    ),
    "hide_input_text": (
        TraceConfig(hide_input_text=True),
        {f"{IN}.0.{CONTENT}": REDACTED_VALUE, f"{IN}.0.{ROLE}": "user"},
    ),
    "hide_output_text": (
        TraceConfig(hide_output_text=True),
        {f"{OUT}.0.{CALL_NAME}": "get_weather", f"{OUT}.0.{ROLE}": "assistant"},
    ),
    "hide_llm_invocation_parameters": (
        TraceConfig(hide_llm_invocation_parameters=True),
        {PARAMETERS: ABSENT, f"{IN}.0.{ROLE}": "user"},
    ),
}


@pytest.mark.parametrize("option", HIDING)
def test_hide_options_act_as_in_openinference(option: str, traced: Traced) -> None:
    config, expected = HIDING[option]
    found = traced("chat_complete_tools", chat_complete_tools, config)
    assert {key: found.get(key, ABSENT) for key in expected} == expected


def test_hidden_output_text_redacts_the_reply_text(traced: Traced) -> None:
    found = traced("chat_complete", chat_complete, TraceConfig(hide_output_text=True))
    assert found[f"{OUT}.0.{CONTENT}"] == REDACTED_VALUE
    assert found[f"{OUT}.0.{ROLE}"] == "assistant"


# --- errors -----------------------------------------------------------------------------------


def test_http_error_span_keeps_the_request_and_records_the_exception(
    instrument: Instrument, span_exporter: InMemorySpanExporter
) -> None:
    instrument(TraceConfig())
    with pytest.raises(errors.SDKError), replay.use_cassette(cassette("error_401_unauthorized")):
        Mistral(api_key="test-key").chat.complete(model=CHAT_MODEL, messages=HELLO)

    span = only_span(span_exporter)
    found = dict(span.attributes or {})
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description is not None
    assert span.status.description.startswith("SDKError: ")
    assert "Unauthorized" in span.status.description
    assert [event.name for event in span.events] == ["exception"]
    assert found[SpanAttributes.OPENINFERENCE_SPAN_KIND] == OpenInferenceSpanKindValues.LLM.value
    assert found[f"{IN}.0.{CONTENT}"] == HELLO[0]["content"]
    assert json.loads(found[PARAMETERS]) == {"model": CHAT_MODEL}
    assert OUTPUT_VALUE not in found
