"""Transparent proxies for the streams SDK calls return, ending the call's span however the
stream ends: exhausted, closed, ``with`` exit, broken out of, error, cancelled, or garbage
collection. What each of those means for the span is :class:`~convotel.finish.CallFinish`'s rule.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import wrapt

from convotel.call_span import CallSpan, log_once
from convotel.finish import CallFinish, StreamAccumulator

__all__ = ["AsyncStreamProxy", "ObjectProxy", "StreamProxy"]

if TYPE_CHECKING:  # wrapt >= 2 types ObjectProxy as a generic; wrapt 1.x cannot subscript it
    ObjectProxy = wrapt.ObjectProxy[Any]
else:
    ObjectProxy = wrapt.ObjectProxy


class _EndingProxy(ObjectProxy):
    """What both stream proxies share: the call's :class:`CallFinish`, and its end when the proxy
    is garbage-collected unfinished."""

    def __init__(
        self,
        stream: Any,
        call: CallSpan,
        accumulator: StreamAccumulator,
        finish: CallFinish | None = None,
    ) -> None:
        """``finish``: the call's own :class:`CallFinish` when it has one already (a deferred
        response that became this stream), else a new one over ``call`` and ``accumulator``."""
        super().__init__(stream)
        self._self_state = finish if finish is not None else CallFinish(call, accumulator)

    def __del__(self) -> None:
        _end_abandoned(self)


class StreamProxy(_EndingProxy):
    """A transparent proxy for a synchronous stream that ends the call's span exactly once."""

    _self_iterator: Iterator[Any] | None = None

    def __iter__(self) -> StreamProxy:
        return self

    def __next__(self) -> Any:
        state: CallFinish = self._self_state
        iterator = self._self_iterator
        if iterator is None:
            iterator = self._self_iterator = iter(self.__wrapped__)
        while True:
            try:
                chunk = next(iterator)
            except StopIteration:
                state.completed()
                raise
            except BaseException as exc:
                state.raised(exc)
                raise
            # CallFinish.deliver, inlined: this runs for every chunk (one Python frame less).
            if not state.started:
                state.first_token()
            try:
                if state.accumulator.process(chunk) is not False:
                    return chunk
            except Exception as exc:  # noqa: BLE001
                log_once("stream chunk extraction", exc)
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


class AsyncStreamProxy(_EndingProxy):
    """A transparent proxy for an asynchronous stream that ends the call's span exactly once."""

    _self_iterator: Any = None

    def __aiter__(self) -> AsyncStreamProxy:
        return self

    async def __anext__(self) -> Any:
        state: CallFinish = self._self_state
        if self._self_iterator is None:
            self._self_iterator = self.__wrapped__.__aiter__()
        while True:
            try:
                chunk = await self._self_iterator.__anext__()
            except StopAsyncIteration:
                state.completed()
                raise
            except BaseException as exc:
                state.raised(exc)
                raise
            if state.deliver(chunk):  # not inlined: an await per chunk costs far more here
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
    state: CallFinish = proxy._self_state
    state.closed()


def _end_abandoned(proxy: Any) -> None:
    """End a stream's span from the proxy's finalizer: nobody finished or closed it."""
    try:
        state: CallFinish = proxy._self_state
    except (AttributeError, ValueError):  # __init__ did not complete
        return
    state.collected()
