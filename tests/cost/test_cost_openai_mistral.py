"""LLM spans record their cost (``llm.cost.*``), priced by genai-prices, through the real SDKs."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import openai
import pytest
import vcr
from openinference.semconv.trace import SpanAttributes
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from convotel import TraceConfig
from convotel.cost import PRICES_VERSION
from convotel.mistralai import MistralAIInstrumentor
from convotel.openai import OpenAIInstrumentor

genai_prices = pytest.importorskip("genai_prices")
mistralai_client = pytest.importorskip("mistralai.client")

CASSETTES = Path(__file__).resolve().parents[2] / "cassettes"
_REPLAY = vcr.VCR(
    record_mode="none",
    match_on=("method", "scheme", "host", "port", "path", "query", "body"),
    decode_compressed_response=True,
)
MESSAGES = [
    {"role": "system", "content": "You are a terse geography tutor."},
    {"role": "user", "content": "What is the capital of France?"},
]
HELLO: Any = [{"role": "user", "content": "Say hello in French."}]
COST_KEYS = (SpanAttributes.LLM_COST_PROMPT, SpanAttributes.LLM_COST_COMPLETION)


def replay(folder: str, name: str) -> Any:
    return _REPLAY.use_cassette(str(CASSETTES / folder / f"{name}.yaml"))


def priced(model: str, provider: str, **usage: int) -> tuple[float, float, float]:
    """What genai-prices' own calc_price says (the reference the fast path must match)."""
    calculation = genai_prices.calc_price(genai_prices.Usage(**usage), model, provider_id=provider)
    return (
        float(calculation.input_price),
        float(calculation.output_price),
        float(calculation.total_price),
    )


def costs(attributes: Mapping[str, Any]) -> tuple[float, float, float]:
    return (
        attributes[SpanAttributes.LLM_COST_PROMPT],
        attributes[SpanAttributes.LLM_COST_COMPLETION],
        attributes[SpanAttributes.LLM_COST_TOTAL],
    )


def only_attributes(exporter: InMemorySpanExporter) -> Mapping[str, Any]:
    spans = exporter.get_finished_spans()
    assert len(spans) == 1, [span.name for span in spans]
    return spans[0].attributes or {}


@pytest.fixture
def openai_traced(tracer_provider: TracerProvider) -> Iterator[OpenAIInstrumentor]:
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, config=TraceConfig())
    yield instrumentor
    instrumentor.uninstrument()


@pytest.fixture
def mistral_traced(tracer_provider: TracerProvider) -> Iterator[MistralAIInstrumentor]:
    instrumentor = MistralAIInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    yield instrumentor
    instrumentor.uninstrument()


def test_openai_chat_span_records_its_cost_as_genai_prices_prices_it(
    openai_traced: OpenAIInstrumentor, span_exporter: InMemorySpanExporter
) -> None:
    with replay("openai", "chat_basic"):
        openai.OpenAI(api_key="sk-test").chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,  # type: ignore[arg-type]
            temperature=0.2,
            max_tokens=50,
            user="end-user-hash",
        )
    attributes = only_attributes(span_exporter)
    expected = priced("gpt-4o-mini-2024-07-18", "openai", input_tokens=24, output_tokens=8)
    assert costs(attributes) == pytest.approx(expected, rel=1e-9)
    assert attributes[SpanAttributes.LLM_COST_TOTAL] > 0
    assert attributes[PRICES_VERSION] == f"genai-prices {genai_prices.__version__}"


def test_cached_and_reasoning_tokens_are_priced_at_their_rates_with_details(
    openai_traced: OpenAIInstrumentor, span_exporter: InMemorySpanExporter
) -> None:
    with replay("openai", "chat_reasoning_cached"):
        openai.OpenAI(api_key="sk-test").chat.completions.create(
            model="o4-mini",
            messages=[{"role": "user", "content": "The answer to everything?"}],
            reasoning_effort="low",
        )
    attributes = only_attributes(span_exporter)
    usage = {"input_tokens": 1200, "cache_read_tokens": 1024, "output_tokens": 300}
    expected = priced("o4-mini-2025-04-16", "openai", **usage, output_reasoning_tokens=256)
    assert costs(attributes) == pytest.approx(expected, rel=1e-9)
    uncached = priced("o4-mini-2025-04-16", "openai", input_tokens=1200, output_tokens=300)
    assert attributes[SpanAttributes.LLM_COST_PROMPT] < uncached[0]  # the cache discount
    cache_read = priced("o4-mini", "openai", input_tokens=1024, cache_read_tokens=1024)[0]
    details = SpanAttributes.LLM_COST_PROMPT_DETAILS_CACHE_READ
    assert attributes[details] == pytest.approx(cache_read, rel=1e-9)
    reasoning = priced("o4-mini", "openai", output_tokens=256)[1]
    details = SpanAttributes.LLM_COST_COMPLETION_DETAILS_REASONING
    assert attributes[details] == pytest.approx(reasoning, rel=1e-9)


def test_streamed_chat_is_priced_from_the_usage_chunk(
    openai_traced: OpenAIInstrumentor, span_exporter: InMemorySpanExporter
) -> None:
    with replay("openai", "chat_stream_usage"):
        stream = openai.OpenAI(api_key="sk-test").chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Say hello."}],
            stream=True,
            stream_options={"include_usage": True},
        )
        for _ in stream:
            pass
    attributes = only_attributes(span_exporter)
    prompt = attributes[SpanAttributes.LLM_TOKEN_COUNT_PROMPT]
    completion = attributes[SpanAttributes.LLM_TOKEN_COUNT_COMPLETION]
    expected = priced(
        "gpt-4o-mini-2024-07-18", "openai", input_tokens=prompt, output_tokens=completion
    )
    assert costs(attributes) == pytest.approx(expected, rel=1e-9)


def test_unknown_model_gets_no_cost_attribute(
    openai_traced: OpenAIInstrumentor, span_exporter: InMemorySpanExporter
) -> None:
    with replay("cost", "openai_chat_unknown_model"):
        openai.OpenAI(api_key="sk-test").chat.completions.create(
            model="acme-chat-7b",
            messages=MESSAGES,  # type: ignore[arg-type]
            temperature=0.2,
            max_tokens=50,
            user="end-user-hash",
        )
    attributes = only_attributes(span_exporter)
    assert attributes[SpanAttributes.LLM_TOKEN_COUNT_TOTAL] == 32
    assert not [key for key in attributes if key.startswith("llm.cost")]
    assert PRICES_VERSION not in attributes


@pytest.mark.parametrize("how", ["config", "environment"])
def test_record_cost_off_records_no_cost(
    how: str,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if how == "environment":
        monkeypatch.setenv("CONVOTEL_RECORD_COST", "false")
    config = TraceConfig(record_cost=False) if how == "config" else TraceConfig()
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, config=config)
    try:
        with replay("openai", "chat_basic"):
            openai.OpenAI(api_key="sk-test").chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,  # type: ignore[arg-type]
                temperature=0.2,
                max_tokens=50,
                user="end-user-hash",
            )
    finally:
        instrumentor.uninstrument()
    attributes = only_attributes(span_exporter)
    assert attributes[SpanAttributes.LLM_TOKEN_COUNT_TOTAL] == 32
    assert not [key for key in attributes if key.startswith(("llm.cost", "convotel.cost"))]


def test_mistral_chat_is_priced_under_mistrals_provider_name(
    mistral_traced: MistralAIInstrumentor, span_exporter: InMemorySpanExporter
) -> None:
    with replay("mistralai", "chat_complete"):
        mistralai_client.Mistral(api_key="test-key").chat.complete(
            model="mistral-small-latest", messages=HELLO, temperature=0.2, max_tokens=64
        )
    attributes = only_attributes(span_exporter)
    assert attributes[SpanAttributes.LLM_PROVIDER] == "mistralai"
    expected = priced("mistral-small-latest", "mistral", input_tokens=9, output_tokens=4)
    assert costs(attributes) == pytest.approx(expected, rel=1e-9)


async def test_mistral_async_stream_is_priced_from_its_last_chunk(
    mistral_traced: MistralAIInstrumentor, span_exporter: InMemorySpanExporter
) -> None:
    with replay("mistralai", "chat_stream"):
        client = mistralai_client.Mistral(api_key="test-key")
        stream = await client.chat.stream_async(model="mistral-small-latest", messages=HELLO)
        async for _ in stream:
            pass
    attributes = only_attributes(span_exporter)
    expected = priced("mistral-small-latest", "mistral", input_tokens=9, output_tokens=4)
    assert costs(attributes) == pytest.approx(expected, rel=1e-9)
