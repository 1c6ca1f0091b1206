"""What the property tests (``test_properties_*.py``) share: settings, configs, a recorder.

Hostile request arguments, response payloads, stream chunks, exceptions and context values (see
``reliability_values``) are fed to every adapter the way the core drives it (``sync_wrapper``
over each :class:`~convotel.spans.Endpoint`, the stream proxy over each accumulator, LlamaIndex's
span and event handlers, DSPy's usage observers) and to the core's own entry points. Each test
checks that the caller sees exactly what it would see without convotel (same return value, same
exception object), that every failure of convotel's own code was caught *and logged* by the core
(``log_once``) and that no failure was logged when nothing failed, that every value handed to
OpenTelemetry is a valid OTLP attribute value, and that the caller's context is left as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from openinference.semconv.trace import OpenInferenceSpanKindValues
from opentelemetry import context as context_api
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from reliability_values import RecordingTracer, invalid_attributes

from convotel import TraceConfig
from convotel.spans import Tracing

LLM = OpenInferenceSpanKindValues.LLM.value
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
#: For the tests parametrized over many extractors (all property tests stay well under a minute).
PER_EXTRACTOR = settings(SETTINGS, max_examples=35)
#: Every property test module's ``pytestmark``.
PYDANTIC_WARNINGS = pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")

configs = st.builds(
    TraceConfig,
    hide_inputs=st.booleans(),
    hide_outputs=st.booleans(),
    hide_input_messages=st.booleans(),
    hide_output_messages=st.booleans(),
    hide_input_text=st.booleans(),
    hide_output_text=st.booleans(),
    hide_input_images=st.booleans(),
    hide_embedding_vectors=st.booleans(),
    hide_llm_invocation_parameters=st.booleans(),
    base64_image_max_length=st.integers(1, 64),
    max_value_length=st.none() | st.integers(1, 40),
    request_stream_usage=st.booleans(),
    enable_genai_semconv=st.booleans(),
)


class Recorder:
    """A tracer provider whose convotel spans keep the raw values they were given."""

    def __init__(self, config: TraceConfig | None = None) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = RecordingTracer(self.provider.get_tracer("convotel-properties"))
        self.tracing = Tracing(cast(Any, self.tracer), config or TraceConfig())

    def invalid(self) -> list[str]:
        invalid: list[str] = invalid_attributes(self.tracer.recorded)
        return invalid


def fails(step: Callable[[], object]) -> bool:
    """Whether running ``step`` (and exhausting what it returns, if iterable) raises."""
    try:
        result = step()
        if isinstance(result, Iterator):
            for _ in result:
                pass
    except Exception:  # noqa: BLE001 - any failure counts
        return True
    return False


@contextmanager
def caller_context_kept() -> Iterator[None]:
    before = context_api.get_current()
    try:
        yield
    finally:
        after = context_api.get_current()
        context_api.attach(before)  # keep one leak from cascading into the next examples
    assert after == before, "convotel changed the caller's context"
