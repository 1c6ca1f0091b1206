"""A wrapped SDK method's whole span lifecycle, so an adapter only says *what* to extract.

An adapter describes each wrapped method with an :class:`Endpoint`; :func:`sync_wrapper` /
:func:`async_wrapper` start its span, extract what it says, and end it through
:func:`~convotel.finish.end_call` (or hand back a stream proxy that will). Every hook is called
inside the core's guard: an exception in one is logged once and never reaches the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from openinference.semconv.trace import OpenInferenceSpanKindValues
from opentelemetry import context as context_api
from opentelemetry.context import Context
from opentelemetry.instrumentation.utils import is_instrumentation_enabled

from convotel.call_span import CallSpan, Pair, SpanKindValue, Tracing, log_once
from convotel.config import TraceConfig
from convotel.finish import StreamAccumulator, end_call
from convotel.streams import AsyncStreamProxy, StreamProxy

__all__ = ["Endpoint", "WrapperFunction", "async_wrapper", "sync_wrapper"]

WrapperFunction = Callable[[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]


class Endpoint:
    """What an adapter says about one wrapped method; override what applies, in a subclass.

    The defaults record nothing but the span kind and name. The wrappers look up once which
    hooks the subclass overrides and do not call the others (a hook set on an instance is not
    seen).
    """

    span_name: str = "call"
    kind: SpanKindValue = OpenInferenceSpanKindValues.LLM
    #: Start spans with ``framework=True`` (a framework's LLM/EMBEDDING span, see Tracing.start).
    framework: bool = False
    #: Make the running call findable with :func:`~convotel.call_span.inside_call`, by the
    #: wrapped ``instance`` or by the instrumentor's :class:`Tracing`.
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

    def provider_context(
        self, config: TraceConfig, instance: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> Context | None:
        """The context to start the call's span in when the request names the provider's own
        conversation (see :mod:`convotel.provider_sessions`); ``None``: the current one."""
        return None

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


def _overrides(endpoint: Endpoint, hook: str) -> bool:
    """Whether ``endpoint``'s class overrides the default ``hook`` (a call saved otherwise)."""
    return getattr(type(endpoint), hook) is not getattr(Endpoint, hook)


class _Hooks:
    """What an endpoint overrides, looked up once per wrapper instead of called every call."""

    __slots__ = ("adjusts", "filters", "kinds", "names", "reads_provider")

    def __init__(self, endpoint: Endpoint) -> None:
        self.filters = _overrides(endpoint, "applies")
        self.names = _overrides(endpoint, "name_for")
        self.kinds = _overrides(endpoint, "kind_for")
        self.reads_provider = _overrides(endpoint, "provider_context")
        self.adjusts = _overrides(endpoint, "adjust_kwargs")


def _start_call(
    tracing: Tracing,
    endpoint: Endpoint,
    hooks: _Hooks,
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    asynchronous: bool,
) -> tuple[CallSpan | None, dict[str, Any]]:
    try:
        if not is_instrumentation_enabled():
            return None, kwargs
        if hooks.filters and not endpoint.applies(instance, args, kwargs):
            return None, kwargs
        name = endpoint.name_for(instance, asynchronous) if hooks.names else endpoint.span_name
        kind = endpoint.kind_for(instance) if hooks.kinds else endpoint.kind
        owner = (instance if instance is not None else tracing) if endpoint.exposes_call else None
    except Exception as exc:  # noqa: BLE001
        log_once(f"{endpoint.span_name} starting a span", exc)
        return None, kwargs
    parent = None
    if hooks.reads_provider:
        try:
            parent = endpoint.provider_context(tracing.config, instance, args, kwargs)
        except Exception as exc:  # noqa: BLE001 - the call is traced without the provider's session
            log_once(f"{name} reading the provider's session", exc)
    try:
        call = tracing.start(name, kind, framework=endpoint.framework, parent=parent, owner=owner)
    except Exception as exc:  # noqa: BLE001
        log_once(f"{endpoint.span_name} starting a span", exc)
        return None, kwargs
    try:
        request = endpoint.request_attributes(instance, args, kwargs)
    except Exception as exc:  # noqa: BLE001 - an extractor failing when called
        log_once(f"{name} request", exc)
    else:
        call.set_attributes(request, f"{name} request")
    if not hooks.adjusts:
        return call, kwargs
    try:
        return call, endpoint.adjust_kwargs(kwargs)
    except Exception as exc:  # noqa: BLE001
        log_once(f"{name} adjusting the request", exc)
        return call, kwargs


def _finish_call(
    call: CallSpan, endpoint: Endpoint, response: Any, kwargs: Mapping[str, Any]
) -> Any:
    """End the span for ``response``, or hand back a stream proxy that will end it."""
    try:
        accumulator = endpoint.stream_accumulator(response, kwargs)
        if accumulator is not None:
            return endpoint.wrap_stream(response, call, accumulator)
        end_call(call, attributes=endpoint.response_attributes(response))
    except Exception as exc:  # noqa: BLE001
        log_once(f"{endpoint.span_name} response", exc)
        end_call(call)
    return response


def _fail_call(call: CallSpan, endpoint: Endpoint, exc: BaseException) -> None:
    call.record(lambda: endpoint.error_attributes(exc), f"{endpoint.span_name} error")
    end_call(call, error=exc)


def sync_wrapper(get_tracing: Callable[[], Tracing], endpoint: Endpoint) -> WrapperFunction:
    """A ``wrapt`` wrapper tracing a synchronous SDK method described by ``endpoint``."""

    hooks = _Hooks(endpoint)

    def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        call, call_kwargs = _start_call(
            get_tracing(), endpoint, hooks, instance, args, kwargs, False
        )
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
        return _finish_call(call, endpoint, response, kwargs)

    return wrapper


def async_wrapper(get_tracing: Callable[[], Tracing], endpoint: Endpoint) -> WrapperFunction:
    """A ``wrapt`` wrapper tracing an ``async def`` SDK method described by ``endpoint``."""

    hooks = _Hooks(endpoint)

    async def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        call, call_kwargs = _start_call(
            get_tracing(), endpoint, hooks, instance, args, kwargs, True
        )
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
        return _finish_call(call, endpoint, response, kwargs)

    return wrapper
