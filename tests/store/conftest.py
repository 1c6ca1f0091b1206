"""Fixtures for the span store and read-model tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

# The suite imports with --import-mode=importlib: make this folder's helper module importable.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

from store_spans import SpanMaker


@pytest.fixture
def spans(tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter) -> SpanMaker:
    return SpanMaker(tracer_provider, span_exporter)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store" / "spans.sqlite3"
