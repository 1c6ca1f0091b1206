"""instrument()/uninstrument() bookkeeping and the `opentelemetry-instrument` entry point."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

import openai
from openai.resources.chat.completions import AsyncCompletions, Completions
from openai.resources.embeddings import Embeddings
from openai_cassettes import replay
from openai_wire import BASIC_MESSAGES, CHAT_MODEL
from opentelemetry.instrumentation.dependencies import get_dependency_conflicts
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider

from convotel.openai import OpenAIInstrumentor

Finished = Callable[[], list[ReadableSpan]]


def ask(client: openai.OpenAI) -> object:
    return client.chat.completions.create(model=CHAT_MODEL, messages=BASIC_MESSAGES)


def test_uninstrument_restores_the_original_methods_exactly(
    tracer_provider: TracerProvider,
) -> None:
    originals = (Completions.create, AsyncCompletions.parse, Embeddings.create)
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    try:
        assert Completions.create is not originals[0]
    finally:
        instrumentor.uninstrument()
    assert (Completions.create, AsyncCompletions.parse, Embeddings.create) == originals
    assert all(
        a is b
        for a, b in zip(
            (Completions.create, AsyncCompletions.parse, Embeddings.create), originals, strict=True
        )
    )


def test_instrumenting_twice_traces_each_call_once(
    client: openai.OpenAI, tracer_provider: TracerProvider, finished: Finished
) -> None:
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    instrumentor.instrument(tracer_provider=tracer_provider)
    try:
        with replay("chat_basic", match_body=False):
            ask(client)
    finally:
        instrumentor.uninstrument()
    assert len(finished()) == 1


def test_no_spans_after_uninstrument(
    client: openai.OpenAI, tracer_provider: TracerProvider, finished: Finished
) -> None:
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    instrumentor.uninstrument()
    with replay("chat_basic", match_body=False):
        ask(client)
    assert finished() == []


def test_instrumented_library_requirement_has_no_extras_and_is_satisfied() -> None:
    requirements = OpenAIInstrumentor().instrumentation_dependencies()
    assert all("[" not in requirement for requirement in requirements)
    assert get_dependency_conflicts(requirements) is None


def test_entry_point_points_at_the_instrumentor() -> None:
    (entry_point,) = (
        ep
        for ep in entry_points(group="opentelemetry_instrumentor")
        if ep.value.startswith("convotel.openai")
    )
    assert entry_point.load() is OpenAIInstrumentor


APP = textwrap.dedent(
    """
    import json, openai, openai._base_client
    httpx2 = getattr(openai._base_client, "httpx2", None) or openai._base_client.httpx
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from convotel import using_session

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)

    body = {"id": "c", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "hi"}}]}
    transport = httpx2.MockTransport(lambda request: httpx2.Response(200, json=body))
    client = openai.OpenAI(api_key="sk-test", http_client=httpx2.Client(transport=transport))
    with using_session("cli-session"):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    print(json.dumps([[s.name, s.instrumentation_scope.name, s.attributes.get("session.id")]
                      for s in exporter.get_finished_spans()]))
    """
)


def test_opentelemetry_instrument_loads_the_instrumentor(
    run_under_opentelemetry_instrument: Callable[..., Any],
) -> None:
    result = run_under_opentelemetry_instrument(APP)
    assert result.returncode == 0, result.stderr
    spans = result.stdout.strip().splitlines()[-1]
    assert '["ChatCompletion", "convotel.openai", "cli-session"]' in spans


def test_methods_bound_while_instrumented_stop_tracing_after_uninstrument(
    client: openai.OpenAI, tracer_provider: TracerProvider, finished: Finished
) -> None:
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    raw = client.chat.completions.with_raw_response  # the SDK caches the bound wrapper here
    instrumentor.uninstrument()
    with replay("chat_basic", match_body=False):
        raw.create(model=CHAT_MODEL, messages=BASIC_MESSAGES).parse()
    assert finished() == []
