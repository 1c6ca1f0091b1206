"""Fixtures shared by every test folder: an SDK tracer provider with an in-memory exporter."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from convotel import get_attributes_from_context
from convotel.propagation import SessionSpanProcessor

# Helper modules shared by several test folders (not tests/ itself: its folders are named like
# the SDKs, and would shadow an SDK that is not installed).
sys.path.insert(0, str(Path(__file__).parent / "support"))


@pytest.fixture
def span_exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer_provider(span_exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    yield provider
    provider.shutdown()


@pytest.fixture
def processor_options() -> dict[str, bool]:
    """Options of ``session_tracer_provider``'s ``SessionSpanProcessor`` (override to change)."""
    return {}


@pytest.fixture
def session_tracer_provider(
    span_exporter: InMemorySpanExporter, processor_options: dict[str, bool]
) -> Iterator[TracerProvider]:
    """A provider as a web service sets it up: the session processor first, then export."""
    provider = TracerProvider()
    provider.add_span_processor(SessionSpanProcessor(**processor_options))
    provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    yield provider
    provider.shutdown()


@pytest.fixture
def tracer(tracer_provider: TracerProvider) -> trace_api.Tracer:
    """A tracer of the test's provider, as a web framework's instrumentation would use."""
    return tracer_provider.get_tracer("web-framework")


@pytest.fixture(autouse=True)
def _no_context_leaks() -> Iterator[None]:
    """Fail a test that leaves a span or a session/user id attached to the caller's context."""
    saved = context_api.get_current()
    span_before = trace_api.get_current_span()
    attributes_before = dict(get_attributes_from_context())
    yield
    span_after = trace_api.get_current_span()
    attributes_after = dict(get_attributes_from_context())
    context_api.attach(saved)  # one leak must not cascade into the next tests
    assert span_after is span_before, f"the test left span {span_after!r} current"
    assert attributes_after == attributes_before, f"the test left {attributes_after} set"


RunInstrumented = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture
def run_under_opentelemetry_instrument(tmp_path: Path) -> RunInstrumented:
    """Run a Python program under the ``opentelemetry-instrument`` CLI of this environment.

    The CLI loads every installed instrumentor from its entry point (as users run it); exporters
    are switched off so the program only prints what it saw.
    """
    cli = Path(sys.executable).with_name("opentelemetry-instrument")
    if not cli.exists():
        pytest.skip("opentelemetry-instrument is not installed beside this interpreter")

    def run(
        program: str,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        timeout: float = 240,
    ) -> subprocess.CompletedProcess[str]:
        script = tmp_path / "instrumented_program.py"
        script.write_text(program)
        environment = {
            **os.environ,
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            **(env or {}),
        }
        return subprocess.run(
            [str(cli), sys.executable, str(script)],
            capture_output=True,
            text=True,
            env=environment,
            cwd=cwd,
            timeout=timeout,
            check=False,
        )

    return run
