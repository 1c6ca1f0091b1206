"""How LlamaIndex streams stay in the trace of the call that started them, and how they end.

LlamaIndex evaluates streams lazily: an LLM's ``stream_chat`` returns a generator whose body (the
HTTP request included) runs when the caller iterates it, after LlamaIndex's span has exited and
the caller's context has been restored. Nothing is left attached to the caller's context; instead
each *step* of such a stream runs under the context of the call that returned it, the way the
core runs the steps of a generator decorated with ``using_session(...)`` (the core's step
runners in :mod:`convotel.context_scope`), so a provider instrumentor's span made during
iteration nests under the LlamaIndex span and is claimed by it:

* :class:`StreamMethodPatch` wraps the stream methods of every LlamaIndex LLM class (also those
  defined later); the wrapper hands back the generator the call returned, proxied by
  :class:`ContextStepGenerator` / :class:`AsyncContextStepGenerator`, with the context the call
  tracker offered for it (:func:`offer_stream`). A span handler cannot replace a result itself.
  Closing one ends the call through its :class:`~convotel.finish.CallFinish` (also when the
  stream never started, which LlamaIndex does not announce).
* :class:`ContextStreamProxy` / :class:`AsyncContextStreamProxy` replace a query engine's
  ``response_gen`` (a mutable field): each chunk is produced under the query's context, and the
  core's stream proxy ends the query span however the stream ends.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import wrapt
from opentelemetry.context import Context

from convotel.attributes import output_value_attributes
from convotel.call_span import CallSpan, Pair, log_once

# The core's step runners, the ones ``ContextScope`` drives a decorated generator's body with:
# a step runs under the body's context (a one-item list), keeps what the step changed there for
# the next step, and gives the caller back its own context before it returns.
from convotel.context_scope import await_step_in, run_step_in
from convotel.finish import CallFinish
from convotel.streams import AsyncStreamProxy, StreamProxy

if TYPE_CHECKING:  # wrapt >= 2 types ObjectProxy as a generic; wrapt 1.x cannot subscript it
    _ProxyBase = wrapt.ObjectProxy[Any]
else:
    _ProxyBase = wrapt.ObjectProxy

#: The LLM methods whose result is a lazy model stream (its request is made while iterating).
STREAM_METHODS = ("stream_chat", "stream_complete", "astream_chat", "astream_complete")

#: A stream a call offered: the stream, the call's context, how the call ends.
_Offer = tuple[Any, Context, CallFinish]
#: The streams offered by the calls inside the innermost wrapped stream method now running.
_offered_streams: ContextVar[list[_Offer] | None] = ContextVar(
    "convotel_llama_index_offered_streams", default=None
)


class ContextStepGenerator(_ProxyBase):
    """A generator whose every step (``next``, ``send``, ``throw``, ``close``) runs under
    ``context`` (with what earlier steps changed in it); the caller's context is restored when
    the step returns. Closing it ends the call (``finish``)."""

    def __init__(self, generator: Any, context: Context, finish: CallFinish) -> None:
        super().__init__(generator)
        self._self_body_context = [context]
        self._self_finish = finish

    def __iter__(self) -> ContextStepGenerator:
        return self

    def __next__(self) -> Any:
        return run_step_in(self._self_body_context, self.__wrapped__.__next__)

    def send(self, value: Any) -> Any:
        return run_step_in(self._self_body_context, self.__wrapped__.send, value)

    def throw(self, *args: Any) -> Any:
        return run_step_in(self._self_body_context, self.__wrapped__.throw, *args)

    def close(self) -> None:
        try:
            run_step_in(self._self_body_context, self.__wrapped__.close)
        finally:
            self._self_finish.closed()


class AsyncContextStepGenerator(_ProxyBase):
    """An async generator whose every step runs under ``context`` (see
    :class:`ContextStepGenerator`)."""

    def __init__(self, generator: Any, context: Context, finish: CallFinish) -> None:
        super().__init__(generator)
        self._self_body_context = [context]
        self._self_finish = finish

    def __aiter__(self) -> AsyncContextStepGenerator:
        return self

    async def __anext__(self) -> Any:
        return await await_step_in(self._self_body_context, self.__wrapped__.__anext__())

    async def asend(self, value: Any) -> Any:
        return await await_step_in(self._self_body_context, self.__wrapped__.asend(value))

    async def athrow(self, *args: Any) -> Any:
        return await await_step_in(self._self_body_context, self.__wrapped__.athrow(*args))

    async def aclose(self) -> None:
        try:
            await await_step_in(self._self_body_context, self.__wrapped__.aclose())
        finally:
            self._self_finish.closed()


def offer_stream(stream: Any, context: Context, finish: CallFinish) -> None:
    """Have the wrapped stream method that returns ``stream`` step it under ``context`` (and end
    the call with ``finish`` when it is closed)."""
    offered = _offered_streams.get()
    if offered is not None:
        offered.append((stream, context, finish))


def _stepping(result: Any, offered: list[_Offer]) -> Any:
    for stream, context, finish in offered:
        if stream is result:
            if hasattr(result, "__anext__"):
                return AsyncContextStepGenerator(result, context, finish)
            return ContextStepGenerator(result, context, finish)
    return result


async def _stepping_when_awaited(coroutine: Awaitable[Any]) -> Any:
    offered: list[_Offer] = []
    token = _offered_streams.set(offered)
    try:
        result = await coroutine
    finally:
        _offered_streams.reset(token)
    return _stepping(result, offered)


def _wrap_stream_method(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``wrapt`` wrapper of an LLM stream method (outside LlamaIndex's own span wrapper)."""
    offered: list[_Offer] = []
    token = _offered_streams.set(offered)
    try:
        result = wrapped(*args, **kwargs)
    finally:
        _offered_streams.reset(token)
    if inspect.iscoroutine(result):  # an async method: its span runs when awaited
        return _stepping_when_awaited(result)
    return _stepping(result, offered)


def _llm_classes(base: type) -> Iterator[type]:
    pending, seen = [base], set()
    while pending:
        cls = pending.pop()
        if cls not in seen:
            seen.add(cls)
            yield cls
            pending.extend(cls.__subclasses__())


class StreamMethodPatch:
    """Wraps the stream methods of every LlamaIndex LLM class, present and future (through
    ``BaseLLM.__init_subclass__``); :meth:`remove` puts back exactly what it found."""

    def __init__(self) -> None:
        self.originals: list[tuple[type, str, Any]] = []
        self.hooked: type | None = None
        self.previous_hook: Any = None

    def install(self) -> None:
        from llama_index.core.base.llms.base import BaseLLM

        for cls in _llm_classes(BaseLLM):
            self.wrap(cls)
        previous = self.previous_hook = vars(BaseLLM).get("__init_subclass__")
        wrap = self.wrap

        def init_subclass(cls: type[BaseLLM], /, **kwargs: Any) -> None:
            if previous is not None:
                previous.__get__(None, cls)(**kwargs)
            else:
                super(BaseLLM, cls).__init_subclass__(**kwargs)
            wrap(cls)  # after LlamaIndex has put its span wrapper on the class's methods

        type.__setattr__(BaseLLM, "__init_subclass__", classmethod(init_subclass))
        self.hooked = BaseLLM

    def wrap(self, cls: type) -> None:
        """Wrap the stream methods ``cls`` itself defines (never raises)."""
        try:
            for name in STREAM_METHODS:
                method = vars(cls).get(name)
                if (
                    method is None
                    or not callable(method)
                    or getattr(method, "__isabstractmethod__", False)
                    or getattr(method, "_self_wrapper", None) is _wrap_stream_method
                ):
                    continue
                setattr(cls, name, wrapt.FunctionWrapper(method, _wrap_stream_method))
                self.originals.append((cls, name, method))
        except Exception as exc:  # noqa: BLE001 - a class definition must never fail
            log_once("llama_index: wrapping an LLM's stream methods", exc)

    def remove(self) -> None:
        if self.hooked is not None:
            if self.previous_hook is None:
                type.__delattr__(self.hooked, "__init_subclass__")
            else:
                type.__setattr__(self.hooked, "__init_subclass__", self.previous_hook)
            self.hooked = None
        while self.originals:
            cls, name, original = self.originals.pop()
            setattr(cls, name, original)


class TextAccumulator:
    """Joins the text chunks of a response stream into the span's ``output.value``."""

    __slots__ = ("pieces",)

    def __init__(self) -> None:
        self.pieces: list[str] = []

    def process(self, chunk: Any) -> None:
        if isinstance(chunk, str):
            self.pieces.append(chunk)

    def attributes(self) -> list[Pair]:
        return list(output_value_attributes("".join(self.pieces)))


class ContextStreamProxy(StreamProxy):
    """A response stream whose chunks are produced under ``context``."""

    def __init__(self, stream: Any, call: CallSpan, context: Context) -> None:
        super().__init__(stream, call, TextAccumulator())
        self._self_body_context = [context]

    def __next__(self) -> Any:
        return run_step_in(self._self_body_context, super().__next__)


class AsyncContextStreamProxy(AsyncStreamProxy):
    """An async response stream whose chunks are produced under ``context``."""

    def __init__(self, stream: Any, call: CallSpan, context: Context) -> None:
        super().__init__(stream, call, TextAccumulator())
        self._self_body_context = [context]

    async def __anext__(self) -> Any:
        return await await_step_in(self._self_body_context, super().__anext__())
