"""The OpenTelemetry GenAI names on DSPy spans (``TraceConfig(enable_genai_semconv=True)``).

DSPy's ``LM.__call__`` span is the model call on both engines (the loopback server for the
native one, cassettes for LiteLLM); with a custom LM over the OpenAI SDK and convotel's OpenAI
instrumentor, the provider span claims the call and the DSPy span (now CHAIN) must not count
``gen_ai.usage.*`` a second time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import dspy
import pytest
import vcr
from dspy_lms import OpenAIClientLM, litellm_lm
from dspy_loopback import COMPLETION_TOKENS, MODEL, PROMPT_TOKENS, LoopbackServer
from dspy_spans import one, parent_of
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv._incubating.attributes.gen_ai_attributes import (
    GenAiOperationNameValues,
    GenAiProviderNameValues,
)

from convotel import TraceConfig, using_session
from convotel.dspy import DSPyInstrumentor
from convotel.instrumentor import ConvotelInstrumentor
from convotel.openai import OpenAIInstrumentor

CHAT = GenAiOperationNameValues.CHAT.value
OPENAI = GenAiProviderNameValues.OPENAI.value
GENAI_ON = TraceConfig(enable_genai_semconv=True)
#: Instruments DSPy (and OpenAI if asked) with a TraceConfig (``None``: from the environment).
Instrument = Callable[..., None]


def genai_of(span: ReadableSpan) -> dict[str, Any]:
    """The span's ``gen_ai.*`` attributes (sequences as lists)."""
    return {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in (span.attributes or {}).items()
        if key.startswith("gen_ai.")
    }


def lm_call_names(session: str, response_model: str = MODEL) -> dict[str, Any]:
    """The GenAI names of an ``LM.__call__`` answered with the loopback's (or cassettes') usage."""
    return {
        "gen_ai.operation.name": CHAT,
        "gen_ai.provider.name": OPENAI,
        "gen_ai.conversation.id": session,
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": response_model,
        "gen_ai.usage.input_tokens": PROMPT_TOKENS,
        "gen_ai.usage.output_tokens": COMPLETION_TOKENS,
    }


@pytest.fixture
def instrument(tracer_provider: TracerProvider) -> Iterator[Instrument]:
    started: list[ConvotelInstrumentor] = []

    def start(config: TraceConfig | None, *, with_openai: bool = False) -> None:
        instrumentor = DSPyInstrumentor()
        instrumentor.instrument(tracer_provider=tracer_provider, config=config)
        started.append(instrumentor)
        if with_openai:
            provider = OpenAIInstrumentor()
            provider.instrument(tracer_provider=tracer_provider, config=config)
            started.append(provider)

    yield start
    for instrumentor in reversed(started):
        instrumentor.uninstrument()


def test_lm_call_writes_session_provider_models_and_recorded_usage(
    instrument: Instrument, span_exporter: InMemorySpanExporter, lm: dspy.LM
) -> None:
    instrument(GENAI_ON)
    with dspy.context(lm=lm), using_session("gd-native"):
        dspy.Predict("question -> answer")(question="native engine")

    usage = lm.history[-1]["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (
        PROMPT_TOKENS,
        COMPLETION_TOKENS,
    )
    finished = span_exporter.get_finished_spans()
    lm_span = one(finished, "LM.__call__")
    assert genai_of(lm_span) == lm_call_names("gd-native")
    assert genai_of(one(finished, "Predict.forward")) == {"gen_ai.conversation.id": "gd-native"}


def test_litellm_engine_writes_the_same_names(
    instrument: Instrument, span_exporter: InMemorySpanExporter, cassettes: vcr.VCR
) -> None:
    instrument(GENAI_ON)
    with (
        cassettes.use_cassette("litellm_predict.yaml") as cassette,
        dspy.context(lm=litellm_lm()),
        using_session("gd-litellm"),
    ):
        dspy.Predict("question -> answer")(question="What is the capital of France?")

    assert cassette.all_played
    lm_span = one(span_exporter.get_finished_spans(), "LM.__call__")
    assert genai_of(lm_span) == lm_call_names("gd-litellm")


async def test_streamed_lm_call_writes_the_usage_of_the_stream(
    instrument: Instrument, span_exporter: InMemorySpanExporter, cassettes: vcr.VCR
) -> None:
    instrument(GENAI_ON)
    program = dspy.streamify(dspy.Predict("question -> answer"))
    with (
        cassettes.use_cassette("litellm_stream.yaml") as cassette,
        dspy.context(lm=litellm_lm()),
        using_session("gd-stream"),
    ):
        values = [value async for value in program(question="Stream the capital of Italy")]

    assert cassette.all_played
    assert values[-1].answer == "Rome"
    found = genai_of(one(span_exporter.get_finished_spans(), "LM.__call__"))
    assert found.pop("gen_ai.usage.reasoning.output_tokens", 0) == 0
    assert found == lm_call_names("gd-stream", response_model="gpt-4o-mini")


def test_hosted_embedder_names_the_model_without_litellm_s_provider_prefix(
    instrument: Instrument, span_exporter: InMemorySpanExporter, cassettes: vcr.VCR
) -> None:
    """Regression: ``openai/text-embedding-3-small`` requests ``text-embedding-3-small``."""
    instrument(GENAI_ON)
    embedder = dspy.Embedder("openai/text-embedding-3-small", caching=False, api_key="sk-test")
    with cassettes.use_cassette("litellm_embeddings.yaml"), using_session("gd-embed"):
        embedder(["hello", "world"])

    assert genai_of(one(span_exporter.get_finished_spans(), "Embedder.__call__")) == {
        "gen_ai.operation.name": GenAiOperationNameValues.EMBEDDINGS.value,
        "gen_ai.provider.name": OPENAI,
        "gen_ai.conversation.id": "gd-embed",
        "gen_ai.request.model": "text-embedding-3-small",
    }


@pytest.mark.filterwarnings("ignore:Implementing custom LMs:DeprecationWarning")
def test_with_the_openai_instrumentor_the_usage_is_written_once_by_the_provider_span(
    instrument: Instrument, span_exporter: InMemorySpanExporter, llm_server: LoopbackServer
) -> None:
    instrument(GENAI_ON, with_openai=True)
    with dspy.context(lm=OpenAIClientLM(llm_server.base_url)), using_session("gd-both"):
        dspy.Predict("question -> answer")(question="through the SDK")

    finished = span_exporter.get_finished_spans()
    provider = one(finished, "ChatCompletion")
    framework = one(finished, "OpenAIClientLM.__call__")
    assert parent_of(finished, provider) is framework
    assert genai_of(provider) == {
        **lm_call_names("gd-both"),
        "gen_ai.response.finish_reasons": ["stop"],
    }
    framework_names = genai_of(framework)
    assert framework_names["gen_ai.conversation.id"] == "gd-both"
    assert not [key for key in framework_names if key.startswith("gen_ai.usage.")]
    assert "gen_ai.operation.name" not in framework_names, "the CHAIN span is no model call"
    input_tokens = [genai_of(s).get("gen_ai.usage.input_tokens", 0) for s in finished]
    assert sum(input_tokens) == PROMPT_TOKENS


def test_switched_off_no_genai_name_is_written(
    instrument: Instrument, span_exporter: InMemorySpanExporter, lm: dspy.LM, cassettes: vcr.VCR
) -> None:
    instrument(TraceConfig(enable_genai_semconv=False))
    embedder = dspy.Embedder("openai/text-embedding-3-small", caching=False, api_key="sk-test")
    with dspy.context(lm=lm), using_session("gd-off"):
        dspy.Predict("question -> answer")(question="switched off")
        with cassettes.use_cassette("litellm_embeddings.yaml"):
            embedder(["hello", "world"])

    finished = span_exporter.get_finished_spans()
    assert {s.name for s in finished} == {"LM.__call__", "Predict.forward", "Embedder.__call__"}
    assert {(s.attributes or {})["session.id"] for s in finished} == {"gd-off"}
    assert [s.name for s in finished if genai_of(s)] == []


def test_the_environment_variable_switches_it_on(
    instrument: Instrument,
    span_exporter: InMemorySpanExporter,
    lm: dspy.LM,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENINFERENCE_ENABLE_GENAI_SEMCONV", "true")
    instrument(None)
    with dspy.context(lm=lm), using_session("gd-env"):
        dspy.Predict("question -> answer")(question="from the environment")

    assert genai_of(one(span_exporter.get_finished_spans(), "LM.__call__")) == lm_call_names(
        "gd-env"
    )
