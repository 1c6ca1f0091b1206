"""Fixtures for the Mistral tests: an instrumented SDK replaying cassettes, finished spans."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mistralai.client import Mistral
from opentelemetry.sdk.trace import TracerProvider

from convotel.mistralai import MistralAIInstrumentor

# Helper modules beside the tests (mistral_cassettes) under --import-mode=importlib.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def instrumentor(tracer_provider: TracerProvider) -> Iterator[MistralAIInstrumentor]:
    instrumentor = MistralAIInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    yield instrumentor
    instrumentor.uninstrument()


@pytest.fixture
def client(instrumentor: MistralAIInstrumentor) -> Mistral:
    """A client with the SDK's default transport (vcrpy patches it), created after instrument()."""
    return Mistral(api_key="test-key")
