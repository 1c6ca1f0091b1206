"""Lookups over the spans a LlamaIndex test finished (shared by the test modules)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from typing import Any

from llama_index.core.base.response.schema import (
    RESPONSE_TYPE,
    AsyncStreamingResponse,
    StreamingResponse,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from convotel.testing import CapturedSpans

KIND = "openinference.span.kind"


class FinishedSpans:
    """The spans finished during a test, with lookups by name and parent."""

    def __init__(self, exporter: InMemorySpanExporter) -> None:
        self.exporter = exporter

    def all(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.all() if span.name == name]

    def one(self, name: str) -> ReadableSpan:
        spans = self.named(name)
        assert len(spans) == 1, f"expected one {name!r} span, got {self.describe()}"
        return spans[0]

    def of_kind(self, kind: str) -> list[ReadableSpan]:
        return [
            span for span in self.all() if attributes(span).get("openinference.span.kind") == kind
        ]

    def parent(self, span: ReadableSpan) -> ReadableSpan | None:
        if span.parent is None:
            return None
        for candidate in self.all():
            if candidate.context.span_id == span.parent.span_id:
                return candidate
        return None

    def describe(self) -> list[tuple[str, Any]]:
        return [(span.name, attributes(span).get("openinference.span.kind")) for span in self.all()]

    def captured(self) -> CapturedSpans:
        """The core's session read model over these spans (``assert_session`` and friends)."""
        return CapturedSpans(self.exporter, TracerProvider())


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def token_stream(response: RESPONSE_TYPE) -> Generator[str, None, None]:
    """The text stream of a streaming query engine's response."""
    assert isinstance(response, StreamingResponse)
    assert isinstance(response.response_gen, Generator)
    return response.response_gen


def async_token_stream(response: RESPONSE_TYPE) -> AsyncGenerator[str, None]:
    """The text stream of an async streaming query engine's response."""
    assert isinstance(response, AsyncStreamingResponse)
    return response.async_response_gen()
