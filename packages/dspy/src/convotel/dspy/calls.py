"""The DSPy calls convotel traces and what each records: one core :class:`Endpoint` per kind.

Span names and kinds depend on the instance (``ChainOfThought.forward``, AGENT for ReAct), LLM and
EMBEDDING spans are *framework* spans, and the LM call is findable with
:func:`~convotel.call_span.inside_call` so the usage observers below can add DSPy's token counts
to it.
"""

from __future__ import annotations

import functools
import importlib
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from openinference.semconv.trace import OpenInferenceSpanKindValues, SpanAttributes
from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE

from convotel.attributes import input_value_attributes, output_value_attributes
from convotel.call_span import Pair, Tracing, inside_call, log_once
from convotel.dspy.arguments import bound_arguments
from convotel.dspy.extraction import (
    embedder_request_attributes,
    embedding_vectors,
    evaluate_request_attributes,
    evaluate_response_attributes,
    lm_output_attributes,
    lm_request_attributes,
    lm_result_attributes,
    module_inputs,
    module_signature,
    prediction_fields,
    retrieval_attributes,
    signature_attributes,
    tool_attributes,
)
from convotel.endpoints import Endpoint, WrapperFunction

__all__ = [
    "EMBEDDER_CALL",
    "EVALUATE_CALL",
    "LM_CALL",
    "MODULE_CALL",
    "RETRIEVER_CALL",
    "TOOL_CALL",
    "finalize_observer",
    "history_observer",
]

Kind = OpenInferenceSpanKindValues


@functools.cache
def _agent_classes() -> tuple[type, ...]:
    """DSPy's tool-using agent modules present in this DSPy version."""
    dspy = importlib.import_module("dspy")
    names = ("ReAct", "ReActV2", "CodeAct", "RLM")
    return tuple(cls for name in names if isinstance(cls := getattr(dspy, name, None), type))


class ModuleCall(Endpoint):
    """``Module.__call__``/``acall``: one span per module call (CHAIN, or AGENT for ReAct)."""

    span_name = "Module.forward"
    kind = Kind.CHAIN

    def name_for(self, instance: Any, asynchronous: bool) -> str:
        return f"{type(instance).__name__}.{'aforward' if asynchronous else 'forward'}"

    def kind_for(self, instance: Any) -> Kind:
        return Kind.AGENT if isinstance(instance, _agent_classes()) else Kind.CHAIN

    def request_attributes(
        self, instance: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> Iterator[Pair]:
        if isinstance(instance, _agent_classes()):
            yield SpanAttributes.AGENT_NAME, type(instance).__name__
        yield from signature_attributes(module_signature(instance))
        forward = getattr(type(instance), "forward", None)
        arguments = bound_arguments(forward, args, kwargs, method=True)
        yield from input_value_attributes(module_inputs(arguments))

    def response_attributes(self, response: Any) -> Iterator[Pair]:
        yield from output_value_attributes(prediction_fields(response))


class LMCall(Endpoint):
    """``BaseLM.__call__``/``acall``: an LLM span, handed to a provider span below if any."""

    span_name = "LM.__call__"
    kind = Kind.LLM
    framework = True
    exposes_call = True  # the usage observers add DSPy's token counts to the running call

    def name_for(self, instance: Any, asynchronous: bool) -> str:
        return f"{type(instance).__name__}.{'acall' if asynchronous else '__call__'}"

    def request_attributes(
        self, instance: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> Iterator[Pair]:
        arguments = dict(kwargs)
        for name, value in zip(("prompt", "messages"), args, strict=False):
            arguments[name] = value
        yield from lm_request_attributes(instance, arguments)

    def response_attributes(self, response: Any) -> Iterator[Pair]:
        yield from lm_output_attributes(response)

    def error_attributes(self, exc: BaseException) -> Iterator[Pair]:
        # DSPy >= 3.4 raises its own LMError, carrying the provider's HTTP status as `status`.
        status = getattr(exc, "status", None)
        if isinstance(status, int) and not isinstance(status, bool) and 100 <= status <= 599:
            yield HTTP_RESPONSE_STATUS_CODE, status


class ToolCall(Endpoint):
    """``Tool.__call__``/``acall``: a TOOL span with the tool's name, arguments and result."""

    span_name = "Tool"
    kind = Kind.TOOL

    def name_for(self, instance: Any, asynchronous: bool) -> str:
        name = getattr(instance, "name", None)
        return name if isinstance(name, str) and name else self.span_name

    def request_attributes(
        self, instance: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> Iterator[Pair]:
        yield from tool_attributes(instance, kwargs)

    def response_attributes(self, response: Any) -> Iterator[Pair]:
        yield from output_value_attributes(response)


def _in_batching_thread() -> bool:
    """Whether this thread is the worker of a ``dspy.utils.unbatchify.Unbatchify``."""
    unbatchify = importlib.import_module("dspy.utils.unbatchify").Unbatchify
    target = getattr(threading.current_thread(), "_target", None)
    return isinstance(getattr(target, "__self__", None), unbatchify)


class EmbedderCall(Endpoint):
    """``Embedder.__call__``/``acall``: an EMBEDDING span.

    ``dspy.retrievers.Embeddings`` embeds queries in a shared batching thread whose batches can
    mix several callers (and sessions); those calls get no span of their own: the caller's
    RETRIEVER span records the retrieval.
    """

    span_name = "Embedder.__call__"
    kind = Kind.EMBEDDING
    framework = True

    def applies(self, instance: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bool:
        return not _in_batching_thread()

    def name_for(self, instance: Any, asynchronous: bool) -> str:
        return f"Embedder.{'acall' if asynchronous else '__call__'}"

    def request_attributes(
        self, instance: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> Iterator[Pair]:
        arguments = {"inputs": args[0], **kwargs} if args else kwargs
        yield from embedder_request_attributes(instance, arguments)

    def response_attributes(self, response: Any) -> Iterator[Pair]:
        yield from embedding_vectors(response)


class RetrieverCall(Endpoint):
    """``Retrieve.__call__`` and ``Embeddings.__call__``: a RETRIEVER span with documents."""

    span_name = "Retriever.forward"
    kind = Kind.RETRIEVER

    def name_for(self, instance: Any, asynchronous: bool) -> str:
        return f"{type(instance).__name__}.forward"

    def request_attributes(
        self, instance: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> Iterator[Pair]:
        query = args[0] if args else kwargs.get("query")
        yield from input_value_attributes(query)

    def response_attributes(self, response: Any) -> Iterator[Pair]:
        yield from retrieval_attributes(response)


class EvaluateCall(Endpoint):
    """``Evaluate.__call__``: a CHAIN span named ``Evaluate`` above the evaluated program runs."""

    span_name = "Evaluate"
    kind = Kind.CHAIN

    def request_attributes(
        self, instance: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> Iterator[Pair]:
        names = ("program", "metric", "devset")
        arguments = {**dict(zip(names, args, strict=False)), **kwargs}
        yield from evaluate_request_attributes(instance, arguments)

    def response_attributes(self, response: Any) -> Iterator[Pair]:
        yield from evaluate_response_attributes(response)


MODULE_CALL = ModuleCall()
LM_CALL = LMCall()
TOOL_CALL = ToolCall()
EMBEDDER_CALL = EmbedderCall()
RETRIEVER_CALL = RetrieverCall()
EVALUATE_CALL = EvaluateCall()


# --- token counts: DSPy's own record of each LM call -------------------------------------------


def _record_lm_result(lm: Any, read: Callable[[], tuple[Any, Any, Any]]) -> None:
    """Add what ``read()`` returns (usage, response model, cache hit) to ``lm``'s running call;
    the record is read inside the guard: reading an odd result must not fail the LM call."""
    try:
        call = inside_call(lm)
        if call is not None:
            usage, response_model, cache_hit = read()
            call.set_attributes(
                lm_result_attributes(usage, response_model, cache_hit is True), "LM usage"
            )
    except Exception as exc:  # noqa: BLE001 - observation must never reach the caller
        log_once("reading DSPy LM usage", exc)


def finalize_observer(get_tracing: Callable[[], Tracing]) -> WrapperFunction:
    """Wrapper for DSPy >= 3.4 ``dspy.clients.execution.finalize(lm, call, result)``."""

    def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if len(args) >= 3:
            lm, result = args[0], args[2]
            _record_lm_result(
                lm,
                lambda: (
                    getattr(result, "usage", None),
                    getattr(result, "response_model", None),
                    getattr(result, "cache_hit", False),
                ),
            )
        return wrapped(*args, **kwargs)

    return wrapper


def history_observer(get_tracing: Callable[[], Tracing]) -> WrapperFunction:
    """Wrapper for DSPy < 3.4 ``BaseLM.update_history(entry)``, which carries the usage."""

    def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        entry = args[0] if args else kwargs.get("entry")
        if isinstance(entry, Mapping):
            _record_lm_result(
                instance,
                lambda: (
                    entry.get("usage"),
                    entry.get("response_model"),
                    getattr(entry.get("response"), "cache_hit", False),
                ),
            )
        return wrapped(*args, **kwargs)

    return wrapper
