"""The one way convotel opens, fills and ends a span, for every adapter.

* :class:`Tracing` starts spans of an OpenInference kind carrying the context's session, user,
  metadata, tags and prompt-template attributes.
* :class:`CallSpan` sets attributes safely (``None`` dropped, dicts JSON-encoded, masked by the
  :class:`~convotel.config.TraceConfig`, never raises), records exceptions and ends exactly once.
* :class:`Endpoint` + :func:`sync_wrapper` / :func:`async_wrapper` own a wrapped SDK method's whole
  span lifecycle, so an adapter only says *what* to extract.
* :class:`StreamProxy` / :class:`AsyncStreamProxy` wrap returned streams transparently and end the
  span however the stream ends: exhausted, closed, ``with`` exit, broken out of, error, or garbage
  collection (then marked abandoned). A failure the provider reports *inside* a stream (an error
  event after an HTTP success) fails the span too, through the accumulator's optional ``error()``.

Guarding happens here, at the boundary with the user's call path: errors in convotel's own code are
logged once per place and swallowed; the user's exceptions pass through as the same object.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

import wrapt
from openinference.semconv.trace import OpenInferenceSpanKindValues, SpanAttributes
from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.context import Context
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE
from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from convotel.config import TraceConfig
from convotel.context import CONTEXT_ATTRIBUTES, get_attributes_from_context
from convotel.genai import genai_attributes
from convotel.json_encoding import safe_json_dumps, valid_unicode

__all__ = [
    "STREAM_OUTCOME",
    "TIME_TO_FIRST_TOKEN_MS",
    "AsyncStreamProxy",
    "CallSpan",
    "Endpoint",
    "ObjectProxy",
    "Pair",
    "StreamAccumulator",
    "StreamError",
    "StreamOutcome",
    "StreamProxy",
    "StreamWatch",
    "Tracing",
    "active_call",
    "async_wrapper",
    "log_once",
    "stream_outcome_for",
    "sync_wrapper",
]

logger = logging.getLogger("convotel")

Pair = tuple[str, Any]
SpanKindValue = OpenInferenceSpanKindValues | str

#: How a streamed call ended: one of :class:`StreamOutcome`'s values.
STREAM_OUTCOME = "convotel.stream.outcome"
#: Milliseconds from the start of the call to the first streamed chunk.
TIME_TO_FIRST_TOKEN_MS = "convotel.stream.time_to_first_token_ms"
#: Set on a framework LLM span whose tokens were recorded by a provider span below it.
DEFERRED_TO_PROVIDER = "convotel.llm.deferred_to_provider"

_KIND = SpanAttributes.OPENINFERENCE_SPAN_KIND
_LLM = OpenInferenceSpanKindValues.LLM.value
_EMBEDDING = OpenInferenceSpanKindValues.EMBEDDING.value
_CHAIN = OpenInferenceSpanKindValues.CHAIN.value
_KIND_VALUES: dict[object, str] = {kind: kind.value for kind in OpenInferenceSpanKindValues}
_TOKEN_COUNT_PREFIX = "llm.token_count"
_OK = Status(StatusCode.OK)
_CONTEXT_KEYS = frozenset(CONTEXT_ATTRIBUTES)
_CLAIM_KEY = context_api.create_key("convotel-model-call-claim")
_ACTIVE_CALL_KEY = context_api.create_key("convotel-active-call")
_WATCHED_STREAMS_KEY = context_api.create_key("convotel-watched-streams")
_PLAIN_TYPES = (str, bool, int, float)
_PLAIN_TYPE_SET = frozenset(_PLAIN_TYPES)
_NUMBER_TYPE_SET = frozenset((int, float))
#: OTLP carries integers as int64; larger ones are recorded as their JSON text.
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

_logged: set[str] = set()

if TYPE_CHECKING:  # wrapt >= 2 types ObjectProxy as a generic; wrapt 1.x cannot subscript it
    ObjectProxy = wrapt.ObjectProxy[Any]
else:
    ObjectProxy = wrapt.ObjectProxy


def log_once(where: str, exc: BaseException | None = None) -> None:
    """Log a failure of convotel's own code once per place, never raising."""
    if where in _logged:
        return
    _logged.add(where)
    logger.warning("convotel: %s failed; instrumentation continues", where, exc_info=exc)


class StreamOutcome(str, Enum):
    """Values of :data:`STREAM_OUTCOME`."""

    COMPLETED = "completed"
    CLOSED_EARLY = "closed_early"
    ERROR = "error"
    ABANDONED = "abandoned"


def _attribute_value(value: Any) -> AttributeValue | None:
    """Coerce ``value`` to something OpenTelemetry accepts; dicts and objects become JSON."""
    if isinstance(value, _PLAIN_TYPES):
        if isinstance(value, int) and not _INT64_MIN <= value <= _INT64_MAX:
            return safe_json_dumps(value)
        return value
    if value is None:
        return None
    if isinstance(value, Enum):
        return _attribute_value(value.value)
    if isinstance(value, (list, tuple)):
        item_types = set(map(type, value))  # one pass in C: vectors are thousands of floats
        if int in item_types and any(
            type(item) is int and not _INT64_MIN <= item <= _INT64_MAX for item in value
        ):
            return safe_json_dumps(value)
        if len(item_types) == 1 and item_types <= _PLAIN_TYPE_SET:
            return value if type(value) is list else list(value)
        if item_types <= _NUMBER_TYPE_SET:
            return [float(item) for item in value]  # sequences must be of one type
        if all(isinstance(item, str) for item in value):  # str subclasses, e.g. str enums
            return [str.__str__(item) for item in value]  # the text, not an enum's name
        return safe_json_dumps(value)
    return safe_json_dumps(value)


def _encodable(value: AttributeValue | None) -> AttributeValue | None:
    """``value`` with its text made valid Unicode: OTLP cannot encode a lone surrogate (e.g. a
    reply cut inside an emoji) and its exporter would drop the attribute."""
    if isinstance(value, str):
        return value if value.isascii() else valid_unicode(value)
    if isinstance(value, list) and value and isinstance(value[0], str):
        return [item if item.isascii() else valid_unicode(item) for item in value]
    return value


class _ModelCallClaim:
    """Lets a provider span tell the framework LLM span above it that it recorded the call."""

    __slots__ = ("provider_seen",)

    def __init__(self) -> None:
        self.provider_seen = False


class CallSpan:
    """A span being filled for one call; every method is safe to call from the user's call path."""

    __slots__ = ("_claim", "_config", "_ended", "_pending", "_start_ns", "context", "span")

    def __init__(
        self,
        span: Span,
        context: Context,
        config: TraceConfig,
        claim: _ModelCallClaim | None = None,
    ) -> None:
        self.span = span
        #: The context with this span current (and the model-call claim, for framework spans).
        self.context = context
        self._config = config
        self._claim = claim
        self._pending: dict[str, AttributeValue] = {}
        self._ended = False
        self._start_ns = time.monotonic_ns()

    @property
    def ended(self) -> bool:
        return self._ended

    def set(self, key: str, value: Any) -> None:
        """Record one attribute (applied when the span ends); ``None`` is ignored."""
        self.set_attributes(((key, value),), "recording an attribute")

    def set_attributes(self, pairs: Iterable[Pair], where: str = "attribute extraction") -> None:
        """Record the pairs an extractor yields; an extractor that raises is logged once."""
        pending, unchanged = self._pending, self._config.unchanged_keys
        try:
            for key, value in pairs:
                if (
                    type(value) in _PLAIN_TYPE_SET
                    and key in unchanged
                    and (type(value) is not int or _INT64_MIN <= value <= _INT64_MAX)
                    and (type(value) is not str or value.isascii())  # O(1): a flag in CPython
                ):
                    pending[key] = value  # the hot path: a plain value recorded as it is
                elif value is not None:
                    self._record_converted(key, value)
        except Exception as exc:  # noqa: BLE001 - extraction must never reach the caller
            log_once(where, exc)

    def _record_converted(self, key: str, value: Any) -> None:
        """Record a value that needs converting (JSON, sequences) or masking; never ``None``."""
        coerced = _encodable(_attribute_value(value))  # before masking: JSON is truncated too
        if coerced is None:
            return
        masked = self._config.mask(key, coerced)
        if masked is not None:
            self._pending[key] = masked

    def first_token(self) -> None:
        """Record the time to the first streamed chunk."""
        elapsed_ms = (time.monotonic_ns() - self._start_ns) / 1e6
        self._pending[TIME_TO_FIRST_TOKEN_MS] = round(elapsed_ms, 3)

    def record_failure(self, error_type: str, description: str) -> None:
        """Mark the span as failed without an exception (e.g. an error reported in a stream)."""
        try:
            self._pending[ERROR_TYPE] = error_type
            self.span.set_status(Status(StatusCode.ERROR, description))
        except Exception as exc:  # noqa: BLE001
            log_once("recording a failure", exc)

    def record_exception(self, exc: BaseException) -> None:
        """Mark the span as failed by ``exc`` (status ERROR, exception event, HTTP status)."""
        try:  # the status first: the exception event below needs str(exc), which may fail
            self._pending[ERROR_TYPE] = type(exc).__qualname__
            self.span.set_status(
                Status(StatusCode.ERROR, f"{type(exc).__name__}: {_describe(exc)}")
            )
            status_code = _http_status(exc)
            if status_code is not None:
                self._pending[HTTP_RESPONSE_STATUS_CODE] = status_code
            self.span.record_exception(exc)
        except Exception as inner:  # noqa: BLE001
            log_once("recording an exception", inner)

    def end(
        self,
        error: BaseException | None = None,
        attributes: Iterable[Pair] = (),
        *,
        ok: bool = True,
    ) -> None:
        """End the span once, recording ``attributes`` and ``error``; later calls do nothing.

        Without an error the status is OK, or left unset with ``ok=False`` (e.g. an abandoned
        stream: neither a success nor a failure).
        """
        if self._ended:
            return
        self._ended = True
        try:
            self.set_attributes(attributes)
            if error is not None:
                self.record_exception(error)
            elif ok:
                self.span.set_status(_OK)
            pending = self._pending
            if self._claim is not None and self._claim.provider_seen:
                pending = {
                    k: v for k, v in pending.items() if not k.startswith(_TOKEN_COUNT_PREFIX)
                }
                pending[DEFERRED_TO_PROVIDER] = True
                if self.span.is_recording() and _span_kind(self.span) in (_LLM, _EMBEDDING):
                    pending[_KIND] = _CHAIN
            if self._config.enable_genai_semconv:
                pending = {**pending, **_genai_pairs(self.span, pending)}
            if pending:
                self.span.set_attributes(pending)
            self.span.end()
        except Exception as exc:  # noqa: BLE001
            log_once("ending a span", exc)


def _genai_pairs(span: Span, pending: Mapping[str, Any]) -> dict[str, Any]:
    recorded = getattr(span, "attributes", None)
    combined = {**recorded, **pending} if isinstance(recorded, Mapping) else dict(pending)
    return dict(genai_attributes(combined))


def _span_kind(span: Span) -> object:
    attributes = getattr(span, "attributes", None)
    return attributes.get(_KIND) if isinstance(attributes, Mapping) else None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - an exception whose message cannot be printed
        return "<unprintable message>"


def _http_status(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    if not isinstance(status, int):
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
    valid = isinstance(status, int) and not isinstance(status, bool) and 100 <= status <= 599
    return status if valid else None


class Tracing:
    """Starts :class:`CallSpan`s for one instrumentor (its tracer and trace configuration)."""

    __slots__ = ("config", "tracer")

    def __init__(self, tracer: trace_api.Tracer, config: TraceConfig | None = None) -> None:
        self.tracer = tracer
        self.config = config if config is not None else TraceConfig()

    def start(
        self,
        name: str,
        kind: SpanKindValue,
        attributes: Iterable[Pair] = (),
        *,
        framework: bool = False,
        parent: Context | None = None,
    ) -> CallSpan:
        """Start a span with the context's session/user/... attributes plus ``attributes``.

        ``framework=True`` marks an LLM or EMBEDDING span of a framework adapter (LlamaIndex,
        DSPy): if a provider adapter (OpenAI, Mistral) records the model call below it, this span
        drops its token counts and becomes CHAIN, so one model call is one LLM (or EMBEDDING)
        span and a session's tokens are counted once.
        """
        ctx = parent if parent is not None else context_api.get_current()
        kind_value = _KIND_VALUES.get(kind) or (kind.value if isinstance(kind, Enum) else kind)
        initial: dict[str, AttributeValue] = {_KIND: kind_value}
        if not _CONTEXT_KEYS.isdisjoint(ctx):  # cheaper than seven lookups when none is set
            initial.update(get_attributes_from_context(ctx))
        claim = None
        if kind_value in (_LLM, _EMBEDDING):
            if framework:
                claim = _ModelCallClaim()
            else:
                outer_claim = ctx.get(_CLAIM_KEY)
                if isinstance(outer_claim, _ModelCallClaim):
                    outer_claim.provider_seen = True
        span = self.tracer.start_span(name, context=ctx, attributes=initial)
        span_context = trace_api.set_span_in_context(span, ctx)
        if claim is not None:
            span_context = context_api.set_value(_CLAIM_KEY, claim, span_context)
        call = CallSpan(span, span_context, self.config, claim)
        call.set_attributes(attributes)
        return call


@dataclass(frozen=True)
class StreamError:
    """A failure the provider reported inside a stream that was delivered successfully."""

    #: The span's status description: the provider's message.
    description: str
    #: The ``error.type`` attribute: the provider's error code, else the event's type.
    type: str


class StreamAccumulator(Protocol):
    """Collects what a stream's chunks say, for the attributes recorded when it ends.

    An accumulator may also define ``error() -> StreamError | None``: a :class:`StreamError` when
    the provider said, in the stream, that the call failed. The span then ends with status ERROR
    and outcome ``error`` however the stream ended; every chunk still reaches the application.
    """

    def process(self, chunk: Any) -> bool | None:
        """Look at one chunk; return ``False`` to hide it from the application."""

    def attributes(self) -> Iterable[Pair]:
        """The attributes to record when the stream ends."""


class Endpoint:
    """What an adapter says about one wrapped method; override what applies.

    The defaults record nothing but the span kind and name; every method is called inside the
    core's guard, so an exception here is logged once and never reaches the caller.
    """

    span_name: str = "call"
    kind: SpanKindValue = OpenInferenceSpanKindValues.LLM
    #: Start spans with ``framework=True`` (a framework's LLM/EMBEDDING span, see Tracing.start).
    framework: bool = False
    #: Make the call findable with :func:`active_call` (``instance``) while it runs.
    exposes_call: bool = False

    def name_for(self, instance: Any, asynchronous: bool) -> str:
        """The span name for this call (default: :attr:`span_name`)."""
        return self.span_name

    def kind_for(self, instance: Any) -> SpanKindValue:
        """The span kind for this call (default: :attr:`kind`)."""
        return self.kind

    def applies(self, instance: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bool:
        """Whether this call should be traced at all (e.g. not a model call)."""
        return True

    def adjust_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Return the keyword arguments to call the SDK with (default: unchanged)."""
        return kwargs

    def request_attributes(
        self, instance: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> Iterator[Pair]:
        """Attributes known before the call (model, messages, parameters...)."""
        return iter(())

    def response_attributes(self, response: Any) -> Iterator[Pair]:
        """Attributes of a non-streamed response."""
        return iter(())

    def finish_attributes(self, instance: Any, response: Any) -> Iterator[Pair]:
        """Attributes of a non-streamed result, for endpoints that need the instance too."""
        return self.response_attributes(response)

    def stream_accumulator(
        self, response: Any, kwargs: Mapping[str, Any]
    ) -> StreamAccumulator | None:
        """An accumulator when ``response`` is a stream to proxy, else ``None``."""
        return None

    def error_attributes(self, exc: BaseException) -> Iterator[Pair]:
        """Extra attributes of a failed call (the HTTP status is recorded by the core)."""
        return iter(())

    def wrap_stream(self, response: Any, call: CallSpan, accumulator: StreamAccumulator) -> Any:
        """Return the object handed to the application in place of a stream."""
        if hasattr(response, "__aiter__"):
            return AsyncStreamProxy(response, call, accumulator)
        return StreamProxy(response, call, accumulator)


def _start_call(
    tracing: Tracing,
    endpoint: Endpoint,
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    asynchronous: bool,
) -> tuple[CallSpan | None, dict[str, Any]]:
    try:
        if not is_instrumentation_enabled() or not endpoint.applies(instance, args, kwargs):
            return None, kwargs
        name = endpoint.name_for(instance, asynchronous)
        call = tracing.start(name, endpoint.kind_for(instance), framework=endpoint.framework)
        if endpoint.exposes_call:
            call.context = context_api.set_value(_ACTIVE_CALL_KEY, (instance, call), call.context)
    except Exception as exc:  # noqa: BLE001
        log_once(f"{endpoint.span_name} starting a span", exc)
        return None, kwargs
    _extract(call, lambda: endpoint.request_attributes(instance, args, kwargs), f"{name} request")
    try:
        return call, endpoint.adjust_kwargs(kwargs)
    except Exception as exc:  # noqa: BLE001
        log_once(f"{name} adjusting the request", exc)
        return call, kwargs


def active_call(owner: object) -> CallSpan | None:
    """The running call of ``owner`` (an endpoint with ``exposes_call``) in this context, if any.

    Lets code that runs *inside* a traced call (e.g. a usage hook) add to that call's span.
    """
    active = context_api.get_value(_ACTIVE_CALL_KEY)
    if isinstance(active, tuple) and active[0] is owner:
        call = active[1]
        return call if isinstance(call, CallSpan) and not call.ended else None
    return None


def _extract(call: CallSpan, produce: Callable[[], Iterable[Pair]], where: str) -> None:
    """Record what ``produce`` yields; an extractor failing when called or iterated is logged."""
    try:
        call.set_attributes(produce(), where)
    except Exception as exc:  # noqa: BLE001
        log_once(where, exc)


def _finish_call(
    call: CallSpan, endpoint: Endpoint, instance: Any, response: Any, kwargs: Mapping[str, Any]
) -> Any:
    """End the span for ``response``, or hand back a stream proxy that will end it."""
    try:
        accumulator = endpoint.stream_accumulator(response, kwargs)
        if accumulator is not None:
            return endpoint.wrap_stream(response, call, accumulator)
        call.end(attributes=endpoint.finish_attributes(instance, response))
    except Exception as exc:  # noqa: BLE001
        log_once(f"{endpoint.span_name} response", exc)
        call.end()
    return response


def _fail_call(call: CallSpan, endpoint: Endpoint, exc: BaseException) -> None:
    _extract(call, lambda: endpoint.error_attributes(exc), f"{endpoint.span_name} error")
    call.end(error=exc)


WrapperFunction = Callable[[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]


def sync_wrapper(get_tracing: Callable[[], Tracing], endpoint: Endpoint) -> WrapperFunction:
    """A ``wrapt`` wrapper tracing a synchronous SDK method described by ``endpoint``."""

    def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        call, call_kwargs = _start_call(get_tracing(), endpoint, instance, args, kwargs, False)
        if call is None:
            return wrapped(*args, **kwargs)
        token = context_api.attach(call.context)
        try:
            response = wrapped(*args, **call_kwargs)
        except BaseException as exc:
            _fail_call(call, endpoint, exc)
            raise
        finally:
            context_api.detach(token)
        return _finish_call(call, endpoint, instance, response, kwargs)

    return wrapper


def async_wrapper(get_tracing: Callable[[], Tracing], endpoint: Endpoint) -> WrapperFunction:
    """A ``wrapt`` wrapper tracing an ``async def`` SDK method described by ``endpoint``."""

    async def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        call, call_kwargs = _start_call(get_tracing(), endpoint, instance, args, kwargs, True)
        if call is None:
            return await wrapped(*args, **kwargs)
        token = context_api.attach(call.context)
        try:
            response = await wrapped(*args, **call_kwargs)
        except BaseException as exc:
            _fail_call(call, endpoint, exc)
            raise
        finally:
            context_api.detach(token)
        return _finish_call(call, endpoint, instance, response, kwargs)

    return wrapper


# --- stream proxies ---------------------------------------------------------------------------


class StreamWatch:
    """The streams the instrumentors return within one unit of work, such as a web request.

    ``context = watch.install(context)``; when the reader of those streams goes away (a web
    client disconnects), :meth:`reader_gone` says so: from then on a watched stream that is
    garbage-collected unfinished ends as closed early (with the partial reply and the given
    attributes) rather than abandoned, and :meth:`close_open` ends the ones still open. The
    streams themselves are left to their owner.
    """

    __slots__ = ("_streams", "stop_attributes")

    def __init__(self) -> None:
        self._streams: weakref.WeakSet[_StreamState] = weakref.WeakSet()
        self.stop_attributes: dict[str, Any] | None = None

    def install(self, context: Context) -> Context:
        return context_api.set_value(_WATCHED_STREAMS_KEY, self, context)

    def reader_gone(self, attributes: Mapping[str, Any]) -> None:
        self.stop_attributes = dict(attributes)

    def close_open(self) -> int:
        """End the still-open watched streams as closed early; returns how many ended."""
        attributes = self.stop_attributes or {}
        ended = 0
        for state in list(self._streams):
            if not state.call.ended:
                state.stop(attributes)
                ended += 1
        return ended


def stream_outcome_for(exc: BaseException) -> StreamOutcome:
    """A cancelled task or a closed generator stops reading a stream: early, not an error."""
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        return StreamOutcome.CLOSED_EARLY
    return StreamOutcome.ERROR


class _StreamState:
    """What both proxies track: the span, the accumulator, and whether the first chunk came."""

    __slots__ = ("__weakref__", "accumulator", "call", "exhausted", "started", "watch")

    def __init__(self, call: CallSpan, accumulator: StreamAccumulator) -> None:
        self.call = call
        self.accumulator = accumulator
        self.started = False
        self.exhausted = False
        watch = context_api.get_value(_WATCHED_STREAMS_KEY)
        self.watch = watch if isinstance(watch, StreamWatch) else None
        if self.watch is not None:
            self.watch._streams.add(self)

    def stop(self, attributes: Mapping[str, Any]) -> None:
        """End as closed early because the reader went away, recording ``attributes``."""
        self.call.set_attributes(attributes.items(), "stopping a watched stream")
        self.finish(StreamOutcome.CLOSED_EARLY)

    def deliver(self, chunk: Any) -> bool:
        """Feed one chunk to the accumulator; ``False`` means hide it from the application."""
        if not self.started:
            self.started = True
            self.call.first_token()
        try:
            return self.accumulator.process(chunk) is not False
        except Exception as exc:  # noqa: BLE001
            log_once("stream chunk extraction", exc)
            return True

    def finish(self, outcome: StreamOutcome, error: BaseException | None = None) -> None:
        call = self.call
        if call.ended:
            return
        reported = self.reported_error() if error is None else None
        if reported is not None:
            outcome = StreamOutcome.ERROR
        call.set(STREAM_OUTCOME, outcome.value)
        _extract(call, self.accumulator.attributes, "stream attributes")
        if reported is not None:
            call.record_failure(reported.type, reported.description)
        call.end(error=error, ok=outcome not in (StreamOutcome.ABANDONED, StreamOutcome.ERROR))

    def reported_error(self) -> StreamError | None:
        """The failure the accumulator saw in the stream, if it reports one."""
        try:
            report = getattr(self.accumulator, "error", None)
            reported = report() if callable(report) else None
        except Exception as exc:  # noqa: BLE001
            log_once("stream error report", exc)
            return None
        return reported if isinstance(reported, StreamError) else None


class StreamProxy(ObjectProxy):
    """A transparent proxy for a synchronous stream that ends the call's span exactly once."""

    def __init__(self, stream: Any, call: CallSpan, accumulator: StreamAccumulator) -> None:
        super().__init__(stream)
        self._self_state = _StreamState(call, accumulator)
        self._self_iterator: Iterator[Any] | None = None

    def __iter__(self) -> StreamProxy:
        return self

    def __next__(self) -> Any:
        state = self._self_state
        if self._self_iterator is None:
            self._self_iterator = iter(self.__wrapped__)
        while True:
            try:
                chunk = next(self._self_iterator)
            except StopIteration:
                state.exhausted = True
                state.finish(StreamOutcome.COMPLETED)
                raise
            except BaseException as exc:
                outcome = stream_outcome_for(exc)
                state.finish(outcome, exc if outcome is StreamOutcome.ERROR else None)
                raise
            if state.deliver(chunk):
                return chunk

    def __enter__(self) -> StreamProxy:
        enter = getattr(self.__wrapped__, "__enter__", None)
        if enter is not None:
            enter()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Any:
        try:
            exit_method = getattr(self.__wrapped__, "__exit__", None)
            return exit_method(exc_type, exc, tb) if exit_method is not None else None
        finally:
            _end_closed(self)

    def __getattr__(self, name: str) -> Any:
        return _proxied_attribute(self, name, ("close",))

    def __del__(self) -> None:
        _end_abandoned(self)


class AsyncStreamProxy(ObjectProxy):
    """A transparent proxy for an asynchronous stream that ends the call's span exactly once."""

    def __init__(self, stream: Any, call: CallSpan, accumulator: StreamAccumulator) -> None:
        super().__init__(stream)
        self._self_state = _StreamState(call, accumulator)
        self._self_iterator: Any = None

    def __aiter__(self) -> AsyncStreamProxy:
        return self

    async def __anext__(self) -> Any:
        state = self._self_state
        if self._self_iterator is None:
            self._self_iterator = self.__wrapped__.__aiter__()
        while True:
            try:
                chunk = await self._self_iterator.__anext__()
            except StopAsyncIteration:
                state.exhausted = True
                state.finish(StreamOutcome.COMPLETED)
                raise
            except BaseException as exc:
                outcome = stream_outcome_for(exc)
                state.finish(outcome, exc if outcome is StreamOutcome.ERROR else None)
                raise
            if state.deliver(chunk):
                return chunk

    async def __aenter__(self) -> AsyncStreamProxy:
        enter = getattr(self.__wrapped__, "__aenter__", None)
        if enter is not None:
            await enter()
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> Any:
        try:
            exit_method = getattr(self.__wrapped__, "__aexit__", None)
            return await exit_method(exc_type, exc, tb) if exit_method is not None else None
        finally:
            _end_closed(self)

    def __getattr__(self, name: str) -> Any:
        return _proxied_attribute(self, name, ("close", "aclose"))

    def __del__(self) -> None:
        _end_abandoned(self)


def _proxied_attribute(proxy: Any, name: str, closers: tuple[str, ...]) -> Any:
    """Forward attribute access; a closing method also ends the span when called."""
    if name.startswith("_self_"):
        raise AttributeError(name)
    attribute = getattr(proxy.__wrapped__, name)
    if name not in closers or not callable(attribute):
        return attribute
    if inspect.iscoroutinefunction(attribute):

        async def close_and_end_async(*args: Any, **kwargs: Any) -> Any:
            try:
                return await attribute(*args, **kwargs)
            finally:
                _end_closed(proxy)

        return close_and_end_async

    def close_and_end(*args: Any, **kwargs: Any) -> Any:
        try:
            return attribute(*args, **kwargs)
        finally:
            _end_closed(proxy)

    return close_and_end


def _end_closed(proxy: Any) -> None:
    """End a proxied stream's span after a close or a ``with`` exit (completed or early)."""
    state: _StreamState = proxy._self_state
    state.finish(StreamOutcome.COMPLETED if state.exhausted else StreamOutcome.CLOSED_EARLY)


def _end_abandoned(proxy: Any) -> None:
    """End a stream's span from the proxy's finalizer: nobody finished or closed it."""
    try:
        state = proxy._self_state
    except (AttributeError, ValueError):  # __init__ did not complete
        return
    if state.call.ended:
        return
    stopped = state.watch.stop_attributes if state.watch is not None else None
    if stopped is not None:  # its reader went away (a web client disconnected)
        state.stop(stopped)
    else:
        state.finish(StreamOutcome.ABANDONED)
