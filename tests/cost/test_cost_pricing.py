"""convotel.cost: the per-token fast path prices exactly as genai-prices does, once per model."""

from __future__ import annotations

import pytest
from openinference.semconv.trace import OpenInferenceSpanKindValues, SpanAttributes
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from convotel import cost
from convotel.call_span import DEFERRED_TO_PROVIDER, Tracing
from convotel.cost import PRICES_VERSION, cost_attributes

genai_prices = pytest.importorskip("genai_prices")

LLM = OpenInferenceSpanKindValues.LLM
USAGES = [
    {"input_tokens": 24, "output_tokens": 8},
    {"input_tokens": 1200, "cache_read_tokens": 1024, "output_tokens": 300},
    {"input_tokens": 5000, "output_tokens": 900, "output_reasoning_tokens": 700},
    {
        "input_tokens": 3000,
        "cache_write_tokens": 1000,
        "cache_read_tokens": 500,
        "output_tokens": 9,
    },
]
SPAN_KEYS = {
    "input_tokens": SpanAttributes.LLM_TOKEN_COUNT_PROMPT,
    "output_tokens": SpanAttributes.LLM_TOKEN_COUNT_COMPLETION,
    "cache_read_tokens": SpanAttributes.LLM_TOKEN_COUNT_PROMPT_DETAILS_CACHE_READ,
    "cache_write_tokens": SpanAttributes.LLM_TOKEN_COUNT_PROMPT_DETAILS_CACHE_WRITE,
    "output_reasoning_tokens": SpanAttributes.LLM_TOKEN_COUNT_COMPLETION_DETAILS_REASONING,
}


def span_attributes(provider: str, model: str, usage: dict[str, int]) -> dict[str, object]:
    found: dict[str, object] = {
        SpanAttributes.LLM_PROVIDER: provider,
        SpanAttributes.LLM_MODEL_NAME: model,
    }
    found.update({SPAN_KEYS[key]: value for key, value in usage.items()})
    return found


@pytest.mark.parametrize("usage", USAGES)
@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("openai", "gpt-4o-mini-2024-07-18"),
        ("openai", "o4-mini"),
        ("openai", "gpt-4.1"),
        ("azure", "gpt-4o-2024-11-20"),
        ("mistralai", "mistral-medium-2508"),
        ("mistralai", "codestral-latest"),
        ("mistralai", "mistral-small-latest"),  # prices by start date
        ("anthropic", "claude-sonnet-4-5"),  # tiered: the library's full calculation
        ("google", "gemini-2.5-pro"),
        ("deepseek", "deepseek-chat"),
    ],
)
def test_cost_equals_genai_prices_calc_price(
    provider: str, model: str, usage: dict[str, int]
) -> None:
    try:
        reference = genai_prices.calc_price(
            genai_prices.Usage(**usage), model, provider_id=provider
        )
    except (LookupError, ValueError):
        assert not cost_attributes(span_attributes(provider, model, usage))
        return
    found = cost_attributes(span_attributes(provider, model, usage))
    # The first call may take the slow path, the second the fast one (a remembered price): same.
    assert cost_attributes(span_attributes(provider, model, usage)) == found
    assert found[SpanAttributes.LLM_COST_PROMPT] == pytest.approx(
        float(reference.input_price), rel=1e-9, abs=1e-12
    )
    assert found[SpanAttributes.LLM_COST_COMPLETION] == pytest.approx(
        float(reference.output_price), rel=1e-9, abs=1e-12
    )
    assert found[SpanAttributes.LLM_COST_TOTAL] == pytest.approx(
        float(reference.total_price), rel=1e-9, abs=1e-12
    )
    for key in (SpanAttributes.LLM_COST_PROMPT, SpanAttributes.LLM_COST_TOTAL):
        assert found[key] == round(found[key], 12)  # rounded: 5.7e-06, not 5.699999999999999e-06


@pytest.mark.parametrize(
    "attributes",
    [
        span_attributes("ollama", "llama3.2", {"input_tokens": 10, "output_tokens": 2}),
        span_attributes("openai", "acme-chat-7b", {"input_tokens": 10, "output_tokens": 2}),
        span_attributes("openai", "gpt-4o-mini", {}),  # no token counts
        {SpanAttributes.LLM_MODEL_NAME: "gpt-4o-mini", SpanAttributes.LLM_TOKEN_COUNT_PROMPT: 9},
        span_attributes("openai", "gpt-4o-mini", {"input_tokens": -5, "output_tokens": 0}),
    ],
    ids=["unknown-provider", "unknown-model", "no-tokens", "no-provider", "negative-tokens"],
)
def test_what_cannot_be_priced_gets_no_cost(attributes: dict[str, object]) -> None:
    assert cost_attributes(attributes) == {}


def test_provider_falls_back_to_llm_system() -> None:
    attributes = span_attributes("", "gpt-4o-mini", {"input_tokens": 10, "output_tokens": 2})
    attributes[SpanAttributes.LLM_SYSTEM] = "openai"
    assert cost_attributes(attributes)[SpanAttributes.LLM_COST_TOTAL] > 0


def test_price_entry_is_looked_up_once_per_provider_and_model_and_the_cache_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cost, "_entries", {})
    monkeypatch.setattr(cost, "_flat_prices", {})
    monkeypatch.setattr(cost, "_MAX_ENTRIES", 3)
    looked_up: list[str] = []
    snapshot = genai_prices.data_snapshot.get_snapshot()
    original = snapshot.find_provider_model

    def counting(model: str, *args: object) -> object:
        looked_up.append(model)
        return original(model, *args)

    monkeypatch.setattr(snapshot, "find_provider_model", counting)
    usage = {"input_tokens": 10, "output_tokens": 2}
    for _ in range(5):
        cost_attributes(span_attributes("openai", "gpt-4o-mini", usage))
    assert looked_up == ["gpt-4o-mini"]
    for index in range(10):
        cost_attributes(span_attributes("openai", f"unknown-{index}", usage))
    assert len(cost._entries) <= 3
    for model in ("gpt-4o", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "gpt-4o-mini"):
        assert cost_attributes(span_attributes("openai", model, usage))
    assert 0 < len(cost._flat_prices) <= 3  # the fast path's table is bounded too


def test_prices_version_names_the_bundled_data() -> None:
    attributes = span_attributes("openai", "gpt-4o-mini", {"input_tokens": 1, "output_tokens": 1})
    assert cost_attributes(attributes)[PRICES_VERSION] == (
        f"genai-prices {genai_prices.__version__}"
    )
    assert genai_prices.data_snapshot._custom_snapshot is None  # nothing fetched


def test_framework_span_deferring_to_a_provider_span_records_no_cost(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    tracing = Tracing(tracer_provider.get_tracer("test"))
    usage = span_attributes("openai", "gpt-4o-mini", {"input_tokens": 100, "output_tokens": 20})
    framework = tracing.start("framework.llm", LLM, framework=True)
    provider = tracing.start("openai.chat", LLM, parent=framework.context)
    provider.end(attributes=usage.items())
    framework.end(attributes=usage.items())
    spans = {span.name: dict(span.attributes or {}) for span in span_exporter.get_finished_spans()}
    assert spans["openai.chat"][SpanAttributes.LLM_COST_TOTAL] > 0
    assert spans["framework.llm"][DEFERRED_TO_PROVIDER] is True
    assert not [key for key in spans["framework.llm"] if "cost" in key]


def test_a_model_name_that_may_have_been_truncated_is_not_priced() -> None:
    model = "gpt-4o-mini-2024-07-18"
    attributes = span_attributes("openai", model, {"input_tokens": 10, "output_tokens": 2})
    assert cost_attributes(attributes, truncated_at=len(model) + 1)
    assert cost_attributes(attributes, truncated_at=len(model)) == {}


def test_prices_by_start_date_are_remembered_until_the_next_price_comes_into_force(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from datetime import date, datetime, time, timezone

    from genai_prices.types import (
        ConditionalPrice,
        ModelPrice,
        StartDateConstraint,
        TimeOfDateConstraint,
    )

    now = datetime(2026, 12, 6, 15, 0, tzinfo=timezone.utc)
    old, new = ModelPrice(input_mtok=1), ModelPrice(input_mtok=2)
    by_date = [
        ConditionalPrice(prices=old),
        ConditionalPrice(constraint=StartDateConstraint(date(2026, 1, 1)), prices=old),
        ConditionalPrice(constraint=StartDateConstraint(date(2027, 2, 1)), prices=new),
        ConditionalPrice(constraint=StartDateConstraint(date(2027, 1, 1)), prices=new),
    ]
    next_midnight = datetime(2027, 1, 1, tzinfo=timezone.utc).timestamp()
    assert cost._in_force_until(by_date, now) == next_midnight
    assert cost._in_force_until(by_date[:2], now) == float("inf")
    assert cost._in_force_until(old, now) == float("inf")
    off_peak = TimeOfDateConstraint(time(16, 30), time(0, 30))
    assert (
        cost._in_force_until([*by_date, ConditionalPrice(constraint=off_peak, prices=new)], now)
        is None
    )

    # A remembered price whose time is up is looked up again (here: a bogus one is replaced).
    monkeypatch.setattr(cost, "_flat_prices", {})
    usage = {"input_tokens": 1000, "output_tokens": 100}
    attributes = span_attributes("mistralai", "mistral-small-latest", usage)
    expected = cost_attributes(attributes)
    key = ("mistralai", "mistral-small-latest")
    rates, version, until = cost._flat_prices[key]
    assert until > now.timestamp()
    bogus = tuple((rate_in * 10, rate_out * 10) for rate_in, rate_out in rates)
    cost._flat_prices[key] = (bogus, version, until)
    assert cost_attributes(attributes) != expected  # the remembered price is used while in force
    cost._flat_prices[key] = (bogus, version, 0.0)  # in force until 1970
    assert cost_attributes(attributes) == expected
