"""LlamaIndex span and event handlers that turn its instrumentation into convotel spans.

LlamaIndex announces every instrumented call to the span handlers of its root dispatcher
(``span_enter`` / ``span_exit`` / ``span_drop``, with the bound arguments, the instance and the
result) and sends events (``LLMChatEndEvent``...) carrying the data in between. A
:class:`CallTracker` opens one convotel span per call in the OpenTelemetry context current at the
call (so it carries that context's session and user ids and nests under its spans), keeps the
span current while the call runs, gives the caller back its own context when the call returns
(a returned stream steps under the call's context later: :mod:`convotel.llama_index.streaming`)
and adds what the events say. The two pydantic handler classes LlamaIndex requires only forward
to it (their attribute access is too slow for the hot path).
"""

from __future__ import annotations

import contextlib
import inspect
import weakref
from collections.abc import Callable, Iterable, Mapping
from contextvars import Token
from types import AsyncGeneratorType, GeneratorType
from typing import Any

from llama_index.core.agent.workflow import AgentWorkflow, BaseWorkflowAgent
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.base.llms.base import BaseLLM
from llama_index.core.base.response.schema import AsyncStreamingResponse, StreamingResponse
from llama_index.core.chat_engine.types import StreamingAgentChatResponse
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.span import BaseSpan
from llama_index.core.instrumentation.span_handlers import BaseSpanHandler
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.tools import BaseTool
from openinference.semconv.trace import RerankerAttributes, SpanAttributes
from opentelemetry import context as context_api
from opentelemetry.context import Context
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from pydantic import PrivateAttr

from convotel.attributes import embedding_attributes, output_value_attributes
from convotel.call_span import CallSpan, Pair, Tracing, inside_call, log_once
from convotel.finish import CallFinish, end_call
from convotel.llama_index import extraction
from convotel.llama_index.extraction import (
    AGENT,
    CHAIN,
    EMBEDDING,
    LLM,
    RERANKER,
    RETRIEVER,
    TOOL,
)
from convotel.llama_index.streaming import (
    AsyncContextStreamProxy,
    ContextStreamProxy,
    offer_stream,
)

#: The methods of an LLM that are one model call (the others, e.g. ``predict``, call these).
LLM_CALLS = frozenset(
    {"chat", "achat", "stream_chat", "astream_chat"}
    | {"complete", "acomplete", "stream_complete", "astream_complete"}
)
STREAM_WRITERS = frozenset({"write_response_to_history", "awrite_response_to_history"})
_CATEGORIES: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (BaseLLM, LLM),
    (BaseEmbedding, EMBEDDING),
    (BaseRetriever, RETRIEVER),
    (BaseTool, TOOL),
    (BaseNodePostprocessor, RERANKER),
    ((BaseWorkflowAgent, AgentWorkflow), AGENT),
)
_category_of_type: dict[type, str] = {}
_NO_CONTEXT = Context()


def span_kind(instance: object, method: str) -> str | None:
    """The OpenInference kind of a LlamaIndex call; ``None`` for calls not worth a span."""
    cls = type(instance)
    category = _category_of_type.get(cls)
    if category is None:
        category = next((kind for base, kind in _CATEGORIES if isinstance(instance, base)), CHAIN)
        if category == RERANKER and "rerank" not in cls.__name__.lower():
            category = CHAIN  # other node postprocessors (filters, reorderers)
        _category_of_type[cls] = category
    if category == LLM:
        return LLM if method in LLM_CALLS else CHAIN
    if category == EMBEDDING and method.startswith("_"):
        return None  # the private parts of the public embedding calls
    return category


class OpenCall:
    """A LlamaIndex call being traced: its convotel span, what its events have said and, once it
    streams, its :class:`CallFinish`."""

    __slots__ = (
        *("call", "_finish", "kind", "method", "id", "parent_id", "instance_key", "enclosing"),
        *("released", "context", "token", "streaming", "awaits_writer", "written", "error"),
        *("embedded_texts", "embedded_vectors"),
    )

    def __init__(self, call: CallSpan, kind: str, method: str, id_: str, parent_id: str | None):
        self.call = call
        self._finish: CallFinish | None = None
        self.kind = kind
        self.method = method
        self.id = id_
        self.parent_id = parent_id
        self.instance_key: int | None = None
        self.enclosing: OpenCall | None = None
        #: Set once calls of the same instance and kind below are no longer part of this one.
        self.released = False
        #: The call's context (its span current, the caller's session and user ids) until it
        #: ends.
        self.context: Context = call.context
        self.token: Token[Context] | None = None
        #: An LLM stream (ended by its end or exception event, or on collection).
        self.streaming = False
        #: A chat engine's streamed response (ended when its writer is done).
        self.awaits_writer = False
        #: What a chat engine's stream writer wrote (deltas, or the text it handed over).
        self.written: list[str] | None = None
        self.error: BaseException | None = None
        self.embedded_texts: list[str] = []
        self.embedded_vectors: list[list[float]] = []

    def release(self) -> None:
        """The model request below has been made (or the call ended): a later call of the same
        instance and kind is a call of its own."""
        self.released = True

    def detach(self) -> None:
        """Restore the caller's context (if this is the context the call was entered in)."""
        token, self.token = self.token, None
        if token is not None:
            with contextlib.suppress(ValueError):
                token.var.reset(token)

    @property
    def finish(self) -> CallFinish:
        """How the call ends once it streams (made when first needed: most calls never do)."""
        if self._finish is None:
            self._finish = CallFinish(self.call)
        return self._finish

    def ending(self) -> CallFinish:
        """Release the call and record what its events collected; the returned
        :class:`CallFinish` then ends it (the core's rule for how it ended)."""
        self._released()
        return self.finish

    def end(self, error: BaseException | None = None, attributes: Iterable[Pair] = ()) -> None:
        """The call returned (or raised ``error``); an error its writer saw counts too."""
        self._released()
        end_call(self.call, error=error or self.error, attributes=attributes)

    def _released(self) -> None:
        self.release()
        self.context = _NO_CONTEXT
        if not self.call.ended and (self.embedded_texts or self.embedded_vectors):
            self.call.set_attributes(
                embedding_attributes(texts=self.embedded_texts, vectors=self.embedded_vectors)
            )


def _enclosing_call(tracing: Tracing, context: Context) -> OpenCall | None:
    """The innermost LlamaIndex call running in ``context`` that is not released yet."""
    call = inside_call(tracing, context)
    while call is not None:
        opened = call.owner
        if isinstance(opened, OpenCall) and not opened.released:
            return opened
        call = call.enclosing
    return None


def _inside_same_call(enclosing: OpenCall | None, instance_key: int, kind: str) -> bool:
    """Whether a call of this instance and kind is already traced around this one (running, or
    its stream not started yet): ``chat()`` calling ``complete()`` is one model call."""
    while enclosing is not None:
        if enclosing.instance_key == instance_key and enclosing.kind == kind:
            return not enclosing.released
        enclosing = enclosing.enclosing
    return False


class CallTracker:
    """The spans of LlamaIndex's open calls, by LlamaIndex span id."""

    def __init__(self, get_tracing: Callable[[], Tracing]) -> None:
        self.get_tracing = get_tracing
        self.calls: dict[str, OpenCall] = {}

    def enter(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any,
        parent_id: str | None,
        tags: Mapping[str, Any],
    ) -> None:
        if not is_instrumentation_enabled():
            return
        name = id_.partition("-")[0]  # "RetrieverQueryEngine.query-<uuid4>"
        method = name.rpartition(".")[2]
        kind = span_kind(instance, method)
        if kind is None:
            return
        parent_context = context_api.get_current()
        tracing = self.get_tracing()
        # Released calls are skipped, e.g. a stream whose first chunk came.
        enclosing = _enclosing_call(tracing, parent_context)
        instance_key = None if instance is None else id(instance)
        if instance_key is not None and _inside_same_call(enclosing, instance_key, kind):
            return
        call = tracing.start(
            name, kind, framework=kind in (LLM, EMBEDDING), parent=parent_context, owner=self
        )
        arguments = bound_args.arguments
        call.set_attributes(extraction.call_input_attributes(kind, instance, arguments, tags))
        if kind == LLM:
            call.set_attributes(extraction.llm_request_attributes(instance, arguments))
        opened = OpenCall(call, kind, method, id_, parent_id)
        opened.instance_key, opened.enclosing = instance_key, enclosing
        call.owner = opened  # what inside_call finds for the calls below
        self.calls[id_] = opened
        opened.token = context_api.attach(opened.context)

    def exit(self, id_: str, result: Any) -> None:
        opened = self.calls.get(id_)
        if opened is None:
            return
        opened.detach()  # whatever the result, the caller gets back the context it had
        try:
            done = self._exit(opened, result)
        except Exception as exc:  # noqa: BLE001 - never break the host application
            log_once("llama_index: ending a span", exc)
            opened.end()
            done = True
        if done:
            self.calls.pop(id_, None)

    def _exit(self, opened: OpenCall, result: Any) -> bool:
        """End the call's span for ``result``; keep it (return False) while its stream runs."""
        if isinstance(result, (StreamingResponse, AsyncStreamingResponse)):
            _proxy_response_stream(opened, result)  # its chunks are produced under the query's
            return True
        if isinstance(result, (GeneratorType, AsyncGeneratorType)) and opened.kind == LLM:
            # Lazy: the model request is made while the caller iterates, each step under the
            # call's context (see streaming.StreamMethodPatch).
            offer_stream(result, opened.context, opened.finish)
            opened.streaming = True  # ended by the LLM's end or exception event, or on GC
            opened.finish.watch_stream()
            weakref.finalize(result, self._collected, opened.id)
            return False
        if isinstance(result, StreamingAgentChatResponse):
            # Ended by the writer that consumes the stream (a child call, maybe done already).
            opened.release()
            opened.awaits_writer = True
            opened.finish.watch_stream()
            weakref.finalize(result, self._collected, opened.id)
            return self._end_chat_stream(opened)
        opened.end(attributes=extraction.call_output_attributes(opened.kind, result))
        self._hand_over_written(opened)
        return True

    def drop(self, id_: str, error: BaseException | None) -> None:
        opened = self.calls.pop(id_, None)
        if opened is None:
            return
        opened.detach()
        # Older workflow runtimes end a run by raising WorkflowDone: that is a success.
        opened.end(None if type(error).__name__ == "WorkflowDone" else error)
        self._hand_over_written(opened)

    def _collected(self, call_id: str) -> None:
        """The stream of a call was garbage-collected (before it ended: abandoned)."""
        opened = self.calls.pop(call_id, None)
        if opened is not None:
            opened.ending().collected()

    def _hand_over_written(self, writer: OpenCall) -> None:
        """A chat engine's streaming call ends when the writer that consumed its stream does."""
        if writer.method not in STREAM_WRITERS or writer.parent_id is None:
            return
        engine = self.calls.get(writer.parent_id)
        if engine is not None:
            engine.written, engine.error = writer.written or [], engine.error or writer.error
            self._end_chat_stream(engine)

    def _end_chat_stream(self, engine: OpenCall) -> bool:
        """End a streaming chat call once it has returned and its writer is done (either order:
        the writer runs on its own thread or task)."""
        if not engine.awaits_writer or engine.written is None:
            return False
        attributes = output_value_attributes("".join(engine.written) or None)
        if engine.error is not None:
            engine.ending().raised(engine.error, attributes)
        else:
            engine.ending().completed(attributes)
        self.calls.pop(engine.id, None)
        return True

    # --- events ---

    def read(self, event: BaseEvent) -> None:
        opened = self.calls.get(event.span_id) if event.span_id else None
        reader = _EVENT_READERS.get(type(event).__name__)
        if opened is None or reader is None:
            return
        try:
            reader(self, opened, event)
        except Exception as exc:  # noqa: BLE001
            log_once(f"llama_index: reading {type(event).__name__}", exc)

    def chunk(self, opened: OpenCall, event: Any) -> None:
        if not opened.finish.started:
            opened.finish.first_token()
            opened.release()  # the model request below has been made

    def chat_end(self, opened: OpenCall, event: Any) -> None:
        if event.response is not None:
            opened.call.set_attributes(extraction.chat_response_attributes(event.response))
        if opened.streaming:
            self.calls.pop(opened.id, None)
            opened.ending().completed()

    def completion_end(self, opened: OpenCall, event: Any) -> None:
        opened.call.set_attributes(extraction.completion_response_attributes(event.response))
        if opened.streaming:
            self.calls.pop(opened.id, None)
            opened.ending().completed()

    def exception(self, opened: OpenCall, event: Any) -> None:
        if opened.streaming:  # the core's rule: a closed stream or a cancelled reader is early
            self.calls.pop(opened.id, None)
            opened.ending().raised(event.exception)

    def predict_start(self, opened: OpenCall, event: Any) -> None:
        template = event.template
        variables = {**template.kwargs, **(event.template_args or {})}
        opened.call.set(SpanAttributes.LLM_PROMPT_TEMPLATE, template.get_template())
        opened.call.set(SpanAttributes.LLM_PROMPT_TEMPLATE_VARIABLES, variables or None)

    def rerank_start(self, opened: OpenCall, event: Any) -> None:
        opened.kind = RERANKER  # a reranker whose class name does not say so
        opened.call.set(SpanAttributes.OPENINFERENCE_SPAN_KIND, RERANKER)
        opened.call.set(RerankerAttributes.RERANKER_TOP_K, event.top_n)
        opened.call.set(RerankerAttributes.RERANKER_MODEL_NAME, event.model_name or None)

    def embedding_start(self, opened: OpenCall, event: Any) -> None:
        model = event.model_dict.get("model_name")
        opened.call.set(SpanAttributes.EMBEDDING_MODEL_NAME, model if model != "unknown" else None)

    def embedding_end(self, opened: OpenCall, event: Any) -> None:
        opened.embedded_texts.extend(event.chunks)
        opened.embedded_vectors.extend(event.embeddings)

    def stream_delta(self, opened: OpenCall, event: Any) -> None:
        if opened.written is None:
            opened.written = []
        opened.written.append(event.delta)

    def stream_error(self, opened: OpenCall, event: Any) -> None:
        opened.error = event.exception

    def step_output(self, opened: OpenCall, event: Any) -> None:
        opened.call.set_attributes(output_value_attributes(event.output))


_EVENT_READERS: dict[str, Callable[[CallTracker, OpenCall, Any], None]] = {
    "LLMChatInProgressEvent": CallTracker.chunk,
    "LLMCompletionInProgressEvent": CallTracker.chunk,
    "LLMChatEndEvent": CallTracker.chat_end,
    "LLMCompletionEndEvent": CallTracker.completion_end,
    "ExceptionEvent": CallTracker.exception,
    "LLMPredictStartEvent": CallTracker.predict_start,
    "ReRankStartEvent": CallTracker.rerank_start,
    "EmbeddingStartEvent": CallTracker.embedding_start,
    "EmbeddingEndEvent": CallTracker.embedding_end,
    "StreamChatDeltaReceivedEvent": CallTracker.stream_delta,
    "StreamChatErrorEvent": CallTracker.stream_error,
    "WorkflowStepOutputEvent": CallTracker.step_output,
    "WorkflowRunOutputEvent": CallTracker.step_output,
}


def _proxy_response_stream(
    opened: OpenCall, response: StreamingResponse | AsyncStreamingResponse
) -> None:
    """Make the response's token stream run under the call's context and end the span with it."""
    stream = response.response_gen
    if stream is None:
        opened.end()
    elif isinstance(response, StreamingResponse):
        response.response_gen = ContextStreamProxy(stream, opened.call, opened.context)
    else:
        response.response_gen = AsyncContextStreamProxy(stream, opened.call, opened.context)


def _tracker_of(handler: BaseSpanHandler[BaseSpan] | BaseEventHandler) -> CallTracker:
    """The handler's tracker. ``handler._tracker`` would go through pydantic's ``__getattr__``
    (about 2 µs a read; LlamaIndex calls a handler three times per span), so it is read from
    pydantic's private-attribute store directly."""
    private = handler.__pydantic_private__
    tracker: CallTracker = private["_tracker"] if private else handler._tracker  # type: ignore[union-attr]
    return tracker


class ConvotelSpanHandler(BaseSpanHandler[BaseSpan]):
    """LlamaIndex's span-handler interface over a :class:`CallTracker` (which keeps the open
    calls; LlamaIndex's own span records are not used)."""

    _tracker: CallTracker = PrivateAttr()

    def __init__(self, tracker: CallTracker) -> None:
        super().__init__(open_spans={}, completed_spans=[], dropped_spans=[], current_span_ids={})
        self._tracker = tracker

    @classmethod
    def class_name(cls) -> str:
        return "ConvotelSpanHandler"

    def span_enter(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any | None = None,
        parent_id: str | None = None,
        tags: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            _tracker_of(self).enter(id_, bound_args, instance, parent_id, tags or {})
        except Exception as exc:  # noqa: BLE001 - never break the host application
            log_once("llama_index: starting a span", exc)

    def span_exit(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any | None = None,
        result: Any | None = None,
        **kwargs: Any,
    ) -> None:
        _tracker_of(self).exit(id_, result)

    def span_drop(
        self,
        id_: str,
        bound_args: inspect.BoundArguments,
        instance: Any | None = None,
        err: BaseException | None = None,
        **kwargs: Any,
    ) -> None:
        _tracker_of(self).drop(id_, err)

    def new_span(self, *args: Any, **kwargs: Any) -> None:
        return None

    def prepare_to_exit_span(self, *args: Any, **kwargs: Any) -> None:
        return None

    def prepare_to_drop_span(self, *args: Any, **kwargs: Any) -> None:
        return None


class ConvotelEventHandler(BaseEventHandler):
    """LlamaIndex's event-handler interface over a :class:`CallTracker`."""

    _tracker: CallTracker = PrivateAttr()

    def __init__(self, tracker: CallTracker) -> None:
        super().__init__()
        self._tracker = tracker

    @classmethod
    def class_name(cls) -> str:
        return "ConvotelEventHandler"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        _tracker_of(self).read(event)
