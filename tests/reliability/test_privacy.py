"""Secrets never reach a span, and every ``TraceConfig`` hide option holds on every adapter.

Each adapter runs its representative calls (``reliability_adapters.run_adapter``: chats with a
system prompt and images, a stream, a tool call, embeddings, a failed call, retrieval...) with
credentials in every place applications put them: API keys as arguments and in the environment,
``Authorization``/``api-key``/``Cookie`` headers as client defaults and per call, proxy and
base-URL credentials, secret query and body extras. No span name, status, attribute, event or
event attribute may hold any of them.

The hide options are checked against a run with nothing hidden: an option drops or redacts
exactly the attributes it names (``__REDACTED__`` where the core redacts) and leaves every other
attribute as it was; ``hide_inputs``/``hide_outputs`` also leave no trace of the hidden texts in
any other attribute.
"""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from openinference.semconv.trace import (
    EmbeddingAttributes,
    RerankerAttributes,
    SpanAttributes,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode
from reliability_adapters import (
    ADAPTERS,
    API_KEY,
    API_KEY_HEADER,
    BEARER_TOKEN,
    COOKIE,
    DEFAULT_HEADER_SECRET,
    QUERY_SECRET,
    QUESTION,
    SECRETS,
    SENT_REQUESTS,
    SYSTEM_PROMPT,
    URL_PASSWORD,
    WEATHER_TOOL,
    leaked_secrets,
    recorded_texts,
    run_adapter,
)

from convotel import REDACTED_VALUE, TraceConfig

# --- secrets ---------------------------------------------------------------------------------


@functools.cache
def spans_of(adapter: str, config: TraceConfig | None = None) -> tuple[ReadableSpan, ...]:
    """The finished spans of ``adapter``'s representative calls (one run per adapter/config)."""
    return run_adapter(adapter, config or TraceConfig())


@pytest.mark.parametrize("genai_names", [False, True], ids=["openinference", "genai-too"])
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_no_credential_reaches_any_span_event_or_status(adapter: str, genai_names: bool) -> None:
    spans = spans_of(adapter, TraceConfig(enable_genai_semconv=genai_names))

    assert len(spans) >= 5, [span.name for span in spans]
    if adapter in ("openai", "mistralai"):  # a rejected call: its exception event is scanned too
        assert any(event.name == "exception" for span in spans for event in span.events)
    assert leaked_secrets(spans) == []


def test_the_secrets_were_really_sent_by_the_sdks() -> None:
    """The scan above means something only if the SDKs used the credentials on the wire."""
    SENT_REQUESTS.clear()
    run_adapter("openai")
    run_adapter("mistralai")
    sent = [(url, headers) for _, url, headers in SENT_REQUESTS]

    url_credentials = "Basic " + base64.b64encode(f"convotel:{URL_PASSWORD}".encode()).decode()
    openai_chat = next(headers for url, headers in sent if "api.openai.example" in url)
    assert openai_chat["authorization"] == url_credentials  # the base URL's user info wins
    assert COOKIE in openai_chat["cookie"]
    assert openai_chat["x-api-key"] == DEFAULT_HEADER_SECRET
    assert any(QUERY_SECRET in url for url, _ in sent)
    azure = next(headers for url, headers in sent if "azure" in url)
    assert azure["authorization"] == f"Bearer {BEARER_TOKEN}"
    assert azure["api-key"] == API_KEY_HEADER  # the per-call header wins over the client's key
    mistral = next(headers for url, headers in sent if "api.mistral.example" in url)
    assert mistral["authorization"] == url_credentials
    assert COOKIE in mistral["cookie"]


def test_the_scan_finds_a_secret_in_a_name_status_attribute_or_event() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("scan")
    with tracer.start_as_current_span(f"call {API_KEY}"):
        pass
    with tracer.start_as_current_span("status") as span:
        span.set_status(Status(StatusCode.ERROR, f"denied for {COOKIE}"))
    with tracer.start_as_current_span("attribute") as span:
        span.set_attribute("tags", ["a", BEARER_TOKEN])
    with tracer.start_as_current_span("event") as span:
        span.add_event("retry", {"url": f"https://x?key={QUERY_SECRET}"})

    found = leaked_secrets(exporter.get_finished_spans())
    assert {finding.split(":")[0] for finding in found} == {
        f"call {API_KEY}",
        "status",
        "attribute",
        "event",
    }


# --- hide options ----------------------------------------------------------------------------

Rule = Callable[[str, Any], bool]


def _never(key: str, value: Any) -> bool:
    return False


def _prefixed(*prefixes: str) -> Rule:
    return lambda key, value: key.startswith(prefixes)


def _suffixed(prefix: str, *suffixes: str) -> Rule:
    return lambda key, value: key.startswith(prefix) and key.endswith(suffixes)


def _any_of(*rules: Rule) -> Rule:
    return lambda key, value: any(rule(key, value) for rule in rules)


def _key(*names: str) -> Rule:
    return lambda key, value: key in names


INPUTS = SpanAttributes.LLM_INPUT_MESSAGES
OUTPUTS = SpanAttributes.LLM_OUTPUT_MESSAGES
MESSAGE_TEXT = (".message.content", ".message_content.text")
IMAGE_URL = ".message_content.image.image.url"
EMBEDDINGS = SpanAttributes.EMBEDDING_EMBEDDINGS
DOCUMENT_TEXTS = (".document.content", ".document.metadata")
#: Values that differ between two runs of the same calls.
VOLATILE = re.compile(
    r"convotel\.stream\.time_to_first_token_ms|retrieval\.documents\.\d+\.document\.id"
)


@dataclass(frozen=True)
class Hiding:
    """A hide option: the attributes it drops, those it redacts, the texts that must vanish
    (from what ``scanned`` names: a span and where in it, by default everywhere)."""

    config: TraceConfig
    dropped: Rule = _never
    redacted: Rule = _never
    hidden_texts: Callable[[Sequence[ReadableSpan]], set[str]] = field(
        default=lambda baseline: set()
    )
    scanned: Callable[[ReadableSpan, str], bool] = lambda span, where: True


def _output_texts(baseline: Sequence[ReadableSpan]) -> set[str]:
    """Every answer text the unhidden run recorded (``output.value`` and output messages)."""
    texts = set()
    for span in baseline:
        for key, value in (span.attributes or {}).items():
            is_output = key == SpanAttributes.OUTPUT_VALUE or (
                key.startswith(OUTPUTS) and key.endswith(MESSAGE_TEXT)
            )
            if is_output and isinstance(value, str) and len(value) >= 4:
                texts.add(value)
    return texts


def _embedded_texts(baseline: Sequence[ReadableSpan]) -> set[str]:
    """Every text the unhidden run recorded as embedded (``embedding.embeddings.*.text``)."""
    return {
        value
        for span in baseline
        for key, value in (span.attributes or {}).items()
        if key.startswith(EMBEDDINGS)
        and key.endswith(EmbeddingAttributes.EMBEDDING_TEXT)
        and isinstance(value, str)
    }


HIDINGS = {
    "hide_inputs": Hiding(
        TraceConfig(hide_inputs=True),
        dropped=_any_of(
            _key(SpanAttributes.INPUT_MIME_TYPE),
            _prefixed(
                INPUTS, SpanAttributes.LLM_TOOLS, RerankerAttributes.RERANKER_INPUT_DOCUMENTS
            ),
        ),
        redacted=_any_of(
            _key(
                SpanAttributes.INPUT_VALUE,
                SpanAttributes.LLM_PROMPT_TEMPLATE_VARIABLES,
                RerankerAttributes.RERANKER_QUERY,
            ),
            _prefixed(SpanAttributes.LLM_PROMPTS),
            _suffixed(EMBEDDINGS, EmbeddingAttributes.EMBEDDING_TEXT),
        ),
        hidden_texts=lambda baseline: {
            QUESTION,
            SYSTEM_PROMPT,
            WEATHER_TOOL["function"]["description"],
            "Say this is a test",
            "def add(a, b):",
        },
    ),
    "hide_outputs": Hiding(
        TraceConfig(hide_outputs=True),
        dropped=_any_of(
            _key(SpanAttributes.OUTPUT_MIME_TYPE),
            _prefixed(OUTPUTS, RerankerAttributes.RERANKER_OUTPUT_DOCUMENTS),
        ),
        redacted=_any_of(
            _key(SpanAttributes.OUTPUT_VALUE),
            _prefixed(SpanAttributes.LLM_CHOICES),
            _suffixed(SpanAttributes.RETRIEVAL_DOCUMENTS, *DOCUMENT_TEXTS),
        ),
        hidden_texts=_output_texts,
    ),
    "hide_input_messages": Hiding(TraceConfig(hide_input_messages=True), dropped=_prefixed(INPUTS)),
    "hide_output_messages": Hiding(
        TraceConfig(hide_output_messages=True), dropped=_prefixed(OUTPUTS)
    ),
    "hide_input_text": Hiding(
        TraceConfig(hide_input_text=True), redacted=_suffixed(INPUTS, *MESSAGE_TEXT)
    ),
    "hide_output_text": Hiding(
        TraceConfig(hide_output_text=True), redacted=_suffixed(OUTPUTS, *MESSAGE_TEXT)
    ),
    "hide_input_images": Hiding(
        TraceConfig(hide_input_images=True), dropped=_suffixed(INPUTS, IMAGE_URL)
    ),
    "hide_embedding_vectors": Hiding(
        TraceConfig(hide_embedding_vectors=True),
        redacted=_suffixed(EMBEDDINGS, EmbeddingAttributes.EMBEDDING_VECTOR),
    ),
    "hide_embeddings_vectors": Hiding(
        TraceConfig(hide_embeddings_vectors=True),
        redacted=_suffixed(EMBEDDINGS, EmbeddingAttributes.EMBEDDING_VECTOR),
    ),
    "hide_embeddings_text": Hiding(
        TraceConfig(hide_embeddings_text=True),
        redacted=_suffixed(EMBEDDINGS, EmbeddingAttributes.EMBEDDING_TEXT),
        hidden_texts=_embedded_texts,
        # An EMBEDDING span's other attributes; its input.value stays, as with OpenInference
        # (hide_inputs hides it), and other spans may carry the texts as documents or context.
        scanned=lambda span, where: (
            (span.attributes or {}).get(SpanAttributes.OPENINFERENCE_SPAN_KIND) == "EMBEDDING"
            and where != SpanAttributes.INPUT_VALUE
        ),
    ),
    "hide_llm_tools": Hiding(
        TraceConfig(hide_llm_tools=True),
        dropped=_prefixed(SpanAttributes.LLM_TOOLS),
        hidden_texts=lambda baseline: {WEATHER_TOOL["function"]["description"]},
    ),
    "hide_prompts": Hiding(
        TraceConfig(hide_prompts=True), redacted=_prefixed(SpanAttributes.LLM_PROMPTS)
    ),
    "hide_choices": Hiding(
        TraceConfig(hide_choices=True), redacted=_prefixed(SpanAttributes.LLM_CHOICES)
    ),
    "hide_retrieval_documents": Hiding(
        TraceConfig(hide_retrieval_documents=True),
        redacted=_suffixed(SpanAttributes.RETRIEVAL_DOCUMENTS, *DOCUMENT_TEXTS),
    ),
    "hide_llm_invocation_parameters": Hiding(
        TraceConfig(hide_llm_invocation_parameters=True),
        dropped=_key(SpanAttributes.LLM_INVOCATION_PARAMETERS),
    ),
    "base64_image_max_length": Hiding(
        TraceConfig(base64_image_max_length=100),
        redacted=lambda key, value: (
            key.endswith(IMAGE_URL) and str(value).startswith("data:") and len(value) > 100
        ),
    ),
}
MAX_VALUE_LENGTH = 16


def _attributes(span: ReadableSpan) -> dict[str, Any]:
    return {key: value for key, value in (span.attributes or {}).items() if not VOLATILE.match(key)}


def _paired(
    baseline: Sequence[ReadableSpan], hidden: Sequence[ReadableSpan]
) -> list[tuple[ReadableSpan, ReadableSpan]]:
    assert [span.name for span in hidden] == [span.name for span in baseline]
    return list(zip(baseline, hidden, strict=True))


@pytest.mark.parametrize("option", sorted(HIDINGS))
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_hide_option_drops_or_redacts_exactly_what_it_names(adapter: str, option: str) -> None:
    hiding = HIDINGS[option]
    baseline = spans_of(adapter)
    affected = [
        key
        for span in baseline
        for key, value in _attributes(span).items()
        if hiding.dropped(key, value) or hiding.redacted(key, value)
    ]
    if not affected:
        pytest.skip(f"the {adapter} adapter records nothing {option} hides")

    hidden = spans_of(adapter, hiding.config)

    for before, after in _paired(baseline, hidden):
        expected = {}
        for key, value in _attributes(before).items():
            if hiding.dropped(key, value):
                continue
            expected[key] = REDACTED_VALUE if hiding.redacted(key, value) else value
        assert _attributes(after) == expected, before.name
    leaks = [
        f"{span.name}: {where}"
        for span in hidden
        for where, text in recorded_texts(span)
        if hiding.scanned(span, where)
        for secret in hiding.hidden_texts(baseline)
        if secret in text
    ]
    assert leaks == []


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_max_value_length_truncates_every_recorded_text(adapter: str) -> None:
    baseline = spans_of(adapter)
    truncated = spans_of(adapter, TraceConfig(max_value_length=MAX_VALUE_LENGTH))

    for before, after in _paired(baseline, truncated):
        expected = {}
        model = str(_attributes(before).get(SpanAttributes.LLM_MODEL_NAME, ""))
        for key, value in _attributes(before).items():
            if key.startswith(("llm.cost.", "convotel.cost.")) and len(model) >= MAX_VALUE_LENGTH:
                continue  # a model name that may be cut is not priced (convotel.cost)
            if isinstance(value, str):
                value = value[:MAX_VALUE_LENGTH]
            elif isinstance(value, tuple) and all(isinstance(item, str) for item in value):
                value = tuple(item[:MAX_VALUE_LENGTH] for item in value)
            expected[key] = value
        assert _attributes(after) == expected, before.name
    assert any(
        isinstance(value, str) and len(value) > MAX_VALUE_LENGTH
        for span in baseline
        for value in _attributes(span).values()
    )


def test_every_hide_option_of_trace_config_is_checked() -> None:
    options = {name for name in TraceConfig.__dataclass_fields__ if name.startswith("hide_")}
    assert options <= set(HIDINGS)
    assert {"base64_image_max_length"} <= set(HIDINGS)
    assert SECRETS  # the credentials scanned for above
