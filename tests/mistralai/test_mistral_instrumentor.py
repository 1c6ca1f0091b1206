"""Instrumentor lifecycle, the SDK's own telemetry hook, and the opentelemetry-instrument CLI."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mistral_cassettes import CASSETTE_DIR, cassette, replay
from mistral_spans import CHAT_MODEL, HELLO, attributes, only_span
from mistralai.client import Mistral
from mistralai.client.chat import Chat
from mistralai.client.conversations import Conversations
from openinference.semconv.trace import SpanAttributes
from opentelemetry import trace as trace_api
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from convotel.mistralai import MistralAIInstrumentor

WRAPPED = [
    (Chat, "complete"),
    (Chat, "stream_async"),
    (Conversations, "restart_stream_async"),
]


def test_uninstrument_restores_the_original_methods(tracer_provider: TracerProvider) -> None:
    originals = [vars(owner)[name] for owner, name in WRAPPED]
    instrumentor = MistralAIInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    try:
        assert all(
            vars(owner)[name] is not original
            for (owner, name), original in zip(WRAPPED, originals, strict=True)
        )
    finally:
        instrumentor.uninstrument()
    assert all(
        vars(owner)[name] is original
        for (owner, name), original in zip(WRAPPED, originals, strict=True)
    )


def test_instrumenting_twice_records_one_span_per_call(
    instrumentor: MistralAIInstrumentor,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
) -> None:
    MistralAIInstrumentor().instrument(tracer_provider=tracer_provider)
    instrumentor.instrument(tracer_provider=tracer_provider)
    with replay.use_cassette(cassette("chat_complete")):
        Mistral(api_key="test-key").chat.complete(
            model=CHAT_MODEL, messages=HELLO, temperature=0.2, max_tokens=64
        )
    assert only_span(span_exporter).name == "mistralai.chat.complete"


def test_uninstrumented_calls_record_nothing(
    instrumentor: MistralAIInstrumentor, span_exporter: InMemorySpanExporter
) -> None:
    instrumentor.uninstrument()
    with replay.use_cassette(cassette("chat_complete")):
        Mistral(api_key="test-key").chat.complete(
            model=CHAT_MODEL, messages=HELLO, temperature=0.2, max_tokens=64
        )
    assert span_exporter.get_finished_spans() == ()


def chat_once(client: Mistral) -> None:
    with replay.use_cassette(cassette("chat_complete")):
        client.chat.complete(model=CHAT_MODEL, messages=HELLO, temperature=0.2, max_tokens=64)


def use_global_sdk_telemetry(client: Mistral) -> None:
    """Switch the SDK's own hook to the global provider (always on before 2.10; opt-in after)."""
    try:
        from mistralai.extra.observability.telemetry import configure_telemetry
    except ImportError:
        return
    configure_telemetry(client, provider="global")


def test_sdk_own_span_is_not_a_duplicate_of_the_convotel_span(
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(trace_api, "get_tracer_provider", lambda: tracer_provider)
    client = Mistral(api_key="test-key")
    use_global_sdk_telemetry(client)

    chat_once(client)  # uninstrumented: the SDK hook is really on and traces the call
    [sdk_span] = span_exporter.get_finished_spans()
    assert sdk_span.name == f"chat {CHAT_MODEL}"
    span_exporter.clear()

    instrumentor = MistralAIInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    try:
        chat_once(client)
    finally:
        instrumentor.uninstrument()
    span = only_span(span_exporter)
    assert span.name == "mistralai.chat.complete"
    assert attributes(span)[SpanAttributes.LLM_TOKEN_COUNT_TOTAL] == 13


def test_sdk_telemetry_to_a_provider_of_its_own_is_left_alone(
    instrumentor: MistralAIInstrumentor, span_exporter: InMemorySpanExporter
) -> None:
    telemetry = pytest.importorskip("mistralai.extra.observability.telemetry")
    sdk_exporter = InMemorySpanExporter()
    sdk_provider = TracerProvider()
    sdk_provider.add_span_processor(SimpleSpanProcessor(sdk_exporter))
    client = Mistral(api_key="test-key")
    telemetry.configure_telemetry(client, provider=sdk_provider)

    chat_once(client)

    ours = only_span(span_exporter)
    [theirs] = sdk_exporter.get_finished_spans()
    assert theirs.parent is not None
    assert theirs.parent.span_id == ours.context.span_id


CLI_SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
from mistral_cassettes import replay
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from mistralai.client import Mistral
from convotel import using_session

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
with using_session("cli-session"), replay.use_cassette("chat_complete.yaml"):
    Mistral(api_key="test-key").chat.complete(
        model="mistral-small-latest",
        messages=[{{"role": "user", "content": "Say hello in French."}}],
        temperature=0.2,
        max_tokens=64,
    )
print(json.dumps([[s.name, dict(s.attributes)] for s in exporter.get_finished_spans()]))
"""


def test_opentelemetry_instrument_cli_loads_the_instrumentor(
    run_under_opentelemetry_instrument: Callable[..., Any],
) -> None:
    program = CLI_SCRIPT.format(tests=str(Path(__file__).parent))
    done = run_under_opentelemetry_instrument(program, cwd=CASSETTE_DIR)
    assert done.returncode == 0, textwrap.shorten(done.stderr, 2000)
    spans = json.loads(done.stdout.strip().splitlines()[-1])
    mistral = [attrs for name, attrs in spans if name == "mistralai.chat.complete"]
    assert len(mistral) == 1, spans
    assert mistral[0][SpanAttributes.SESSION_ID] == "cli-session"
