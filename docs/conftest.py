"""Runs every Python example of the guides (pytest-markdown-docs: ``pytest --markdown-docs docs``).

The examples use the SDKs as an application would (``openai.OpenAI()`` reads ``OPENAI_API_KEY``
and ``OPENAI_BASE_URL``); here those point at the demo's loopback server, which answers like the
OpenAI and Mistral APIs, so the examples run offline. Each example runs in a fresh working
directory and leaves no instrumentor on.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from convotel.demo.fake_server import FakeLLMServer
from convotel.testing import discover_instrumentors


@pytest.fixture(scope="session")
def loopback_server() -> Iterator[FakeLLMServer]:
    server = FakeLLMServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def offline_example(
    loopback_server: FakeLLMServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-docs")
    monkeypatch.setenv("OPENAI_BASE_URL", loopback_server.openai_base_url)
    monkeypatch.setenv("MISTRAL_API_KEY", "docs")
    monkeypatch.setenv("MISTRAL_SERVER_URL", loopback_server.mistral_server_url)
    monkeypatch.setenv("CONVOTEL_STORE", str(tmp_path / "spans.sqlite3"))
    yield
    instrumentors, _ = discover_instrumentors()
    for instrumentor in instrumentors:
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
