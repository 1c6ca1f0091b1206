"""Spans of traced Mistral calls (non-streamed), replayed from cassettes through the real SDK."""

from __future__ import annotations

from mistral_cassettes import cassette, replay
from mistral_spans import (
    AGENT_ID,
    CHAT_MODEL,
    CONVERSATION_ID,
    HELLO,
    JSON_MODE_MESSAGES,
    WEATHER_QUESTION,
    WEATHER_TOOL,
    attributes,
    json_attribute,
    only_span,
)
from mistralai.client import Mistral
from openinference.semconv.trace import (
    EmbeddingAttributes,
    MessageAttributes,
    SpanAttributes,
    ToolAttributes,
    ToolCallAttributes,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv._incubating.attributes.gen_ai_attributes import (
    GEN_AI_AGENT_ID,
    GEN_AI_CONVERSATION_ID,
)
from opentelemetry.trace import StatusCode

from convotel import TraceConfig, using_session, using_user
from convotel.mistralai import MistralAIInstrumentor

INPUT_0 = f"{SpanAttributes.LLM_INPUT_MESSAGES}.0."
OUTPUT_0 = f"{SpanAttributes.LLM_OUTPUT_MESSAGES}.0."
TOOL_CALL_0 = f"{OUTPUT_0}{MessageAttributes.MESSAGE_TOOL_CALLS}.0."


def test_chat_complete_is_one_llm_span_in_the_session(
    client: Mistral, span_exporter: InMemorySpanExporter
) -> None:
    with using_session("s-42"), using_user("u-7"), replay.use_cassette(cassette("chat_complete")):
        response = client.chat.complete(
            model=CHAT_MODEL, messages=HELLO, temperature=0.2, max_tokens=64
        )

    assert response.choices[0].message is not None
    assert response.choices[0].message.content == "Bonjour !"
    span = only_span(span_exporter)
    found = attributes(span)
    assert span.name == "mistralai.chat.complete"
    assert span.status.status_code is StatusCode.OK
    assert found[SpanAttributes.OPENINFERENCE_SPAN_KIND] == "LLM"
    assert found[SpanAttributes.SESSION_ID] == "s-42"
    assert found[SpanAttributes.USER_ID] == "u-7"
    assert found[SpanAttributes.LLM_PROVIDER] == "mistralai"
    assert found[SpanAttributes.LLM_SYSTEM] == "mistralai"
    assert found[SpanAttributes.LLM_MODEL_NAME] == CHAT_MODEL
    assert found[INPUT_0 + MessageAttributes.MESSAGE_ROLE] == "user"
    assert found[INPUT_0 + MessageAttributes.MESSAGE_CONTENT] == "Say hello in French."
    assert found[OUTPUT_0 + MessageAttributes.MESSAGE_ROLE] == "assistant"
    assert found[OUTPUT_0 + MessageAttributes.MESSAGE_CONTENT] == "Bonjour !"
    assert found[SpanAttributes.LLM_FINISH_REASON] == "stop"
    assert found[SpanAttributes.LLM_TOKEN_COUNT_PROMPT] == 9
    assert found[SpanAttributes.LLM_TOKEN_COUNT_COMPLETION] == 4
    assert found[SpanAttributes.LLM_TOKEN_COUNT_TOTAL] == 13
    assert json_attribute(span, SpanAttributes.LLM_INVOCATION_PARAMETERS) == {
        "model": CHAT_MODEL,
        "temperature": 0.2,
        "max_tokens": 64,
    }
    assert found[SpanAttributes.INPUT_VALUE] == "Say hello in French."
    assert found[SpanAttributes.OUTPUT_VALUE] == "Bonjour !"


async def test_chat_complete_async_records_the_same_span(
    client: Mistral, span_exporter: InMemorySpanExporter
) -> None:
    with using_session("s-async"), replay.use_cassette(cassette("chat_complete")):
        await client.chat.complete_async(
            model=CHAT_MODEL, messages=HELLO, temperature=0.2, max_tokens=64
        )

    span = only_span(span_exporter)
    assert span.name == "mistralai.chat.complete"
    assert attributes(span)[SpanAttributes.SESSION_ID] == "s-async"
    assert attributes(span)[SpanAttributes.LLM_TOKEN_COUNT_TOTAL] == 13


def test_tool_call_and_tool_definitions_are_recorded(
    client: Mistral, span_exporter: InMemorySpanExporter
) -> None:
    with replay.use_cassette(cassette("chat_complete_tools")):
        client.chat.complete(
            model=CHAT_MODEL, messages=WEATHER_QUESTION, tools=[WEATHER_TOOL], tool_choice="auto"
        )

    span = only_span(span_exporter)
    found = attributes(span)
    assert found[TOOL_CALL_0 + ToolCallAttributes.TOOL_CALL_ID] == "D681PevKs"
    assert found[TOOL_CALL_0 + ToolCallAttributes.TOOL_CALL_FUNCTION_NAME] == "get_weather"
    assert (
        found[TOOL_CALL_0 + ToolCallAttributes.TOOL_CALL_FUNCTION_ARGUMENTS_JSON]
        == '{"city": "Paris"}'
    )
    assert OUTPUT_0 + MessageAttributes.MESSAGE_CONTENT not in found  # "" is not recorded
    assert found[SpanAttributes.LLM_FINISH_REASON] == "tool_calls"
    assert json_attribute(
        span, f"{SpanAttributes.LLM_TOOLS}.0.{ToolAttributes.TOOL_JSON_SCHEMA}"
    ) == (WEATHER_TOOL)
    assert json_attribute(span, SpanAttributes.LLM_INVOCATION_PARAMETERS) == {
        "model": CHAT_MODEL,
        "tool_choice": "auto",
    }


def test_json_mode_request_and_json_answer_are_recorded(
    client: Mistral, span_exporter: InMemorySpanExporter
) -> None:
    with replay.use_cassette(cassette("chat_complete_json_mode")):
        client.chat.complete(
            model=CHAT_MODEL, messages=JSON_MODE_MESSAGES, response_format={"type": "json_object"}
        )

    span = only_span(span_exporter)
    assert json_attribute(span, SpanAttributes.LLM_INVOCATION_PARAMETERS) == {
        "model": CHAT_MODEL,
        "response_format": {"type": "json_object"},
    }
    assert attributes(span)[INPUT_0 + MessageAttributes.MESSAGE_ROLE] == "system"
    content = attributes(span)[OUTPUT_0 + MessageAttributes.MESSAGE_CONTENT]
    assert content == '{"city": "Paris", "country": "France"}'


def test_fim_complete_records_prompt_and_suffix(
    client: Mistral, span_exporter: InMemorySpanExporter
) -> None:
    with replay.use_cassette(cassette("fim_complete")):
        client.fim.complete(
            model="codestral-latest", prompt="def add(a, b):\n", suffix="\nprint(add(1, 2))"
        )

    span = only_span(span_exporter)
    found = attributes(span)
    assert span.name == "mistralai.fim.complete"
    assert found[SpanAttributes.OPENINFERENCE_SPAN_KIND] == "LLM"
    assert list(found[SpanAttributes.LLM_PROMPTS]) == ["def add(a, b):\n"]
    assert found[SpanAttributes.INPUT_VALUE] == "def add(a, b):\n"
    parameters = json_attribute(span, SpanAttributes.LLM_INVOCATION_PARAMETERS)
    assert parameters["suffix"] == "\nprint(add(1, 2))"
    assert found[OUTPUT_0 + MessageAttributes.MESSAGE_CONTENT] == "    return a + b"
    assert found[SpanAttributes.LLM_TOKEN_COUNT_TOTAL] == 28


async def test_embeddings_create_is_an_embedding_span(
    client: Mistral, span_exporter: InMemorySpanExporter
) -> None:
    with using_session("s-emb"), replay.use_cassette(cassette("embeddings_create")):
        await client.embeddings.create_async(model="mistral-embed", inputs=["Bonjour", "Hello"])

    span = only_span(span_exporter)
    found = attributes(span)
    prefix = SpanAttributes.EMBEDDING_EMBEDDINGS
    assert span.name == "mistralai.embeddings.create"
    assert found[SpanAttributes.OPENINFERENCE_SPAN_KIND] == "EMBEDDING"
    assert found[SpanAttributes.SESSION_ID] == "s-emb"
    assert found[SpanAttributes.EMBEDDING_MODEL_NAME] == "mistral-embed"
    assert found[f"{prefix}.0.{EmbeddingAttributes.EMBEDDING_TEXT}"] == "Bonjour"
    assert found[f"{prefix}.1.{EmbeddingAttributes.EMBEDDING_TEXT}"] == "Hello"
    assert list(found[f"{prefix}.1.{EmbeddingAttributes.EMBEDDING_VECTOR}"]) == [
        -0.0241,
        0.0558,
        0.0127,
    ]
    assert found[SpanAttributes.LLM_TOKEN_COUNT_PROMPT] == 6
    assert json_attribute(span, SpanAttributes.EMBEDDING_INVOCATION_PARAMETERS) == {
        "model": "mistral-embed"
    }


def test_agents_complete_records_agent_and_answering_model(
    client: Mistral, span_exporter: InMemorySpanExporter
) -> None:
    with replay.use_cassette(cassette("agents_complete")):
        client.agents.complete(agent_id=AGENT_ID, messages=HELLO)

    span = only_span(span_exporter)
    found = attributes(span)
    assert span.name == "mistralai.agents.complete"
    assert found[SpanAttributes.OPENINFERENCE_SPAN_KIND] == "LLM"
    assert found[GEN_AI_AGENT_ID] == AGENT_ID
    assert found[SpanAttributes.LLM_MODEL_NAME] == "mistral-medium-2508"
    assert found[SpanAttributes.LLM_TOKEN_COUNT_TOTAL] == 45


def test_conversation_start_and_append_carry_the_conversation_id(
    client: Mistral, span_exporter: InMemorySpanExporter
) -> None:
    with using_session("s-conv"):
        with replay.use_cassette(cassette("conversations_start")):
            client.beta.conversations.start(
                inputs="Who wrote Les Misérables?", model="mistral-medium-latest", store=True
            )
        with replay.use_cassette(cassette("conversations_append")):
            client.beta.conversations.append(
                conversation_id=CONVERSATION_ID, inputs="When was it published?"
            )

    start, append = span_exporter.get_finished_spans()
    assert (start.name, append.name) == (
        "mistralai.conversations.start",
        "mistralai.conversations.append",
    )
    for span in (start, append):
        assert attributes(span)[GEN_AI_CONVERSATION_ID] == CONVERSATION_ID
        assert attributes(span)[SpanAttributes.SESSION_ID] == "s-conv"
        assert attributes(span)[SpanAttributes.LLM_MODEL_NAME] == "mistral-medium-latest"
    assert attributes(start)[INPUT_0 + MessageAttributes.MESSAGE_CONTENT] == (
        "Who wrote Les Misérables?"
    )
    assert attributes(start)[OUTPUT_0 + MessageAttributes.MESSAGE_CONTENT] == (
        "Victor Hugo wrote Les Misérables."
    )
    assert json_attribute(start, SpanAttributes.LLM_INVOCATION_PARAMETERS) == {
        "model": "mistral-medium-latest",
        "store": True,
    }
    assert attributes(append)[SpanAttributes.LLM_TOKEN_COUNT_TOTAL] == 41


def test_moderation_is_a_guardrail_span(
    client: Mistral, span_exporter: InMemorySpanExporter
) -> None:
    with replay.use_cassette(cassette("classifiers_moderate")):
        client.classifiers.moderate(model="mistral-moderation-latest", inputs=["I love this city."])

    span = only_span(span_exporter)
    assert span.name == "mistralai.classifiers.moderate"
    assert attributes(span)[SpanAttributes.OPENINFERENCE_SPAN_KIND] == "GUARDRAIL"
    assert attributes(span)[SpanAttributes.LLM_MODEL_NAME] == "mistral-moderation-2411"
    assert json_attribute(span, SpanAttributes.OUTPUT_VALUE)[0]["categories"] == {
        "hate_and_discrimination": False,
        "violence_and_threats": False,
    }


def test_no_api_key_headers_or_unset_parameters_are_recorded(
    instrumentor: object, span_exporter: InMemorySpanExporter
) -> None:
    secret_client = Mistral(api_key="sk-very-secret-key")
    with replay.use_cassette(cassette("chat_complete")):
        secret_client.chat.complete(
            model=CHAT_MODEL,
            messages=HELLO,
            temperature=0.2,
            max_tokens=64,
            http_headers={"X-Custom-Auth": "header-secret"},
            timeout_ms=5000,
            server_url="https://api.mistral.ai",
        )

    span = only_span(span_exporter)
    for key, value in attributes(span).items():
        text = str(value)
        assert "sk-very-secret-key" not in text, key
        assert "header-secret" not in text, key
        assert value != "", f"{key} recorded as an empty placeholder"
    assert json_attribute(span, SpanAttributes.LLM_INVOCATION_PARAMETERS) == {
        "model": CHAT_MODEL,
        "temperature": 0.2,
        "max_tokens": 64,
    }
    assert attributes(span)[SpanAttributes.INPUT_VALUE] == "Say hello in French."


def test_trace_config_hides_inputs_and_outputs(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    instrumentor = MistralAIInstrumentor()
    instrumentor.instrument(
        tracer_provider=tracer_provider, config=TraceConfig(hide_inputs=True, hide_outputs=True)
    )
    try:
        with using_session("s-private"), replay.use_cassette(cassette("chat_complete")):
            Mistral(api_key="test-key").chat.complete(
                model=CHAT_MODEL, messages=HELLO, temperature=0.2, max_tokens=64
            )
    finally:
        instrumentor.uninstrument()

    found = attributes(only_span(span_exporter))
    assert found[SpanAttributes.SESSION_ID] == "s-private"
    assert found[SpanAttributes.LLM_TOKEN_COUNT_TOTAL] == 13
    assert not [key for key in found if key.startswith(SpanAttributes.LLM_INPUT_MESSAGES)]
    assert not [key for key in found if key.startswith(SpanAttributes.LLM_OUTPUT_MESSAGES)]
    for key in (SpanAttributes.INPUT_VALUE, SpanAttributes.OUTPUT_VALUE):
        assert "Bonjour" not in str(found.get(key, "")), key
        assert "Say hello" not in str(found.get(key, "")), key
