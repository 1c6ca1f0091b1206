"""The OpenTelemetry GenAI names on Mistral spans (``TraceConfig(enable_genai_semconv=True)``).

Each call replays a cassette through the real SDK; the ``gen_ai.*`` attributes must equal what
the response said (models, usage, finish reason) and the session set with ``using_session``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from mistral_cassettes import cassette, replay
from mistral_spans import AGENT_ID, CHAT_MODEL, CONVERSATION_ID, HELLO, only_span
from mistralai.client import Mistral
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv._incubating.attributes.gen_ai_attributes import (
    GenAiOperationNameValues,
    GenAiProviderNameValues,
)

from convotel import TraceConfig, using_session
from convotel.mistralai import MistralAIInstrumentor

MISTRAL = GenAiProviderNameValues.MISTRAL_AI.value
CHAT = GenAiOperationNameValues.CHAT.value
#: Instruments with the given TraceConfig (``None``: read from the environment), returns a client.
Instrument = Callable[[TraceConfig | None], Mistral]


@pytest.fixture
def instrument(tracer_provider: TracerProvider) -> Iterator[Instrument]:
    instrumentor = MistralAIInstrumentor()

    def start(config: TraceConfig | None) -> Mistral:
        instrumentor.instrument(tracer_provider=tracer_provider, config=config)
        return Mistral(api_key="test-key")  # created after instrument(), as the SDK hooks it

    yield start
    instrumentor.uninstrument()


@pytest.fixture
def client(instrument: Instrument) -> Mistral:
    return instrument(TraceConfig(enable_genai_semconv=True))


def genai_of(span: ReadableSpan) -> dict[str, Any]:
    """The span's ``gen_ai.*`` attributes (sequences as lists)."""
    return {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in (span.attributes or {}).items()
        if key.startswith("gen_ai.")
    }


def chat_names(session: str, usage: Any, finish_reason: str = "stop") -> dict[str, Any]:
    """The GenAI names of a finished ``chat.complete``/``chat.stream`` with ``usage``."""
    return {
        "gen_ai.operation.name": CHAT,
        "gen_ai.provider.name": MISTRAL,
        "gen_ai.conversation.id": session,
        "gen_ai.request.model": CHAT_MODEL,
        "gen_ai.response.model": CHAT_MODEL,
        "gen_ai.usage.input_tokens": usage.prompt_tokens,
        "gen_ai.usage.output_tokens": usage.completion_tokens,
        "gen_ai.response.finish_reasons": [finish_reason],
    }


def test_chat_complete_writes_session_provider_models_and_recorded_usage(
    client: Mistral, span_exporter: InMemorySpanExporter
) -> None:
    with using_session("gm-chat"), replay.use_cassette(cassette("chat_complete")):
        response = client.chat.complete(
            model=CHAT_MODEL, messages=HELLO, temperature=0.2, max_tokens=64
        )

    assert MISTRAL == "mistral_ai"
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (9, 4)
    assert genai_of(only_span(span_exporter)) == chat_names("gm-chat", response.usage)


async def test_async_chat_complete_writes_the_same_names(
    client: Mistral, span_exporter: InMemorySpanExporter
) -> None:
    with using_session("gm-async"), replay.use_cassette(cassette("chat_complete")):
        response = await client.chat.complete_async(
            model=CHAT_MODEL, messages=HELLO, temperature=0.2, max_tokens=64
        )

    assert genai_of(only_span(span_exporter)) == chat_names("gm-async", response.usage)


def test_stream_writes_the_usage_of_its_last_event(
    client: Mistral, span_exporter: InMemorySpanExporter
) -> None:
    with (
        using_session("gm-stream"),
        replay.use_cassette(cassette("chat_stream")),
        client.chat.stream(model=CHAT_MODEL, messages=HELLO) as stream,
    ):
        events = list(stream)

    usage = events[-1].data.usage
    assert usage is not None
    assert genai_of(only_span(span_exporter)) == chat_names("gm-stream", usage)


async def test_async_stream_writes_the_same_names(
    client: Mistral, span_exporter: InMemorySpanExporter
) -> None:
    with using_session("gm-astream"), replay.use_cassette(cassette("chat_stream")):
        async with await client.chat.stream_async(model=CHAT_MODEL, messages=HELLO) as stream:
            events = [event async for event in stream]

    usage = events[-1].data.usage
    assert usage is not None
    assert genai_of(only_span(span_exporter)) == chat_names("gm-astream", usage)


def test_embeddings_write_the_embeddings_operation(
    client: Mistral, span_exporter: InMemorySpanExporter
) -> None:
    with using_session("gm-embed"), replay.use_cassette(cassette("embeddings_create")):
        response = client.embeddings.create(model="mistral-embed", inputs=["Bonjour", "Hello"])

    assert response.usage.prompt_tokens == 6
    assert genai_of(only_span(span_exporter)) == {
        "gen_ai.operation.name": GenAiOperationNameValues.EMBEDDINGS.value,
        "gen_ai.provider.name": MISTRAL,
        "gen_ai.conversation.id": "gm-embed",
        "gen_ai.request.model": "mistral-embed",
        "gen_ai.usage.input_tokens": response.usage.prompt_tokens,
        "gen_ai.usage.output_tokens": response.usage.completion_tokens,
    }


def test_fim_complete_is_a_text_completion(
    client: Mistral, span_exporter: InMemorySpanExporter
) -> None:
    """Regression: fill-in-the-middle is given a prompt, not messages: ``text_completion``."""
    with using_session("gm-fim"), replay.use_cassette(cassette("fim_complete")):
        response = client.fim.complete(
            model="codestral-latest", prompt="def add(a, b):\n", suffix="\nprint(add(1, 2))"
        )

    assert genai_of(only_span(span_exporter)) == {
        "gen_ai.operation.name": GenAiOperationNameValues.TEXT_COMPLETION.value,
        "gen_ai.provider.name": MISTRAL,
        "gen_ai.conversation.id": "gm-fim",
        "gen_ai.request.model": "codestral-latest",
        "gen_ai.response.model": response.model,
        "gen_ai.usage.input_tokens": response.usage.prompt_tokens,
        "gen_ai.usage.output_tokens": response.usage.completion_tokens,
        "gen_ai.response.finish_reasons": ["stop"],
    }


def test_agent_call_names_no_requested_model(
    client: Mistral, span_exporter: InMemorySpanExporter
) -> None:
    """Regression: an agent call requests no model; the answering one is only the response's."""
    with using_session("gm-agent"), replay.use_cassette(cassette("agents_complete")):
        response = client.agents.complete(agent_id=AGENT_ID, messages=HELLO)

    assert genai_of(only_span(span_exporter)) == {
        "gen_ai.operation.name": CHAT,
        "gen_ai.provider.name": MISTRAL,
        "gen_ai.conversation.id": "gm-agent",
        "gen_ai.agent.id": AGENT_ID,
        "gen_ai.response.model": response.model,
        "gen_ai.usage.input_tokens": response.usage.prompt_tokens,
        "gen_ai.usage.output_tokens": response.usage.completion_tokens,
        "gen_ai.response.finish_reasons": ["stop"],
    }


def test_conversation_id_is_the_session_and_mistral_s_own_without_one(
    client: Mistral, span_exporter: InMemorySpanExporter
) -> None:
    with replay.use_cassette(cassette("conversations_start"), allow_playback_repeats=True):
        with using_session("gm-conv"):
            client.beta.conversations.start(
                inputs="Who wrote Les Misérables?", model="mistral-medium-latest"
            )
        client.beta.conversations.start(
            inputs="Who wrote Les Misérables?", model="mistral-medium-latest"
        )

    in_session, without_session = (genai_of(s) for s in span_exporter.get_finished_spans())
    assert in_session["gen_ai.conversation.id"] == "gm-conv"
    assert without_session["gen_ai.conversation.id"] == CONVERSATION_ID
    for found in (in_session, without_session):
        assert found["gen_ai.request.model"] == "mistral-medium-latest"
        assert (found["gen_ai.usage.input_tokens"], found["gen_ai.usage.output_tokens"]) == (11, 8)


def test_switched_off_no_genai_name_is_written(
    instrument: Instrument, span_exporter: InMemorySpanExporter
) -> None:
    client = instrument(TraceConfig(enable_genai_semconv=False))
    with using_session("gm-off"):
        with replay.use_cassette(cassette("chat_complete")):
            client.chat.complete(model=CHAT_MODEL, messages=HELLO, temperature=0.2, max_tokens=64)
        with (
            replay.use_cassette(cassette("chat_stream")),
            client.chat.stream(model=CHAT_MODEL, messages=HELLO) as stream,
        ):
            list(stream)
        with replay.use_cassette(cassette("embeddings_create")):
            client.embeddings.create(model="mistral-embed", inputs=["Bonjour", "Hello"])

    spans = span_exporter.get_finished_spans()
    assert [span.name for span in spans] == [
        "mistralai.chat.complete",
        "mistralai.chat.stream",
        "mistralai.embeddings.create",
    ]
    assert all((span.attributes or {})["session.id"] == "gm-off" for span in spans)
    assert [genai_of(span) for span in spans] == [{}, {}, {}]


@pytest.mark.parametrize(("value", "written"), [("true", True), ("false", False)])
def test_the_environment_variable_switches_it(
    instrument: Instrument,
    span_exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
    value: str,
    written: bool,
) -> None:
    monkeypatch.setenv("OPENINFERENCE_ENABLE_GENAI_SEMCONV", value)
    client = instrument(None)
    with using_session("gm-env"), replay.use_cassette(cassette("chat_complete")):
        client.chat.complete(model=CHAT_MODEL, messages=HELLO, temperature=0.2, max_tokens=64)

    found = genai_of(only_span(span_exporter))
    assert (found.get("gen_ai.conversation.id") == "gm-env") is written
    assert bool(found) is written
