"""Fixtures for the DSPy instrumentor tests: a loopback LM server, an instrumented tracer."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Before DSPy/LiteLLM are imported: never fetch LiteLLM's model cost map, keep DSPy's disk cache
# out of the home directory.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
if "DSPY_CACHEDIR" not in os.environ:
    os.environ["DSPY_CACHEDIR"] = tempfile.mkdtemp(prefix="convotel-dspy-cache-")
    atexit.register(shutil.rmtree, os.environ["DSPY_CACHEDIR"], ignore_errors=True)
os.environ.pop("OPENAI_API_BASE", None)
os.environ.pop("OPENAI_BASE_URL", None)

sys.path.insert(0, str(Path(__file__).resolve().parent))  # helper modules beside this file

import dspy
import pytest
import vcr
from dspy_loopback import LoopbackServer, user_fields
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from convotel.dspy import DSPyInstrumentor

CASSETTES = Path(__file__).resolve().parents[2] / "cassettes" / "dspy"


@pytest.fixture(scope="session")
def server() -> Iterator[LoopbackServer]:
    running = LoopbackServer().start()
    yield running
    running.stop()


@pytest.fixture
def llm_server(server: LoopbackServer) -> Iterator[LoopbackServer]:
    server.reset()
    yield server
    server.reset()


@pytest.fixture
def lm(llm_server: LoopbackServer) -> dspy.LM:
    """An uncached LM on DSPy's default engine, answering from the loopback server."""
    return dspy.LM(
        "openai/gpt-4o-mini",
        api_base=llm_server.base_url,
        api_key="sk-test-secret",
        cache=False,
        num_retries=0,
        temperature=0.2,
        max_tokens=256,
    )


@pytest.fixture
def instrumented(tracer_provider: TracerProvider) -> Iterator[DSPyInstrumentor]:
    instrumentor = DSPyInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    yield instrumentor
    instrumentor.uninstrument()


@pytest.fixture
def spans(
    span_exporter: InMemorySpanExporter, instrumented: DSPyInstrumentor
) -> InMemorySpanExporter:
    """The exporter of an instrumented tracer provider."""
    return span_exporter


def _chat_fields(recorded: Any, expected: Any) -> None:
    """vcrpy matcher: same model and the same ``[[ ## field ## ]]`` values in the user message."""
    sent, stored = json.loads(recorded.body or b"{}"), json.loads(expected.body or b"{}")
    assert sent.get("model") == stored.get("model")
    assert user_fields(sent) == user_fields(stored)
    assert sent.get("input") == stored.get("input")


@pytest.fixture
def cassettes() -> vcr.VCR:
    """A replay-only VCR over ``cassettes/dspy`` (a request with no recording fails the call)."""
    replay = vcr.VCR(
        cassette_library_dir=str(CASSETTES),
        record_mode="none",
        match_on=["method", "scheme", "host", "path", "chat_fields"],
    )
    replay.register_matcher("chat_fields", _chat_fields)
    return replay
