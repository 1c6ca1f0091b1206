"""Bad input never reaches the caller: LlamaIndex's span and event handlers, and the
wrappers that observe calls without a span of their own. See ``property_support``.
"""

from __future__ import annotations

import copy
import inspect
import uuid
from collections import OrderedDict
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from property_support import (
    PER_EXTRACTOR,
    PYDANTIC_WARNINGS,
    SETTINGS,
    Recorder,
    caller_context_kept,
    configs,
)
from reliability_values import (
    convotel_failures,
    odd_exceptions,
    odd_mappings,
    odd_objects_with_fields,
    odd_values,
)

from convotel import TraceConfig
from convotel.spans import sync_wrapper

pytestmark = PYDANTIC_WARNINGS


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
