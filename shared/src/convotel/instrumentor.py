"""Base class for convotel instrumentors: wrap/unwrap bookkeeping over ``BaseInstrumentor``.

A subclass lists its :class:`WrapTarget`\\ s; the base wraps them with ``wrapt`` on
``instrument()`` and, on ``uninstrument()``, puts back the exact objects it found (so
``Completions.create is original`` holds again). ``instrument()`` twice does not double-wrap:
``BaseInstrumentor`` ignores the second call, and a target that already carries a convotel
wrapper is left alone.
"""

from __future__ import annotations

import copy
import importlib
import logging
from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, SupportsIndex

import wrapt
from opentelemetry import trace as trace_api
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)

from convotel.call_span import Tracing
from convotel.config import TraceConfig
from convotel.endpoints import Endpoint, WrapperFunction, async_wrapper, sync_wrapper
from convotel.pseudonyms import configure_user_id_key

__all__ = ["ConvotelInstrumentor", "WrapTarget"]

logger = logging.getLogger(__name__)

_MARKER = "__convotel_wrapper__"


if TYPE_CHECKING:  # wrapt >= 2 types these as generics; wrapt 1.x cannot subscript them
    _BoundBase = wrapt.BoundFunctionWrapper[Any, Any]
    _FunctionBase = wrapt.FunctionWrapper[Any, Any]
else:
    _BoundBase = wrapt.BoundFunctionWrapper
    _FunctionBase = wrapt.FunctionWrapper


def _resolve(module: str, qualname: str) -> Any:
    """Find a function by module and qualified name (how pickle finds plain functions)."""
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


class _CopyableBoundFunctionWrapper(_BoundBase):
    """A wrapped method bound to an instance that copies and pickles like a bound method."""

    def __copy__(self) -> Any:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        instance = copy.deepcopy(self._self_instance, memo)
        return getattr(instance, self.__name__)

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple[Any, ...]:
        return getattr, (self._self_instance, self.__name__)


class _CopyableFunctionWrapper(_FunctionBase):
    """``wrapt.FunctionWrapper`` that copies and pickles like the function it wraps.

    Plain wrapt proxies refuse ``copy.deepcopy`` and ``pickle``; host code (e.g. DSPy optimizers)
    deep-copies objects holding bound methods, which must keep working once instrumented.
    """

    __bound_function_wrapper__ = _CopyableBoundFunctionWrapper

    def __copy__(self) -> Any:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return self

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple[Any, ...]:
        return _resolve, (self.__module__, self.__qualname__)


@dataclass(frozen=True)
class WrapTarget:
    """One method to wrap: ``module`` and a dotted ``name`` such as ``"Completions.create"``.

    Give an :class:`~convotel.spans.Endpoint` (traced with the core's sync or async wrapper), or a
    ``wrapper`` factory that builds a custom ``wrapt`` wrapper from the instrumentor's
    :class:`~convotel.spans.Tracing` getter.
    """

    module: str
    name: str
    endpoint: Endpoint | None = None
    is_async: bool = False
    wrapper: Callable[[Callable[[], Tracing]], WrapperFunction] | None = None


class ConvotelInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Instruments the targets of :meth:`wrap_targets`; accepts ``tracer_provider`` and ``config``.

    ``instrument(tracer_provider=..., config=TraceConfig(...))``; both are optional (the global
    tracer provider and a config read from the environment are used otherwise).
    """

    #: The instrumentation scope name given to the tracer: the import name (``convotel.openai``).
    instrumentation_name: str = "convotel"
    instrumentation_version: str = "0"

    def __init__(self) -> None:
        if not hasattr(self, "_originals"):
            self._originals: list[tuple[Any, str, Any]] = []
            self._tracing: Tracing | None = None

    @abstractmethod
    def wrap_targets(self) -> Sequence[WrapTarget]:
        """The methods this instrumentor wraps."""

    @property
    def tracing(self) -> Tracing:
        """The tracer and configuration in use (a no-op default before ``instrument()``)."""
        if self._tracing is None:
            self._tracing = Tracing(trace_api.NoOpTracer(), TraceConfig())
        return self._tracing

    def _instrument(self, **kwargs: Any) -> None:
        config = kwargs.get("config")
        tracer = trace_api.get_tracer(
            self.instrumentation_name,
            self.instrumentation_version,
            tracer_provider=kwargs.get("tracer_provider"),
        )
        self._tracing = Tracing(tracer, config if isinstance(config, TraceConfig) else None)
        if self._tracing.config.user_id_key is not None:
            configure_user_id_key(self._tracing.config.user_id_key)
        for target in self.wrap_targets():
            self._wrap(target)

    def _uninstrument(self, **kwargs: Any) -> None:
        while self._originals:
            owner, attribute, original = self._originals.pop()
            setattr(owner, attribute, original)
        # Bound methods captured while instrumented (SDKs cache some, e.g. OpenAI's
        # `.with_raw_response`) keep calling the wrapper: with the tracing reset, they record
        # nothing.
        self._tracing = None

    def _get_tracing(self) -> Tracing:
        return self.tracing

    def _wrap(self, target: WrapTarget) -> None:
        try:
            owner: Any = importlib.import_module(target.module)
        except ImportError:
            logger.debug("convotel: %s is not installed; %s not traced", target.module, target.name)
            return
        *path, attribute = target.name.split(".")
        for part in path:
            owner = getattr(owner, part, None)
            if owner is None:
                logger.debug("convotel: %s.%s not found", target.module, target.name)
                return
        original = vars(owner).get(attribute)
        if original is None:
            logger.debug("convotel: %s.%s not found", target.module, target.name)
            return
        if getattr(getattr(original, "_self_wrapper", None), _MARKER, False):
            return  # already wrapped by convotel
        wrapper = self._wrapper_for(target)
        setattr(wrapper, _MARKER, True)
        wrapt.wrap_object(owner, attribute, _CopyableFunctionWrapper, (wrapper,))
        self._originals.append((owner, attribute, original))

    def _wrapper_for(self, target: WrapTarget) -> WrapperFunction:
        if target.wrapper is not None:
            return target.wrapper(self._get_tracing)
        if target.endpoint is None:
            raise ValueError(f"WrapTarget {target.name} needs an endpoint or a wrapper")
        factory = async_wrapper if target.is_async else sync_wrapper
        return factory(self._get_tracing, target.endpoint)
