"""OpenInference's newer hide switches through the real OpenAI SDK: each hides exactly its keys.

``hide_llm_tools``, ``hide_prompts``, ``hide_choices``, ``hide_embeddings_text`` and
``hide_embeddings_vectors`` (and their ``OPENINFERENCE_HIDE_*`` variables, which a deployment
set up for OpenInference already has): every call runs once with nothing hidden and once with the
switch, and the two spans differ in exactly the keys the switch names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
import pytest
from openai_cassettes import replay
from openai_wire import API_KEY, CHAT_MODEL, RESPONSES_WEATHER_TOOL, WEATHER_QUESTION, WEATHER_TOOL
from openinference.semconv.trace import EmbeddingAttributes, SpanAttributes
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from convotel import REDACTED_VALUE, TraceConfig
from convotel.openai import OpenAIInstrumentor
from convotel.spans import TIME_TO_FIRST_TOKEN_MS

Attributes = dict[str, Any]
Call = Callable[[openai.OpenAI], object]
EMBEDDINGS = SpanAttributes.EMBEDDING_EMBEDDINGS
VARIABLES = (
    "OPENINFERENCE_HIDE_LLM_TOOLS",
    "OPENINFERENCE_HIDE_PROMPTS",
    "OPENINFERENCE_HIDE_CHOICES",
    "OPENINFERENCE_HIDE_EMBEDDINGS_TEXT",
    "OPENINFERENCE_HIDE_EMBEDDINGS_VECTORS",
    "OPENINFERENCE_HIDE_EMBEDDING_VECTORS",
)


@pytest.fixture(autouse=True)
def _no_hide_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in VARIABLES:
        monkeypatch.delenv(variable, raising=False)


def recorded(cassette: str, call: Call, config: TraceConfig | None = None) -> list[Attributes]:
    """The attributes of the spans ``call`` makes, instrumented with ``config`` (``None``: the
    instrumentor's default, read from the environment when ``instrument()`` runs)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = OpenAIInstrumentor()
    if config is None:
        instrumentor.instrument(tracer_provider=provider)
    else:
        instrumentor.instrument(tracer_provider=provider, config=config)
    try:
        with replay(cassette):
            call(openai.OpenAI(api_key=API_KEY, max_retries=0))
    finally:
        instrumentor.uninstrument()
    return [dict(span.attributes or {}) for span in exporter.get_finished_spans()]


def changes(before: Attributes, after: Attributes) -> dict[str, Any]:
    """What hiding changed: each changed key with its new value (``None``: dropped)."""
    assert set(after) <= set(before)
    return {
        key: after.get(key)
        for key, value in before.items()
        if after.get(key) != value and key != TIME_TO_FIRST_TOKEN_MS  # differs run to run
    }


def chat_with_tools(client: openai.OpenAI) -> object:
    return client.chat.completions.create(
        model=CHAT_MODEL, messages=[WEATHER_QUESTION], tools=[WEATHER_TOOL], tool_choice="auto"
    )


def responses_with_tools(client: openai.OpenAI) -> object:
    return client.responses.create(
        model=CHAT_MODEL,
        input=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[RESPONSES_WEATHER_TOOL],
    )


def legacy_completion(client: openai.OpenAI) -> object:
    return client.completions.create(
        model="gpt-3.5-turbo-instruct", prompt="Say this is a test", max_tokens=7, temperature=0
    )


def legacy_completion_stream(client: openai.OpenAI) -> object:
    stream = client.completions.create(
        model="gpt-3.5-turbo-instruct", prompt="Say this is a test", max_tokens=7, stream=True
    )
    return "".join(chunk.choices[0].text for chunk in stream)


def embeddings(client: openai.OpenAI) -> object:
    return client.embeddings.create(model="text-embedding-3-small", input=["cat", "dog"])


@pytest.mark.parametrize(
    ("cassette", "call"),
    [("chat_tools", chat_with_tools), ("responses_tools", responses_with_tools)],
    ids=["chat", "responses"],
)
def test_hide_llm_tools_drops_tool_definitions_and_keeps_the_calls(
    cassette: str, call: Call
) -> None:
    (before,) = recorded(cassette, call)
    (after,) = recorded(cassette, call, TraceConfig(hide_llm_tools=True))

    tools = [key for key in before if key.startswith(SpanAttributes.LLM_TOOLS)]
    assert tools
    assert changes(before, after) == dict.fromkeys(tools)
    assert any(".message.tool_calls." in key for key in after)  # the model's calls stay
    assert WEATHER_TOOL["function"]["description"] not in repr(after)


def test_hide_prompts_redacts_the_prompt_and_leaves_input_value_to_hide_inputs() -> None:
    (before,) = recorded("completions_legacy", legacy_completion)
    (after,) = recorded("completions_legacy", legacy_completion, TraceConfig(hide_prompts=True))

    assert changes(before, after) == {f"{SpanAttributes.LLM_PROMPTS}.0.prompt.text": REDACTED_VALUE}
    assert after[SpanAttributes.INPUT_VALUE] == "Say this is a test"  # as OpenInference's


@pytest.mark.parametrize(
    ("cassette", "call"),
    [
        ("completions_legacy", legacy_completion),
        ("completions_legacy_stream", legacy_completion_stream),
    ],
    ids=["create", "stream"],
)
def test_hide_choices_redacts_the_choices_and_leaves_output_value_to_hide_outputs(
    cassette: str, call: Call
) -> None:
    (before,) = recorded(cassette, call)
    (after,) = recorded(cassette, call, TraceConfig(hide_choices=True))

    assert changes(before, after) == {
        f"{SpanAttributes.LLM_CHOICES}.0.completion.text": REDACTED_VALUE
    }
    assert after[SpanAttributes.OUTPUT_VALUE] == before[SpanAttributes.OUTPUT_VALUE]


def test_hide_embeddings_text_set_in_the_environment_redacts_the_embedded_texts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A deployment configured for OpenInference: only the variable, no config in the code."""
    (before,) = recorded("embeddings", embeddings)
    monkeypatch.setenv("OPENINFERENCE_HIDE_EMBEDDINGS_TEXT", "true")
    (after,) = recorded("embeddings", embeddings)

    texts = [f"{EMBEDDINGS}.{index}.{EmbeddingAttributes.EMBEDDING_TEXT}" for index in (0, 1)]
    assert [before[key] for key in texts] == ["cat", "dog"]
    assert changes(before, after) == dict.fromkeys(texts, REDACTED_VALUE)


@pytest.mark.parametrize(
    "variable", ["OPENINFERENCE_HIDE_EMBEDDINGS_VECTORS", "OPENINFERENCE_HIDE_EMBEDDING_VECTORS"]
)
def test_either_embeddings_vectors_variable_redacts_the_vectors(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    (before,) = recorded("embeddings", embeddings)
    monkeypatch.setenv(variable, "true")
    (after,) = recorded("embeddings", embeddings)

    vectors = [f"{EMBEDDINGS}.{index}.{EmbeddingAttributes.EMBEDDING_VECTOR}" for index in (0, 1)]
    assert changes(before, after) == dict.fromkeys(vectors, REDACTED_VALUE)


def test_a_switch_given_to_the_constructor_wins_over_its_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENINFERENCE_HIDE_LLM_TOOLS", "true")
    monkeypatch.setenv("OPENINFERENCE_HIDE_EMBEDDINGS_TEXT", "true")
    (chat,) = recorded("chat_tools", chat_with_tools, TraceConfig(hide_llm_tools=False))
    (embedding,) = recorded("embeddings", embeddings, TraceConfig(hide_embeddings_text=False))

    assert any(key.startswith(SpanAttributes.LLM_TOOLS) for key in chat)
    assert embedding[f"{EMBEDDINGS}.0.{EmbeddingAttributes.EMBEDDING_TEXT}"] == "cat"
