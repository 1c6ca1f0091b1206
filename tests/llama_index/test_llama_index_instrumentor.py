"""Instrumenting and uninstrumenting, the CLI entry point, and never breaking the host app."""

from __future__ import annotations

import textwrap
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.llms import ChatMessage, MockLLM
from llama_index_instrumentation import get_dispatcher
from llama_index_spans import FinishedSpans, attributes
from opentelemetry.instrumentation.dependencies import get_dependency_conflicts
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from convotel import InvalidContextValueWarning, TraceConfig, using_session
from convotel.llama_index import LlamaIndexInstrumentor, extraction, handlers
from convotel.llama_index.handlers import ConvotelEventHandler, ConvotelSpanHandler

QUESTION = "What is the capital of France?"


def convotel_handlers() -> tuple[int, int]:
    dispatcher = get_dispatcher()
    return (
        sum(isinstance(h, ConvotelSpanHandler) for h in dispatcher.span_handlers),
        sum(isinstance(h, ConvotelEventHandler) for h in dispatcher.event_handlers),
    )


@pytest.fixture
def fresh_instrumentor() -> Iterator[LlamaIndexInstrumentor]:
    instrumentor = LlamaIndexInstrumentor()
    yield instrumentor
    instrumentor.uninstrument()


def test_instrument_twice_registers_one_span_and_one_event_handler(
    tracer_provider: TracerProvider, fresh_instrumentor: LlamaIndexInstrumentor
) -> None:
    fresh_instrumentor.instrument(tracer_provider=tracer_provider)
    fresh_instrumentor.instrument(tracer_provider=tracer_provider)

    assert convotel_handlers() == (1, 1)


def test_uninstrument_removes_the_handlers_and_stops_tracing(
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    fresh_instrumentor: LlamaIndexInstrumentor,
    mock_llm: MockLLM,
) -> None:
    others = (list(get_dispatcher().span_handlers), list(get_dispatcher().event_handlers))
    fresh_instrumentor.instrument(tracer_provider=tracer_provider)
    fresh_instrumentor.uninstrument()
    mock_llm.complete("Hi")

    assert convotel_handlers() == (0, 0)
    assert (get_dispatcher().span_handlers, get_dispatcher().event_handlers) == others
    assert span_exporter.get_finished_spans() == ()


def test_requirement_names_the_framework_without_extras() -> None:
    requirements = LlamaIndexInstrumentor().instrumentation_dependencies()

    assert list(requirements) == ["llama-index-core >= 0.14.9"]
    assert get_dependency_conflicts(requirements) is None


def test_opentelemetry_instrument_loads_the_instrumentor(
    run_under_opentelemetry_instrument: Callable[..., Any],
) -> None:
    # The CLI instruments against the global tracer provider, which the script sets afterwards.
    script = textwrap.dedent(
        """
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from llama_index.core.llms import MockLLM
        from convotel import using_session
        from convotel.llama_index import LlamaIndexInstrumentor

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        with using_session("cli-session"):
            MockLLM(max_tokens=2).complete("Hi")
        print("instrumented:", LlamaIndexInstrumentor().is_instrumented_by_opentelemetry)
        for span in exporter.get_finished_spans():
            print("span:", span.name, span.attributes.get("session.id"))
        """
    )
    done = run_under_opentelemetry_instrument(script, timeout=300)

    assert done.returncode == 0, done.stderr
    assert "instrumented: True" in done.stdout, done.stderr
    assert "span: MockLLM.complete cli-session" in done.stdout, done.stderr


def test_failing_extraction_never_reaches_the_application(
    spans: FinishedSpans,
    index: VectorStoreIndex,
    mock_llm: MockLLM,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: object) -> Iterator[tuple[str, object]]:
        raise ValueError("extractor bug")
        yield  # a generator, as the extractors are: it fails when the span reads it

    monkeypatch.setattr(extraction, "call_output_attributes", broken)
    monkeypatch.setattr(extraction, "llm_request_attributes", broken)
    monkeypatch.setattr(extraction, "call_input_attributes", broken)

    with using_session("still-works"):
        response = index.as_query_engine(llm=mock_llm).query(QUESTION)

    assert str(response) == "text text text text"
    query = spans.one("RetrieverQueryEngine.query")
    assert attributes(query)["session.id"] == "still-works"
    assert query.end_time is not None


def test_failing_span_start_never_reaches_the_application(
    spans: FinishedSpans, mock_llm: MockLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("span handler bug")

    monkeypatch.setattr(handlers.CallTracker, "enter", broken)

    assert mock_llm.chat([ChatMessage(role="user", content="Hi")]).message.content
    assert spans.all() == []


def test_bad_session_id_warns_and_records_no_session(
    spans: FinishedSpans, mock_llm: MockLLM
) -> None:
    with (
        warnings.catch_warnings(record=True) as caught,
        using_session("   "),
    ):
        warnings.simplefilter("always")
        mock_llm.complete("Hi")

    assert any(issubclass(w.category, InvalidContextValueWarning) for w in caught)
    (span,) = spans.all()
    assert "session.id" not in attributes(span)


def test_trace_config_hides_inputs_and_outputs(
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    fresh_instrumentor: LlamaIndexInstrumentor,
    mock_llm: MockLLM,
) -> None:
    fresh_instrumentor.instrument(
        tracer_provider=tracer_provider, config=TraceConfig(hide_inputs=True, hide_outputs=True)
    )
    mock_llm.chat([ChatMessage(role="user", content="my secret question")])

    (span,) = span_exporter.get_finished_spans()
    recorded = " ".join(str(value) for value in (span.attributes or {}).values())
    assert "my secret question" not in recorded
    assert "text text" not in recorded
    assert attributes(span)["openinference.span.kind"] == "LLM"


def test_genai_conventions_switch_adds_the_conversation_id(
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    fresh_instrumentor: LlamaIndexInstrumentor,
    mock_llm: MockLLM,
) -> None:
    fresh_instrumentor.instrument(
        tracer_provider=tracer_provider, config=TraceConfig(enable_genai_semconv=True)
    )
    with using_session("genai-1"):
        mock_llm.chat([ChatMessage(role="user", content="Hi")])

    (span,) = span_exporter.get_finished_spans()
    assert attributes(span)["gen_ai.conversation.id"] == "genai-1"
    assert attributes(span)["session.id"] == "genai-1"
