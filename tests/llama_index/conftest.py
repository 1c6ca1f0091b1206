"""Fixtures for the LlamaIndex instrumentor tests: the instrumentor, mock models, finished spans."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockLLM
from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from convotel import get_attributes_from_context
from convotel.llama_index import LlamaIndexInstrumentor

sys.path.insert(0, str(Path(__file__).parent))  # the llama_index_* helper modules beside this file

from llama_index_spans import FinishedSpans

DOCUMENTS = [
    ("doc-paris", "Paris is the capital of France."),
    ("doc-berlin", "Berlin is the capital of Germany."),
]


@pytest.fixture(autouse=True)
def _caller_context_unchanged() -> Iterator[None]:
    """Fail a test after which the caller's OpenTelemetry context differs in any value (a span,
    a session or user id, or one of the instrumentor's own keys) from what it was before."""
    saved = context_api.get_current()
    span_before = trace_api.get_current_span()
    attributes_before = dict(get_attributes_from_context())
    yield
    after = context_api.get_current()
    span_after = trace_api.get_current_span()
    attributes_after = dict(get_attributes_from_context())
    context_api.attach(saved)  # one leak must not cascade into the next tests
    if span_before is trace_api.INVALID_SPAN:
        assert span_after is trace_api.INVALID_SPAN, f"the test left span {span_after!r} current"
    assert attributes_after == attributes_before, f"the test left {attributes_after} set"
    assert dict(after) == dict(saved), "the test left values in the caller's context"


@pytest.fixture
def instrumentor(tracer_provider: TracerProvider) -> Iterator[LlamaIndexInstrumentor]:
    instrumentor = LlamaIndexInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    yield instrumentor
    instrumentor.uninstrument()


@pytest.fixture
def spans(
    span_exporter: InMemorySpanExporter, instrumentor: LlamaIndexInstrumentor
) -> FinishedSpans:
    return FinishedSpans(span_exporter)


@pytest.fixture
def mock_llm() -> MockLLM:
    return MockLLM(max_tokens=4)


@pytest.fixture
def mock_embedding() -> MockEmbedding:
    return MockEmbedding(embed_dim=4)


def build_index(
    embed_model: Any, documents: Sequence[tuple[str, str]] = DOCUMENTS
) -> VectorStoreIndex:
    return VectorStoreIndex.from_documents(
        [Document(text=text, id_=doc_id) for doc_id, text in documents], embed_model=embed_model
    )


@pytest.fixture
def index(mock_embedding: MockEmbedding, span_exporter: InMemorySpanExporter) -> VectorStoreIndex:
    """An index over :data:`DOCUMENTS`; the spans of building it are not kept."""
    built = build_index(mock_embedding)
    span_exporter.clear()
    return built
