"""What the per-adapter turn-rule tests share: reading a web request's root and model spans.

The fixtures (``processor_options``, ``session_tracer_provider``) live in ``tests/conftest.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

ROOT_NAME = "POST /chat"


def finished(spans: Any) -> Sequence[ReadableSpan]:
    """The finished spans of an in-memory exporter, a helper with ``all()``, or a sequence."""
    if isinstance(spans, InMemorySpanExporter):
        return spans.get_finished_spans()
    collect = getattr(spans, "all", None)
    return collect() if callable(collect) else spans


def root_of(spans: Any) -> dict[str, Any]:
    """The attributes of the one root span, the web request's ``POST /chat``."""
    (root,) = [span for span in finished(spans) if span.parent is None]
    assert root.name == ROOT_NAME
    return dict(root.attributes or {})


def llm_spans(spans: Any) -> list[ReadableSpan]:
    return [
        span
        for span in finished(spans)
        if (span.attributes or {}).get("openinference.span.kind") == "LLM"
    ]


def assert_no_tracing_warnings(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing was written on an ended span (the SDK warns) and convotel logged no problem."""
    problems = [
        record.getMessage()
        for record in caplog.records
        if record.levelno >= logging.WARNING
        and record.name.startswith(("opentelemetry", "convotel"))
    ]
    assert not problems
