"""Fixtures for the OpenAI instrumentor tests: an instrumented SDK replaying cassettes."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from convotel import TraceConfig
from convotel.openai import OpenAIInstrumentor

sys.path.insert(0, str(Path(__file__).parent))  # the openai_* helper modules beside this file

from openai_cassettes import Instrument
from openai_wire import API_KEY, AZURE_API_VERSION, AZURE_ENDPOINT


@pytest.fixture
def instrument(tracer_provider: TracerProvider) -> Iterator[Instrument]:
    """Instrument with a given TraceConfig (default: everything recorded); undone afterwards."""
    instrumentor = OpenAIInstrumentor()

    def start(config: TraceConfig | None = None) -> OpenAIInstrumentor:
        instrumentor.instrument(tracer_provider=tracer_provider, config=config or TraceConfig())
        return instrumentor

    yield start
    instrumentor.uninstrument()


@pytest.fixture
def instrumented(instrument: Instrument) -> OpenAIInstrumentor:
    return instrument()


@pytest.fixture
def client() -> openai.OpenAI:
    return openai.OpenAI(api_key=API_KEY, max_retries=2)


@pytest.fixture
def async_client() -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=API_KEY, max_retries=2)


@pytest.fixture
def azure_client() -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=AZURE_ENDPOINT, api_version=AZURE_API_VERSION, api_key=API_KEY
    )


@pytest.fixture
def async_azure_client() -> openai.AsyncAzureOpenAI:
    return openai.AsyncAzureOpenAI(
        azure_endpoint=AZURE_ENDPOINT, api_version=AZURE_API_VERSION, api_key=API_KEY
    )


@pytest.fixture
def finished(span_exporter: InMemorySpanExporter) -> Callable[[], list[ReadableSpan]]:
    """The finished spans so far."""
    return lambda: list(span_exporter.get_finished_spans())


@pytest.fixture
def only_span(span_exporter: InMemorySpanExporter) -> Callable[[], ReadableSpan]:
    """The one finished span (fails if there is not exactly one)."""

    def get() -> ReadableSpan:
        spans = span_exporter.get_finished_spans()
        assert len(spans) == 1, [s.name for s in spans]
        return spans[0]

    return get
