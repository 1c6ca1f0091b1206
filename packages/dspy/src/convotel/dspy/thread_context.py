"""Carry the caller's OpenTelemetry context into DSPy's worker threads.

``dspy.Parallel``, ``Module.batch`` and ``dspy.Evaluate`` run the program through
``ParallelExecutor.execute`` on a ``ThreadPoolExecutor``, which does not copy context variables:
without help their spans would lose their parent and the caller's session and user ids. The
wrapper below binds the context current at ``execute()`` to the function each worker runs
(:func:`convotel.propagation.propagate`). ``asyncify``/``streamify`` use anyio worker threads,
which copy the context already.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from convotel.propagation import propagate
from convotel.spans import Tracing, WrapperFunction, log_once

__all__ = ["context_propagating_wrapper"]


def context_propagating_wrapper(get_tracing: Callable[[], Tracing]) -> WrapperFunction:
    """Wrapper for ``ParallelExecutor.execute(function, data)``: ``function`` gets our context."""

    def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        try:
            if args and callable(args[0]):
                args = (propagate(args[0]), *args[1:])
            elif callable(kwargs.get("function")):
                kwargs = {**kwargs, "function": propagate(kwargs["function"])}
        except Exception as exc:  # noqa: BLE001 - propagation must never reach the caller
            log_once("binding the context to DSPy worker threads", exc)
        return wrapped(*args, **kwargs)

    return wrapper
