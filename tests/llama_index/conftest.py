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
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from convotel.llama_index import LlamaIndexInstrumentor

sys.path.insert(0, str(Path(__file__).parent))  # the llama_index_* helper modules beside this file

from llama_index_spans import FinishedSpans

DOCUMENTS = [
    ("doc-paris", "Paris is the capital of France."),
    ("doc-berlin", "Berlin is the capital of Germany."),
]


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
