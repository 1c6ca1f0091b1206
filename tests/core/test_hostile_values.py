"""Regressions found by the property-based reliability suite (tests/reliability): values that
used to raise into the caller, reach OpenTelemetry in a form OTLP cannot carry, or slip past a
hide option."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from convotel import (
    REDACTED_VALUE,
    InvalidContextValueWarning,
    TraceConfig,
    get_attributes_from_context,
    using_metadata,
    using_prompt_template,
    using_session,
)
from convotel.json_encoding import safe_json_dumps
from convotel.spans import Tracing

TOO_LONG_TO_PRINT = 10**5000  # str() refuses ints over 4,300 digits


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    __repr__ = __str__


class UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str")


class StatusError(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__("failed")
        self.status_code = status_code


def finished(
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
    config: TraceConfig,
    *pairs: Any,
) -> ReadableSpan:
    call = Tracing(tracer_provider.get_tracer("test"), config).start("call", "LLM")
    call.set_attributes(pairs)
    call.set_attributes(pairs)  # the second time through the hot path for unchanged keys
    call.end()
    (span,) = exporter.get_finished_spans()
    return span


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([TOO_LONG_TO_PRINT], "<list>"),
        ({(1, 2): Unprintable()}, "<dict>"),
        ({"n": TOO_LONG_TO_PRINT}, "<dict>"),
    ],
)
def test_safe_json_dumps_falls_back_to_the_type_name_when_nothing_can_print(
    value: Any, expected: str
) -> None:
    assert json.loads(safe_json_dumps(value)) == expected


def test_metadata_and_template_variables_that_cannot_be_encoded_never_fail_the_block() -> None:
    ran = []
    with (
        using_metadata({"n": TOO_LONG_TO_PRINT}),
        using_prompt_template(template="t", variables={"v": Unprintable()}),
    ):
        ran.append(dict(get_attributes_from_context()))

    assert ran[0]["metadata"] == '"<dict>"'
    assert ran[0]["llm.prompt_template.variables"] == json.dumps({"v": "<Unprintable>"})


def test_an_int_session_id_too_long_to_print_is_refused_with_a_warning() -> None:
    with (
        pytest.warns(InvalidContextValueWarning, match="cannot be converted"),
        using_session(TOO_LONG_TO_PRINT),
    ):
        assert dict(get_attributes_from_context()) == {}


def test_integers_beyond_int64_are_recorded_as_their_json_text(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    span = finished(
        tracer_provider,
        span_exporter,
        TraceConfig(),
        ("llm.token_count.prompt", 2**64),
        ("llm.token_count.completion", 2**63 - 1),
        ("retrieval.documents.0.document.score", -(2**63) - 1),
        ("embedding.embeddings.0.embedding.vector", [1, 2**70]),
        ("embedding.embeddings.1.embedding.vector", [1.5, 2**1100]),
    )

    assert dict(span.attributes or {}) == {
        "openinference.span.kind": "LLM",
        "llm.token_count.prompt": "18446744073709551616",
        "llm.token_count.completion": 2**63 - 1,
        "retrieval.documents.0.document.score": "-9223372036854775809",
        "embedding.embeddings.0.embedding.vector": f"[1, {2**70}]",
        "embedding.embeddings.1.embedding.vector": f"[1.5, {2**1100}]",
    }


def test_a_call_failing_with_an_unprintable_exception_is_still_an_error(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    call = Tracing(tracer_provider.get_tracer("test")).start("call", "LLM")
    call.end(error=UnprintableError())

    (span,) = span_exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "UnprintableError: <unprintable message>"
    assert (span.attributes or {})["error.type"] == "UnprintableError"


@pytest.mark.parametrize("status", [42, 600, 2**70])
def test_a_status_code_that_is_no_http_status_is_not_recorded(
    status: int, tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    call = Tracing(tracer_provider.get_tracer("test")).start("call", "LLM")
    call.end(error=StatusError(status))

    (span,) = span_exporter.get_finished_spans()
    assert "http.response.status_code" not in (span.attributes or {})


@pytest.mark.parametrize(
    ("option", "key", "expected"),
    [
        ("hide_inputs", "llm.prompts.0.prompt.text", REDACTED_VALUE),  # OpenAI legacy completions
        ("hide_inputs", "llm.prompts", REDACTED_VALUE),  # Mistral FIM (a list)
        ("hide_inputs", "llm.prompt_template.variables", REDACTED_VALUE),
        ("hide_inputs", "reranker.query", REDACTED_VALUE),
        ("hide_inputs", "reranker.input_documents.0.document.content", None),
        ("hide_outputs", "llm.choices.0.completion.text", REDACTED_VALUE),
        ("hide_outputs", "reranker.output_documents.0.document.content", None),
    ],
)
def test_hide_inputs_and_outputs_cover_prompts_choices_variables_and_rerankers(
    option: str, key: str, expected: object
) -> None:
    assert TraceConfig(**{option: True}).mask(key, "private") == expected
    assert TraceConfig().mask(key, "private") == "private"


def test_max_value_length_truncates_list_items_json_values_and_image_urls(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    image = "llm.input_messages.0.message.contents.0.message_content.image.image.url"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        span = finished(
            tracer_provider,
            span_exporter,
            TraceConfig(max_value_length=8),
            ("llm.prompts", ["def add(a, b):", "short"]),
            ("llm.prompt_template.variables", {"query": "What is the capital of France?"}),
            (image, "https://images.example/eiffel-tower.png"),
        )

    attributes = dict(span.attributes or {})
    assert attributes["llm.prompts"] == ("def add(", "short")
    assert attributes["llm.prompt_template.variables"] == '{"query"'
    assert attributes[image] == "https://"


class UnreadableMapping(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("cannot load")

    def __iter__(self) -> Iterator[str]:
        return iter(["tenant"])

    def __len__(self) -> int:
        return 1


def test_metadata_whose_values_cannot_be_read_is_refused_with_a_warning() -> None:
    with (
        pytest.warns(InvalidContextValueWarning, match="could not be read"),
        using_metadata(UnreadableMapping()),
    ):
        assert dict(get_attributes_from_context()) == {}
