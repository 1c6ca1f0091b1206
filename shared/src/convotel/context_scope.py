"""The context manager and decorator behind every ``using_*`` helper.

A :class:`ContextScope` applies context updates for a ``with`` block (sync or ``async with``) or
for every call of a decorated plain, ``async def``, generator or async-generator function. A
generator's body runs each step in its own context, so nothing leaks to the caller between steps.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Generator,
    Sequence,
)
from types import TracebackType
from typing import Any, TypeVar, cast

from opentelemetry import context as context_api
from opentelemetry.context import Context

from convotel.turns import has_joiners, join_current_trace

__all__ = ["ContextScope", "ContextUpdate", "await_step_in", "run_step_in"]

F = TypeVar("F", bound=Callable[..., Any])
#: A pure function of a Context returning the updated Context.
ContextUpdate = Callable[[Context], Context]


class ContextScope:
    """Applies context updates for a ``with`` block or for every call of a decorated function."""

    __slots__ = ("_previous", "_updates")

    def __init__(self, updates: Sequence[ContextUpdate]) -> None:
        self._updates = tuple(updates)
        self._previous: list[Context] = []

    def _context(self) -> Context:
        ctx = context_api.get_current()
        for update in self._updates:
            ctx = update(ctx)
        return ctx

    def _joined_context(self) -> Context:
        """The block's context; a ``SessionSpanProcessor`` joins the open trace to it now."""
        ctx = self._context()
        if has_joiners():
            join_current_trace(ctx)
        return ctx

    def __enter__(self) -> ContextScope:
        self._previous.append(context_api.get_current())
        context_api.attach(self._joined_context())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Restore by re-attaching the saved context rather than resetting a ContextVar token:
        # a token reset fails ("Failed to detach context") when the block is left in another
        # asyncio task or contextvars.Context than it was entered in.
        if self._previous:
            context_api.attach(self._previous.pop())

    async def __aenter__(self) -> ContextScope:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def __call__(self, function: F) -> F:
        if inspect.isasyncgenfunction(function):
            return cast(F, self._decorate_async_generator(function))
        if inspect.isgeneratorfunction(function):
            return cast(F, self._decorate_generator(function))
        if inspect.iscoroutinefunction(function):
            return cast(F, self._decorate_coroutine(function))
        return cast(F, self._decorate_function(function))

    def _decorate_function(self, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            token = context_api.attach(self._joined_context())
            try:
                return function(*args, **kwargs)
            finally:
                context_api.detach(token)

        return run

    def _decorate_coroutine(self, function: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
        @functools.wraps(function)
        async def run(*args: Any, **kwargs: Any) -> Any:
            token = context_api.attach(self._joined_context())
            try:
                return await function(*args, **kwargs)
            finally:
                context_api.detach(token)

        return run

    def _decorate_generator(
        self, function: Callable[..., Generator[Any, Any, Any]]
    ) -> Callable[..., Generator[Any, Any, Any]]:
        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
            body_context = [self._context()]
            generator = run_step_in(body_context, function, *args, **kwargs)
            return (yield from _drive_generator(body_context, generator))

        return run

    def _decorate_async_generator(
        self, function: Callable[..., AsyncGenerator[Any, Any]]
    ) -> Callable[..., AsyncGenerator[Any, Any]]:
        @functools.wraps(function)
        async def run(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
            # The driver is this async generator itself (an ``async for`` around another one
            # would not forward ``asend``, ``athrow`` or ``aclose`` to the body).
            body_context = [self._context()]
            generator = run_step_in(body_context, function, *args, **kwargs)
            try:
                item = await await_step_in(body_context, generator.asend(None))
                while True:
                    try:
                        sent = yield item
                    except GeneratorExit:
                        await await_step_in(body_context, generator.aclose())
                        raise
                    except BaseException as exc:  # noqa: BLE001 - forwarded into the body
                        item = await await_step_in(body_context, generator.athrow(exc))
                    else:
                        item = await await_step_in(body_context, generator.asend(sent))
            except StopAsyncIteration:
                return

        return run


def run_step_in(
    body_context: list[Context], step: Callable[..., Any], *args: Any, **kwargs: Any
) -> Any:
    """Run one step of a generator body in its own context, keeping what the body changed.

    Each step attaches and detaches within one synchronous call, so nothing leaks to the caller
    between ``next()`` calls and a body resumed from another task never fails to detach.
    """
    token = context_api.attach(body_context[0])
    try:
        return step(*args, **kwargs)
    finally:
        body_context[0] = context_api.get_current()
        context_api.detach(token)


def _drive_generator(
    body_context: list[Context], generator: Generator[Any, Any, Any]
) -> Generator[Any, Any, Any]:
    try:
        item = run_step_in(body_context, generator.send, None)
        while True:
            try:
                sent = yield item
            except GeneratorExit:
                run_step_in(body_context, generator.close)
                raise
            except BaseException as exc:  # noqa: BLE001 - forwarded into the generator
                item = run_step_in(body_context, generator.throw, exc)
            else:
                item = run_step_in(body_context, generator.send, sent)
    except StopIteration as stop:
        return stop.value


async def await_step_in(body_context: list[Context], awaitable: Awaitable[Any]) -> Any:
    """Await one step of an async generator body in its own context (see :func:`run_step_in`)."""
    token = context_api.attach(body_context[0])
    try:
        return await awaitable
    finally:
        body_context[0] = context_api.get_current()
        context_api.detach(token)
