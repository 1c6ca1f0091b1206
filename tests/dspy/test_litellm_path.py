"""DSPy's LiteLLM path (LiteLLM -> OpenAI SDK -> httpx2), replayed from vcrpy cassettes.

On DSPy >= 3.4 ``engine="litellm"`` selects it; before 3.4 it is the only path. With the
convotel OpenAI instrumentor active too, one model call still yields exactly one LLM span.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import dspy
import pytest
import vcr
from dspy_lms import OpenAIClientLM, litellm_lm
from dspy_loopback import LoopbackServer
from dspy_spans import HAS_NATIVE_ENGINE, by_name, one, parent_of
from openinference.semconv.trace import OpenInferenceSpanKindValues, SpanAttributes
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from convotel import using_session

KIND = SpanAttributes.OPENINFERENCE_SPAN_KIND
LLM = OpenInferenceSpanKindValues.LLM.value
TOTAL = SpanAttributes.LLM_TOKEN_COUNT_TOTAL
HAS_OPENAI_INSTRUMENTOR = importlib.util.find_spec("convotel.openai") is not None


def llm_kind_spans(finished: tuple[ReadableSpan, ...]) -> list[ReadableSpan]:
    return [span for span in finished if span.attributes.get(KIND) == LLM]


def test_predict_on_the_litellm_path_records_tokens_from_the_cassette(
    spans: InMemorySpanExporter, cassettes: vcr.VCR
) -> None:
    with (
        cassettes.use_cassette("litellm_predict.yaml") as cassette,
        dspy.context(lm=litellm_lm()),
        using_session("s-litellm"),
    ):
        prediction = dspy.Predict("question -> answer")(question="What is the capital of France?")

    assert cassette.all_played
    assert prediction.answer == "Paris"
    finished = spans.get_finished_spans()
    llm = one(finished, "LM.__call__")
    assert parent_of(finished, llm) is one(finished, "Predict.forward")
    assert llm.attributes[KIND] == LLM
    assert llm.attributes[SpanAttributes.LLM_MODEL_NAME] == "gpt-4o-mini-2024-07-18"
    assert llm.attributes[SpanAttributes.LLM_TOKEN_COUNT_PROMPT] == 40
    assert llm.attributes[TOTAL] == 49
    assert {s.attributes[SpanAttributes.SESSION_ID] for s in finished} == {"s-litellm"}


def test_request_missing_from_the_cassette_fails_instead_of_reaching_the_network(
    spans: InMemorySpanExporter, cassettes: vcr.VCR
) -> None:
    with (
        cassettes.use_cassette("litellm_predict.yaml"),
        dspy.context(lm=litellm_lm()),
        pytest.raises(Exception) as raised,  # noqa: PT011 - LiteLLM/OpenAI wrap vcrpy's error
    ):
        dspy.Predict("question -> answer")(question="A question nobody recorded")

    chain: list[BaseException] = []
    error: BaseException | None = raised.value
    while error is not None and len(chain) < 20:
        chain.append(error)
        error = error.__cause__ or error.__context__
    assert any(type(e).__name__ == "CannotOverwriteExistingCassetteException" for e in chain), [
        f"{type(e).__name__}: {e}" for e in chain
    ]
    for llm in by_name(spans.get_finished_spans(), "LM.__call__"):
        assert llm.status.status_code is StatusCode.ERROR


def test_provider_error_on_the_litellm_path_fails_the_llm_span(
    spans: InMemorySpanExporter, cassettes: vcr.VCR
) -> None:
    with (
        cassettes.use_cassette("litellm_unauthorized.yaml", allow_playback_repeats=True),
        dspy.context(lm=litellm_lm()),
        pytest.raises(Exception, match="Incorrect API key") as raised,
    ):
        dspy.Predict("question -> answer")(question="Who are you?")

    finished = spans.get_finished_spans()
    assert one(finished, "Predict.forward").attributes["error.type"] == (
        type(raised.value).__qualname__
    )
    for llm in by_name(finished, "LM.__call__"):
        assert llm.status.status_code is StatusCode.ERROR
        assert "Incorrect API key" in (llm.status.description or "")


async def test_streamify_on_the_litellm_path_streams_and_counts_tokens(
    spans: InMemorySpanExporter, cassettes: vcr.VCR
) -> None:
    program = dspy.streamify(dspy.Predict("question -> answer"))
    values = []
    with (
        cassettes.use_cassette("litellm_stream.yaml") as cassette,
        dspy.context(lm=litellm_lm()),
        using_session("s-stream"),
    ):
        async for value in program(question="Stream the capital of Italy"):
            values.append(value)

    assert cassette.all_played
    assert values[-1].answer == "Rome"
    assert len(values) > 2
    llm = one(spans.get_finished_spans(), "LM.__call__")
    assert llm.attributes[TOTAL] == 49
    assert llm.attributes[SpanAttributes.SESSION_ID] == "s-stream"


@pytest.fixture
def with_openai_instrumentor(
    tracer_provider: TracerProvider, spans: InMemorySpanExporter
) -> Iterator[None]:
    if not HAS_OPENAI_INSTRUMENTOR:
        pytest.skip("convotel-openai is not installed")
    from convotel.openai import OpenAIInstrumentor

    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    yield
    instrumentor.uninstrument()


@pytest.mark.usefixtures("with_openai_instrumentor")
def test_with_the_openai_instrumentor_each_litellm_call_is_one_llm_span_with_tokens(
    spans: InMemorySpanExporter, cassettes: vcr.VCR
) -> None:
    with (
        cassettes.use_cassette("litellm_two_sessions.yaml") as cassette,
        dspy.context(lm=litellm_lm()),
    ):
        for session in ("s-1", "s-2"):
            with using_session(session):
                dspy.Predict("question -> answer")(question=f"question from {session}")

    assert cassette.all_played
    finished = spans.get_finished_spans()
    llm_spans = llm_kind_spans(finished)
    # Whichever layer records the call (LiteLLM may bypass the SDK methods convotel-openai
    # wraps), each model call is one LLM span, and each session's tokens are what it was billed.
    assert sorted(s.attributes[SpanAttributes.SESSION_ID] for s in llm_spans) == ["s-1", "s-2"]
    assert [s.attributes[TOTAL] for s in llm_spans] == [49, 49]
    assert [s for s in finished if TOTAL in s.attributes] == llm_spans


@pytest.mark.usefixtures("with_openai_instrumentor")
@pytest.mark.filterwarnings("ignore:Implementing custom LMs:DeprecationWarning")
def test_with_the_openai_instrumentor_the_dspy_lm_span_defers_to_the_provider_span(
    spans: InMemorySpanExporter, llm_server: LoopbackServer
) -> None:
    with dspy.context(lm=OpenAIClientLM(llm_server.base_url)), using_session("s-sdk"):
        prediction = dspy.Predict("question -> answer")(question="through the SDK")

    assert prediction.answer == "answer to through the SDK"
    finished = spans.get_finished_spans()
    llm_spans = llm_kind_spans(finished)
    assert len(llm_spans) == 1
    provider_span = llm_spans[0]
    assert provider_span.attributes[TOTAL] == 49
    dspy_lm = one(finished, "OpenAIClientLM.__call__")
    assert parent_of(finished, provider_span) is dspy_lm
    assert dspy_lm.attributes[KIND] == OpenInferenceSpanKindValues.CHAIN.value
    assert dspy_lm.attributes["convotel.llm.deferred_to_provider"] is True
    assert TOTAL not in dspy_lm.attributes
    assert "through the SDK" in dspy_lm.attributes["llm.input_messages.1.message.content"]
    assert {s.attributes[SpanAttributes.SESSION_ID] for s in finished} == {"s-sdk"}


@pytest.mark.skipif(not HAS_NATIVE_ENGINE, reason="DSPy < 3.4 has no native engine")
@pytest.mark.usefixtures("with_openai_instrumentor")
def test_with_the_openai_instrumentor_the_native_engine_keeps_its_llm_span(
    spans: InMemorySpanExporter, lm: dspy.LM
) -> None:
    with dspy.context(lm=lm):
        dspy.Predict("question -> answer")(question="native engine")

    llm_spans = llm_kind_spans(spans.get_finished_spans())
    assert [s.name for s in llm_spans] == ["LM.__call__"]
    assert llm_spans[0].attributes[TOTAL] == 49
