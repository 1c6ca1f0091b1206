"""Fixtures for the web-service tests: real uvicorn/FastAPI and WSGI servers on 127.0.0.1 under
OpenTelemetry's own server instrumentation, the OpenAI SDK against the loopback LLM server, and a
tracer provider with convotel's SessionSpanProcessor."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider

from convotel.demo.fake_server import FakeLLMServer
from convotel.openai import OpenAIInstrumentor

sys.path.insert(0, str(Path(__file__).parent))  # the helper modules beside this file


@pytest.fixture(scope="module")
def llm_server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server


@pytest.fixture
def web_provider(session_tracer_provider: TracerProvider) -> TracerProvider:
    """A provider as a web service sets it up: session processor first, then export."""
    return session_tracer_provider


@pytest.fixture
def openai_instrumented(web_provider: TracerProvider) -> Iterator[OpenAIInstrumentor]:
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=web_provider)
    yield instrumentor
    instrumentor.uninstrument()
