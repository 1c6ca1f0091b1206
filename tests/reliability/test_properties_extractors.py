"""Bad input never reaches the caller: every adapter endpoint's extraction through the
core's wrapper, and DSPy's argument binding. See ``property_support``.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.trace import StatusCode
from property_support import (
    PER_EXTRACTOR,
    PYDANTIC_WARNINGS,
    SETTINGS,
    Recorder,
    caller_context_kept,
    configs,
    fails,
)
from reliability_values import (
    convotel_failures,
    odd_exceptions,
    odd_mappings,
    odd_objects_with_fields,
    odd_values,
)

from convotel import TraceConfig
from convotel.spans import Endpoint, sync_wrapper

pytestmark = PYDANTIC_WARNINGS


# --- adapters through the core's wrapper ------------------------------------------------------


def _openai_endpoints() -> list[Endpoint]:
    from convotel.openai import endpoints

    config = TraceConfig(request_stream_usage=True)
    return [
        endpoint(lambda: config)
        for endpoint in (
            endpoints.ChatCompletions,
            endpoints.ParsedChatCompletions,
            endpoints.Responses,
            endpoints.Completions,
            endpoints.Embeddings,
        )
    ]


def _mistral_endpoints() -> list[Endpoint]:
    from convotel.mistralai import endpoints

    return [wrapped.endpoint for wrapped in endpoints.ENDPOINTS]  # every traced method


def _dspy_endpoints() -> list[Endpoint]:
    from convotel.dspy import calls

    return [
        calls.MODULE_CALL,
        calls.LM_CALL,
        calls.TOOL_CALL,
        calls.EMBEDDER_CALL,
        calls.RETRIEVER_CALL,
        calls.EVALUATE_CALL,
    ]


ENDPOINTS = {
    f"{adapter}.{type(endpoint).__name__}.{endpoint.span_name}": endpoint
    for adapter, make in (
        ("openai", _openai_endpoints),
        ("mistralai", _mistral_endpoints),
        ("dspy", _dspy_endpoints),
    )
    for endpoint in make()
}


def _core_would_fail(
    endpoint: Endpoint, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any], outcome: Any
) -> bool:
    """Whether a step the core guards raises when run directly (in the core's order)."""
    try:
        if not endpoint.applies(instance, args, kwargs):
            return False
        endpoint.name_for(instance, False)
        endpoint.kind_for(instance)
    except Exception:  # noqa: BLE001
        return True
    failed = fails(lambda: endpoint.request_attributes(instance, args, kwargs))
    failed |= fails(lambda: endpoint.adjust_kwargs(dict(kwargs)))
    if isinstance(outcome, BaseException):
        failed |= fails(lambda: endpoint.error_attributes(outcome))
        return failed or fails(lambda: str(outcome))
    try:
        accumulator = endpoint.stream_accumulator(outcome, kwargs)
    except Exception:  # noqa: BLE001
        return True
    if accumulator is None:
        failed |= fails(lambda: endpoint.response_attributes(outcome))
    return failed


@pytest.mark.parametrize("name", sorted(ENDPOINTS))
@PER_EXTRACTOR
@given(
    instance=odd_objects_with_fields(6),
    args=st.lists(odd_values(6), max_size=3).map(tuple),
    kwargs=odd_mappings(),
    outcome=odd_objects_with_fields() | odd_exceptions(),
    config=configs,
)
def test_endpoint_extraction_never_reaches_the_caller(
    name: str,
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    outcome: Any,
    config: TraceConfig,
) -> None:
    endpoint = ENDPOINTS[name]
    recorder = Recorder(config)
    wrapper = sync_wrapper(lambda: recorder.tracing, endpoint)
    seen: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def sdk_method(*call_args: Any, **call_kwargs: Any) -> Any:
        seen.append((call_args, call_kwargs))
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    expected_failure = _core_would_fail(endpoint, instance, args, kwargs, outcome)
    with convotel_failures() as failures, caller_context_kept():
        if isinstance(outcome, BaseException):
            with pytest.raises(BaseException) as raised:  # noqa: PT011 - identity checked below
                wrapper(sdk_method, instance, args, dict(kwargs))
            assert raised.value is outcome
        else:
            result = wrapper(sdk_method, instance, args, dict(kwargs))
            assert result is outcome or result.__wrapped__ is outcome
            del result  # a proxied stream ends (abandoned) when collected

    ((sdk_args, sdk_kwargs),) = seen  # the SDK got the caller's own objects, once
    assert sdk_args == args
    assert all(sdk_kwargs[key] is kwargs[key] for key in kwargs if key != "stream_options")
    assert all(record.exc_info for record in failures), [r.getMessage() for r in failures]
    assert bool(failures) == expected_failure, [r.getMessage() for r in failures]
    assert recorder.invalid() == []
    if isinstance(outcome, BaseException):
        for span in recorder.exporter.get_finished_spans():
            assert span.status.status_code is StatusCode.ERROR


def _positional(a: Any, b: Any = None) -> None: ...


def _variadic(a: Any, *rest: Any, **options: Any) -> None: ...


def _keyword_only(*, a: Any) -> None: ...


class _Program:
    def forward(self, question: Any, context: Any = None) -> None: ...


_PARAMETER_NAMES = {"a", "b", "rest", "options", "question", "context", "args"}


@SETTINGS
@given(
    function=st.sampled_from([_positional, _variadic, _keyword_only, _Program.forward, len]),
    args=st.lists(odd_values(4), max_size=4).map(tuple),
    kwargs=st.dictionaries(
        st.text(min_size=1, max_size=6).filter(lambda name: name not in _PARAMETER_NAMES),
        odd_values(4),
        max_size=3,
    ),
)
def test_dspy_bound_arguments_keep_every_argument_of_any_signature(
    function: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    from convotel.dspy.arguments import bound_arguments

    bound = bound_arguments(function, args, kwargs, method=function is _Program.forward)

    kept = [id(value) for value in bound.values()] + [id(a) for a in bound.get("args", ())]
    assert all(id(argument) in kept for argument in args)
    assert all(bound[key] is value for key, value in kwargs.items())
