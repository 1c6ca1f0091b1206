"""Bad input never reaches the caller: the core's own entry points (JSON encoding,
``TraceConfig.mask``, the call span, the attribute builders). See ``property_support``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.trace import StatusCode
from property_support import (
    LLM,
    PER_EXTRACTOR,
    PYDANTIC_WARNINGS,
    SETTINGS,
    Recorder,
    configs,
    fails,
)
from reliability_values import FIELD_NAMES, convotel_failures, odd_mappings, odd_values

from convotel import TraceConfig
from convotel import attributes as builders
from convotel.attributes import Pair
from convotel.config import REDACTED_VALUE
from convotel.json_encoding import safe_json_dumps

pytestmark = PYDANTIC_WARNINGS


# --- the core ---------------------------------------------------------------------------


@SETTINGS
@given(odd_values(20))
def test_safe_json_dumps_always_returns_json_text(value: Any) -> None:
    encoded = safe_json_dumps(value)

    assert isinstance(encoded, str)
    json.loads(encoded)  # NaN/Infinity included: what json.dumps itself writes


@SETTINGS
@given(st.sampled_from(FIELD_NAMES) | st.text(max_size=40), odd_values(), configs)
def test_trace_config_mask_keeps_redacts_drops_or_truncates(
    key: str, value: Any, config: TraceConfig
) -> None:
    masked = config.mask(key, value)

    if masked is None or masked == REDACTED_VALUE or masked is value:
        return
    limit = config.max_value_length
    assert limit is not None
    if isinstance(value, str):
        assert masked == value[:limit]
    else:  # a sequence holding strings
        assert masked == [item[:limit] if isinstance(item, str) else item for item in value]


@SETTINGS
@given(
    st.lists(st.tuples(st.sampled_from(FIELD_NAMES) | st.text(min_size=1), odd_values())),
    configs,
)
def test_call_span_hands_only_valid_values_to_opentelemetry(
    pairs: list[tuple[str, Any]], config: TraceConfig
) -> None:
    recorder = Recorder(config)
    call = recorder.tracing.start("call", LLM, pairs[:2])
    with convotel_failures() as failures:
        for key, value in pairs:
            call.set(key, value)
        call.set_attributes(pairs)
        call.end(attributes=pairs)

    assert failures == []
    assert recorder.invalid() == []
    (span,) = recorder.exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.OK


def _messages(values: Any) -> Any:
    fields = st.fixed_dictionaries(
        {},
        optional=dict.fromkeys(
            ("role", "content", "parts", "tool_calls", "tool_call_id", "name"), values
        ),
    )
    return st.lists(st.one_of(fields.map(lambda f: builders.Message(**f)), values), max_size=3)


def _documents() -> st.SearchStrategy[list[builders.Document]]:
    document = st.builds(
        builders.Document,
        content=odd_values(2),
        id=odd_values(2),
        score=odd_values(2),
        metadata=odd_values(4),
    )
    return st.lists(document, max_size=3)


def _usage_counts() -> st.SearchStrategy[dict[str, Any]]:
    names = st.sampled_from(["prompt", "completion", "total", "cache_read", "reasoning"])
    return st.dictionaries(names, odd_values(2))


Builder = tuple[st.SearchStrategy[Any], Callable[[Any], Iterable[tuple[str, Any]]]]
BUILDERS: dict[str, Builder] = {
    "message_attributes": (
        _messages(odd_values(6)),
        lambda messages: builders.message_attributes("llm.input_messages", messages),
    ),
    "tool_definition_attributes": (odd_values(), builders.tool_definition_attributes),
    "usage_attributes": (_usage_counts(), lambda counts: builders.usage_attributes(**counts)),
    "embedding_attributes": (
        st.tuples(odd_values(2), odd_values(), odd_values()),
        lambda values: builders.embedding_attributes(
            model=values[0], texts=values[1], vectors=values[2]
        ),
    ),
    "document_attributes": (
        _documents(),
        lambda documents: builders.document_attributes("retrieval.documents", documents),
    ),
    "invocation_parameter_attributes": (
        odd_mappings(),
        builders.invocation_parameter_attributes,
    ),
    "input_value_attributes": (odd_values(), builders.input_value_attributes),
    "output_value_attributes": (odd_values(), builders.output_value_attributes),
    "model_attributes": (
        st.tuples(odd_values(2), odd_values(2)),
        lambda names: builders.model_attributes(provider=names[0], request_model=names[1]),
    ),
}


@pytest.mark.parametrize("builder", sorted(BUILDERS))
@PER_EXTRACTOR
@given(data=st.data(), config=configs)
def test_attribute_builders_fed_bad_data_are_caught_and_logged_by_the_core(
    builder: str, data: st.DataObject, config: TraceConfig
) -> None:
    strategy, build = BUILDERS[builder]
    value = data.draw(strategy)
    expected_failure = fails(lambda: iter(build(value)))
    recorder = Recorder(config)
    call = recorder.tracing.start("call", LLM)

    def extractor() -> Iterator[Pair]:
        # Adapters call builders inside an extractor the core iterates; some builders are
        # eager (``model_attributes`` returns a list), so they fail here rather than later.
        yield from build(value)

    with convotel_failures() as failures:
        call.set_attributes(extractor())
        call.end()

    assert bool(failures) == expected_failure, [r.getMessage() for r in failures]
    assert recorder.invalid() == []
