"""Bad input never reaches the caller: property-based tests over every extractor and the core.

Hostile request arguments, response payloads, stream chunks, exceptions and context values (see
``reliability_values``) are fed to every adapter the way the core drives it (``sync_wrapper``
over each :class:`~convotel.spans.Endpoint`, the stream proxy over each accumulator, LlamaIndex's
span and event handlers, DSPy's usage observers) and to the core's own entry points. Each test
checks that the caller sees exactly what it would see without convotel (same return value, same
exception object), that every failure of convotel's own code was caught *and logged* by the core
(``log_once``) and that no failure was logged when nothing failed, that every value handed to
OpenTelemetry is a valid OTLP attribute value, and that the caller's context is left as it was.
The real OpenAI and Mistral SDK calls are also compared with their uninstrumented selves.
"""

from __future__ import annotations

import copy
import inspect
import json
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from openinference.semconv.trace import OpenInferenceSpanKindValues, SpanAttributes
from opentelemetry import context as context_api
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from reliability_adapters import WEATHER_TOOL, cassette_answers, mistral_httpx, openai_httpx
from reliability_values import (
    FIELD_NAMES,
    LEAVES,
    RecordingTracer,
    convotel_failures,
    hostile_objects,
    invalid_attributes,
    odd_exceptions,
    odd_mappings,
    odd_objects_with_fields,
    odd_values,
)

from convotel import (
    InvalidContextValueWarning,
    TraceConfig,
    get_attributes_from_context,
    set_metadata,
    set_prompt_template,
    set_session,
    set_tags,
    set_user,
    using_attributes,
    using_metadata,
    using_prompt_template,
    using_session,
    using_tags,
    using_user,
)
from convotel import attributes as builders
from convotel.config import REDACTED_VALUE
from convotel.json_encoding import safe_json_dumps
from convotel.spans import Endpoint, StreamProxy, Tracing, sync_wrapper

LLM = OpenInferenceSpanKindValues.LLM.value
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
#: For the tests parametrized over many extractors (the whole file stays well under a minute).
PER_EXTRACTOR = settings(SETTINGS, max_examples=35)
pytestmark = pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")

configs = st.builds(
    TraceConfig,
    hide_inputs=st.booleans(),
    hide_outputs=st.booleans(),
    hide_input_messages=st.booleans(),
    hide_output_messages=st.booleans(),
    hide_input_text=st.booleans(),
    hide_output_text=st.booleans(),
    hide_input_images=st.booleans(),
    hide_embedding_vectors=st.booleans(),
    hide_llm_invocation_parameters=st.booleans(),
    base64_image_max_length=st.integers(1, 64),
    max_value_length=st.none() | st.integers(1, 40),
    request_stream_usage=st.booleans(),
    enable_genai_semconv=st.booleans(),
)


class Recorder:
    """A tracer provider whose convotel spans keep the raw values they were given."""

    def __init__(self, config: TraceConfig | None = None) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = RecordingTracer(self.provider.get_tracer("convotel-properties"))
        self.tracing = Tracing(cast(Any, self.tracer), config or TraceConfig())

    def invalid(self) -> list[str]:
        invalid: list[str] = invalid_attributes(self.tracer.recorded)
        return invalid


def fails(step: Callable[[], object]) -> bool:
    """Whether running ``step`` (and exhausting what it returns, if iterable) raises."""
    try:
        result = step()
        if isinstance(result, Iterator):
            for _ in result:
                pass
    except Exception:  # noqa: BLE001 - any failure counts
        return True
    return False


@contextmanager
def caller_context_kept() -> Iterator[None]:
    before = context_api.get_current()
    try:
        yield
    finally:
        after = context_api.get_current()
        context_api.attach(before)  # keep one leak from cascading into the next examples
    assert after == before, "convotel changed the caller's context"


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

    with convotel_failures() as failures:
        call.set_attributes(build(value))
        call.end()

    assert bool(failures) == expected_failure, [r.getMessage() for r in failures]
    assert recorder.invalid() == []


# --- context helpers ------------------------------------------------------------------------


def _expected_id(value: Any) -> str | None:
    """The id a session or user id argument sets: a non-blank text (ints and UUIDs as text),
    at most 256 characters; ``None`` (nothing set) for anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            value = str(value)
        except ValueError:  # too long to print
            return None
    if isinstance(value, str) and value.strip():
        return value[:256]
    return None


def _context_is_valid() -> None:
    for key, value in get_attributes_from_context():
        assert isinstance(value, str | list), (key, value)
        if key in (SpanAttributes.SESSION_ID, SpanAttributes.USER_ID):
            assert isinstance(value, str)
            assert value.strip()
            assert len(value) <= 256


@SETTINGS
@given(
    session=LEAVES | odd_values(3),
    user=LEAVES | odd_values(3),
    metadata=odd_mappings(8) | hostile_objects() | odd_values(8),
    tags=st.lists(LEAVES, max_size=3) | hostile_objects() | odd_values(4),
    template=LEAVES | odd_values(2),
    variables=odd_mappings(6) | hostile_objects() | odd_values(6),
    version=LEAVES | odd_values(2),
)
def test_context_helpers_never_raise_and_set_only_valid_values(
    session: Any, user: Any, metadata: Any, tags: Any, template: Any, variables: Any, version: Any
) -> None:
    recorder = Recorder()
    ran = []
    with warnings.catch_warnings(), caller_context_kept():
        warnings.simplefilter("ignore", InvalidContextValueWarning)
        scopes = [
            using_session(session),
            using_user(user),
            using_metadata(metadata),
            using_tags(tags),
            using_prompt_template(template=template, variables=variables, version=version),
            using_attributes(
                session_id=session,
                user_id=user,
                metadata=metadata,
                tags=tags,
                prompt_template=template,
                prompt_template_variables=variables,
                prompt_template_version=version,
            ),
        ]
        with scopes[0], scopes[1]:
            ids = dict(get_attributes_from_context())
            assert ids.get(SpanAttributes.SESSION_ID) == _expected_id(session)
            assert ids.get(SpanAttributes.USER_ID) == _expected_id(user)
        for scope in scopes:
            with scope:
                _context_is_valid()
                recorder.tracing.start("inside", LLM).end()
                ran.append(scope)

            @scope
            def decorated() -> str:
                _context_is_valid()
                return "ran"

            assert decorated() == "ran"
        ctx = context_api.get_current()
        for updated in (
            set_session(ctx, session),
            set_user(ctx, user),
            set_metadata(ctx, metadata),
            set_tags(ctx, tags),
            set_prompt_template(ctx, template, variables, version),
        ):
            token = context_api.attach(updated)
            try:
                _context_is_valid()
            finally:
                context_api.detach(token)

    assert ran == scopes
    assert recorder.invalid() == []


@SETTINGS
@given(
    session=LEAVES | odd_values(3),
    metadata=odd_mappings(6) | hostile_objects() | odd_values(6),
    tags=st.lists(LEAVES, max_size=3) | hostile_objects() | odd_values(3),
)
def test_strict_context_helpers_raise_a_value_error_exactly_where_they_would_warn(
    session: Any, metadata: Any, tags: Any
) -> None:
    helpers: list[Callable[[bool], object]] = [
        lambda strict: using_session(session, strict=strict),
        lambda strict: using_metadata(metadata, strict=strict),
        lambda strict: using_tags(tags, strict=strict),
        lambda strict: set_session(context_api.get_current(), session, strict=strict),
    ]
    for helper in helpers:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            helper(False)
        if any(issubclass(w.category, InvalidContextValueWarning) for w in caught):
            with pytest.raises(ValueError, match="convotel: "):
                helper(True)
        else:
            helper(True)


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

    return [
        endpoints.ChatCompletion(),
        endpoints.CompletionStream(),
        endpoints.FimCompletion(),
        endpoints.FimStream(),
        endpoints.AgentCompletion(),
        endpoints.AgentStream(),
        endpoints.Embeddings(),
        endpoints.Conversation("start"),
        endpoints.ConversationStream("start_stream"),
        endpoints.Moderation("moderate"),
    ]


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


def _accumulators() -> dict[str, Callable[[], Any]]:
    from convotel.llama_index.streaming import TextAccumulator
    from convotel.mistralai import streaming as mistral
    from convotel.openai import streaming as openai

    return {
        "openai.chat": openai.ChatStreamAccumulator,
        "openai.chat_hiding_usage": lambda: openai.ChatStreamAccumulator(hide_usage_chunk=True),
        "openai.completion": openai.CompletionStreamAccumulator,
        "openai.responses": openai.ResponsesStreamAccumulator,
        "mistralai.completion": mistral.CompletionStreamAccumulator,
        "mistralai.conversation": mistral.ConversationStreamAccumulator,
        "llama_index.text": TextAccumulator,
    }


ACCUMULATORS = _accumulators()


@pytest.mark.parametrize("name", sorted(ACCUMULATORS))
@PER_EXTRACTOR
@given(chunks=st.lists(odd_objects_with_fields(8), max_size=5), config=configs)
def test_stream_accumulators_never_break_the_stream(
    name: str, chunks: list[Any], config: TraceConfig
) -> None:
    shown, expected_failure = [], False
    direct = ACCUMULATORS[name]()
    for chunk in chunks:
        try:
            hidden = direct.process(chunk) is False
        except Exception:  # noqa: BLE001
            hidden, expected_failure = False, True
        if not hidden:
            shown.append(chunk)
    expected_failure |= fails(direct.attributes)
    recorder = Recorder(config)
    call = recorder.tracing.start("stream", LLM)

    with convotel_failures() as failures:
        received = list(StreamProxy(iter(chunks), call, ACCUMULATORS[name]()))

    assert [id(chunk) for chunk in received] == [id(chunk) for chunk in shown]
    assert call.ended
    assert bool(failures) == expected_failure, [r.getMessage() for r in failures]
    assert recorder.invalid() == []


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


# --- LlamaIndex: span and event handlers ---------------------------------------------------


def _llama_index_setup() -> tuple[list[Any], Callable[[str], list[type]]]:
    from llama_index.core.base.base_retriever import BaseRetriever
    from llama_index.core.embeddings import MockEmbedding
    from llama_index.core.instrumentation.events import (
        chat_engine,
        embedding,
        exception,
        llm,
        rerank,
    )
    from llama_index.core.llms import MockLLM
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.tools import FunctionTool

    class StubRetriever(BaseRetriever):
        def _retrieve(self, query_bundle: Any) -> list[Any]:
            return []

    class StubRerank(BaseNodePostprocessor):
        def _postprocess_nodes(self, nodes: Any, query_bundle: Any = None) -> list[Any]:
            return list(nodes)

    def lookup(city: str) -> str:
        """Look a city up."""
        return city

    instances = [
        MockLLM(),
        MockEmbedding(embed_dim=2),
        StubRetriever(),
        StubRerank(),
        FunctionTool.from_defaults(lookup),
        SimpleNamespace(),
    ]
    modules = [llm, embedding, exception, rerank, chat_engine]
    events = [
        cls
        for module in modules
        for cls in vars(module).values()
        if isinstance(cls, type)
        and cls.__name__.endswith("Event")
        and cls.__module__ == module.__name__
    ]
    return instances, lambda kind: [e for e in events if kind in e.__name__] or events


LLAMA_INSTANCES, llama_events = _llama_index_setup()
LLAMA_METHODS = (
    *("chat", "stream_chat", "complete", "predict", "get_text_embedding_batch", "_embed"),
    *("retrieve", "postprocess_nodes", "call", "query"),
)


@st.composite
def llama_index_event(draw: st.DrawFn, span_id: str) -> Any:
    from llama_index.core.base.llms.types import ChatMessage, ChatResponse, CompletionResponse

    event_class: Any = draw(st.sampled_from(llama_events("")))
    message = ChatMessage.model_construct(
        **draw(
            st.fixed_dictionaries(
                {}, optional={"role": odd_values(2), "additional_kwargs": odd_values(6)}
            )
        )
    )
    response_fields = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "raw": odd_values(6),
                "additional_kwargs": odd_values(6),
                "text": odd_values(2),
            },
        )
    )
    response = draw(
        st.sampled_from(
            [
                ChatResponse.model_construct(message=message, **response_fields),
                CompletionResponse.model_construct(**response_fields),
                None,
            ]
        )
        | odd_objects_with_fields(4)
    )
    fields = draw(odd_mappings(6))
    fields.update(response=response, span_id=span_id)
    return event_class.model_construct(**fields)


@PER_EXTRACTOR
@given(data=st.data(), config=configs)
def test_llama_index_handlers_never_raise_into_llama_index(
    data: st.DataObject, config: TraceConfig
) -> None:
    from convotel.llama_index.handlers import CallTracker, ConvotelEventHandler, ConvotelSpanHandler

    recorder = Recorder(config)
    tracker = CallTracker(lambda: recorder.tracing)
    spans, events = ConvotelSpanHandler(tracker), ConvotelEventHandler(tracker)
    instance = data.draw(st.sampled_from(LLAMA_INSTANCES))
    if data.draw(st.booleans()) and hasattr(instance, "__dict__"):
        instance = instance.model_copy() if hasattr(instance, "model_copy") else copy.copy(instance)
        instance.__dict__.update(data.draw(odd_mappings(6)))
    method = data.draw(st.sampled_from(LLAMA_METHODS))
    id_ = f"{type(instance).__name__}.{method}-{uuid.uuid4()}"
    arguments = data.draw(odd_mappings())
    bound = inspect.BoundArguments(inspect.Signature(), OrderedDict(arguments))
    tags = data.draw(odd_mappings(4))

    with convotel_failures(), caller_context_kept():
        spans.span_enter(id_, bound, instance=instance, parent_id=None, tags=tags)
        for event in data.draw(st.lists(llama_index_event(id_), max_size=3)):
            events.handle(event)
        if data.draw(st.booleans()):
            spans.span_exit(id_, bound, instance=instance, result=data.draw(odd_values()))
        else:
            spans.span_drop(id_, bound, instance=instance, err=data.draw(odd_exceptions()))

    assert tracker.calls == {}
    assert recorder.invalid() == []


# --- wrappers that observe calls without a span of their own ------------------------------


@SETTINGS
@given(
    lm=odd_objects_with_fields(4),
    result=odd_objects_with_fields(8),
    entry=odd_values(8) | odd_mappings(8),
    config=configs,
)
def test_dspy_usage_observers_pass_every_call_through(
    lm: Any, result: Any, entry: Any, config: TraceConfig
) -> None:
    from convotel.dspy.calls import LM_CALL, finalize_observer, history_observer

    recorder = Recorder(config)
    get_tracing = lambda: recorder.tracing  # noqa: E731
    finalize, history = finalize_observer(get_tracing), history_observer(get_tracing)
    returned = object()

    def lm_call(*args: Any, **kwargs: Any) -> Any:
        assert finalize(lambda *a, **k: returned, None, (lm, "call", result), {}) is returned
        assert history(lambda *a, **k: returned, lm, (entry,), {}) is returned
        assert history(lambda *a, **k: returned, lm, (), {"entry": entry}) is returned
        return returned

    with convotel_failures(), caller_context_kept():
        assert sync_wrapper(get_tracing, LM_CALL)(lm_call, lm, (), {}) is returned

    assert recorder.invalid() == []


@SETTINGS
@given(instance=odd_values(4), args=st.lists(odd_values(4), max_size=3), kwargs=odd_mappings(4))
def test_call_observing_wrappers_pass_every_call_through(
    instance: Any, args: list[Any], kwargs: dict[str, Any]
) -> None:
    from convotel.dspy.thread_context import context_propagating_wrapper
    from convotel.mistralai import sdk_telemetry
    from convotel.openai.package import INSTRUMENTATION_NAME
    from convotel.openai.retries import record_retries

    recorder = Recorder()
    get_tracing = lambda: recorder.tracing  # noqa: E731
    returned = object()
    wrappers = [
        record_retries(get_tracing),
        context_propagating_wrapper(get_tracing),
        sdk_telemetry.traced_request_wrapper(get_tracing),
        sdk_telemetry.hook_before_request_wrapper(lambda: instance)(get_tracing),
    ]
    tracer = recorder.provider.get_tracer(INSTRUMENTATION_NAME)
    with convotel_failures(), caller_context_kept(), tracer.start_as_current_span("ours"):
        for wrapper in wrappers:
            assert (
                wrapper(lambda *a, **k: returned, instance, tuple(args), dict(kwargs)) is returned
            )


# --- the real SDKs: instrumented calls behave exactly as uninstrumented ones ------------------


def _outcome(call: Callable[[], Any]) -> tuple[str, str]:
    """What a call gave its caller: its result (streams read to the end) or its exception."""
    try:
        return "returned", repr(call())
    except Exception as exc:  # noqa: BLE001
        return type(exc).__qualname__, str(exc)


class PayloadServer:
    """MockTransport answers: the next drawn JSON payload, as JSON or as server-sent events."""

    def __init__(self) -> None:
        self.payloads: list[Any] = [{}]

    def answer(self, httpx_module: Any) -> Any:
        def respond(request: Any) -> Any:
            body = json.loads(request.content or b"{}")
            if body.get("stream") is True:
                events = (
                    "".join(f"data: {json.dumps(payload)}\n\n" for payload in self.payloads)
                    + "data: [DONE]\n\n"
                )
                return httpx_module.Response(
                    200, headers={"content-type": "text/event-stream"}, content=events.encode()
                )
            return httpx_module.Response(200, json=self.payloads[0])

        return respond


json_payloads = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.sampled_from(FIELD_NAMES),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=4), children, max_size=5)
    ),
    max_leaves=14,
)


def mostly(valid: st.SearchStrategy[Any], other: st.SearchStrategy[Any]) -> Any:
    """``valid`` three times in four, else ``other``: calls that pass the SDK's own checks
    reach the response (and convotel's response extraction) often enough."""
    return st.integers(0, 3).flatmap(lambda n: other if n == 3 else valid)


def recorded_payloads(*cassettes: str) -> list[Any]:
    """The JSON bodies (and server-sent event data) the cassettes hold: valid payloads."""
    payloads = []
    for name in cassettes:
        for _, _, body in cassette_answers(name):
            text = body.decode()
            events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
            for data in events or [text]:
                if data != "[DONE]":
                    payloads.append(json.loads(data))
    return payloads


@st.composite
def mutated(draw: st.DrawFn, value: Any) -> Any:
    """``value`` unchanged, or with one part (at any depth) replaced by arbitrary JSON or
    removed."""
    if not draw(st.booleans()):
        return value
    return _mutate_one(draw, copy.deepcopy(value))


def _mutate_one(draw: st.DrawFn, value: Any) -> Any:
    if isinstance(value, dict) and value and draw(st.integers(0, 3)):
        key = draw(st.sampled_from(sorted(value)))
        if draw(st.integers(0, 4)) == 0:
            del value[key]
        else:
            value[key] = _mutate_one(draw, value[key])
        return value
    if isinstance(value, list) and value and draw(st.integers(0, 3)):
        index = draw(st.integers(0, len(value) - 1))
        value[index] = _mutate_one(draw, value[index])
        return value
    return draw(json_payloads)


def payloads_like(examples: list[Any]) -> st.SearchStrategy[list[Any]]:
    """Streams of one to three payloads: recorded ones, mutated, or arbitrary JSON."""
    one = mostly(st.sampled_from(examples).flatmap(mutated), json_payloads)
    return st.lists(one, min_size=1, max_size=3)


chat_messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant", "tool"])},
        optional={"content": st.text(max_size=8) | json_payloads, "tool_calls": json_payloads},
    ),
    max_size=3,
)


def _openai_kwargs(
    required: str, *optional: str, values: st.SearchStrategy[Any] = json_payloads
) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"model": mostly(st.just("gpt-4o-mini"), json_payloads), required: values},
        optional=dict.fromkeys(optional, json_payloads) | {"stream": st.booleans()},
    )


#: (resource, method, arguments) of the OpenAI calls compared with their uninstrumented selves.
@dataclass(frozen=True)
class SdkCall:
    """One SDK method, its arguments, and the cassettes whose payloads answer it (mutated)."""

    path: str
    method: str
    arguments: st.SearchStrategy[dict[str, Any]]
    answers: tuple[str, ...]
    streamed_answers: tuple[str, ...] = ()

    def draw(self, data: st.DataObject) -> tuple[dict[str, Any], list[Any]]:
        kwargs = data.draw(self.arguments)
        streamed = kwargs.get("stream") is True or self.method == "stream"
        cassettes = self.streamed_answers if streamed and self.streamed_answers else self.answers
        return kwargs, data.draw(payloads_like(recorded_payloads(*cassettes)))


OPENAI_CALLS = (
    SdkCall(
        "chat.completions",
        "create",
        _openai_kwargs(
            "messages",
            *("tools", "temperature", "stream_options", "n", "user"),
            values=mostly(chat_messages, json_payloads),
        ),
        ("openai/chat_basic", "openai/chat_tools"),
        ("openai/chat_stream_usage", "openai/chat_stream_tools"),
    ),
    SdkCall(
        "responses",
        "create",
        _openai_kwargs("input", "instructions", "tools"),
        ("openai/responses_basic", "openai/responses_tools"),
        ("openai/responses_stream",),
    ),
    SdkCall(
        "completions",
        "create",
        _openai_kwargs("prompt", "max_tokens", "stop"),
        ("openai/completions_legacy",),
        ("openai/completions_legacy_stream",),
    ),
    SdkCall(
        "embeddings",
        "create",
        _openai_kwargs("input", values=mostly(st.lists(st.text(max_size=5)), json_payloads)),
        ("openai/embeddings", "openai/embeddings_float"),
    ),
)
mistral_messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system"]), "content": st.text(max_size=8)}
    ),
    min_size=1,
    max_size=3,
)
mistral_chat_kwargs = st.fixed_dictionaries(
    {
        "model": mostly(st.just("mistral-small-latest"), json_payloads),
        "messages": mostly(mistral_messages, chat_messages | json_payloads),
    },
    optional={
        "temperature": mostly(st.floats(0, 1), json_payloads),
        "max_tokens": mostly(st.integers(1, 100), json_payloads),
        "tools": mostly(st.just([WEATHER_TOOL]), json_payloads),
    },
)
MISTRAL_CALLS = (
    SdkCall(
        "chat",
        "complete",
        mistral_chat_kwargs,
        ("mistralai/chat_complete", "mistralai/chat_complete_tools"),
    ),
    SdkCall("chat", "stream", mistral_chat_kwargs, ("mistralai/chat_stream",)),
    SdkCall(
        "embeddings",
        "create",
        st.fixed_dictionaries(
            {
                "model": mostly(st.just("mistral-embed"), json_payloads),
                "inputs": mostly(st.lists(st.text(max_size=5), min_size=1), json_payloads),
            }
        ),
        ("mistralai/embeddings_create",),
    ),
)


@contextmanager
def instrumented(instrumentor: Any, config: TraceConfig) -> Iterator[Recorder]:
    recorder = Recorder(config)
    instrumentor.instrument(tracer_provider=recorder.provider, config=config)
    try:
        yield recorder
    finally:
        instrumentor.uninstrument()


def _resource(client: Any, path: str) -> Any:
    for name in path.split("."):
        client = getattr(client, name)
    return client


def _compare_with_uninstrumented(
    client: Any, server: PayloadServer, calls: tuple[SdkCall, ...]
) -> None:
    """For drawn calls and payloads: the instrumented call returns an equal result or raises an
    equal exception (same type and message) as the SDK's original method."""

    @SETTINGS
    @given(call=st.sampled_from(calls), data=st.data())
    def check(call: SdkCall, data: st.DataObject) -> None:
        kwargs, server.payloads = call.draw(data)
        resource = _resource(client, call.path)
        original = getattr(type(resource), call.method).__wrapped__
        with convotel_failures():
            seen = _outcome(lambda: _read(getattr(resource, call.method)(**kwargs)))
        event(f"{call.path}.{call.method}: {seen[0]}")
        assert seen == _outcome(lambda: _read(original(resource, **kwargs)))

    check()


def test_openai_sdk_calls_with_bad_arguments_and_payloads_behave_as_uninstrumented() -> None:
    import openai

    from convotel.openai import OpenAIInstrumentor

    server = PayloadServer()
    http = openai_httpx()
    transport = http.MockTransport(server.answer(http))
    client = openai.OpenAI(
        api_key="sk-test", max_retries=0, http_client=http.Client(transport=transport)
    )
    with instrumented(OpenAIInstrumentor(), TraceConfig()) as recorder:
        _compare_with_uninstrumented(client, server, OPENAI_CALLS)

    assert recorder.invalid() == []


def test_mistral_sdk_calls_with_bad_arguments_and_payloads_behave_as_uninstrumented() -> None:
    from mistralai.client import Mistral

    from convotel.mistralai import MistralAIInstrumentor

    server = PayloadServer()
    http = mistral_httpx()
    transport = http.MockTransport(server.answer(http))
    client = Mistral(api_key="test-key", client=http.Client(transport=transport))
    with instrumented(MistralAIInstrumentor(), TraceConfig()) as recorder:
        _compare_with_uninstrumented(client, server, MISTRAL_CALLS)

    assert recorder.invalid() == []


def _read(result: Any) -> Any:
    """A stream read to the end (a list of its chunks or events); other results as they are."""
    if hasattr(result, "__next__") or hasattr(result, "_iterator"):
        with result:
            return list(result)
    return result
