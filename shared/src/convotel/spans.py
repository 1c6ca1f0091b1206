"""The span lifecycle's public names in one place (a façade over the modules that hold them).

* :mod:`convotel.call_span`: :class:`Tracing`, :class:`CallSpan`, :func:`inside_call`.
* :mod:`convotel.finish`: :class:`CallFinish`, the one rule for how a call or its stream ends
  (outcome, status, error, abandonment, time to first token), and :class:`StreamWatch`.
* :mod:`convotel.streams`: :class:`StreamProxy` / :class:`AsyncStreamProxy`.
* :mod:`convotel.endpoints`: :class:`Endpoint` and the wrappers that trace a described method.
"""

from __future__ import annotations

from convotel.call_span import (
    DEFERRED_TO_PROVIDER,
    CallSpan,
    Pair,
    SpanKindValue,
    Tracing,
    inside_call,
    log_once,
)
from convotel.call_span import _logged as _logged  # tests reset it
from convotel.endpoints import Endpoint, WrapperFunction, async_wrapper, sync_wrapper
from convotel.finish import (
    STREAM_OUTCOME,
    TIME_TO_FIRST_TOKEN_MS,
    CallFinish,
    StreamAccumulator,
    StreamError,
    StreamOutcome,
    StreamWatch,
    stream_outcome_for,
)
from convotel.streams import AsyncStreamProxy, ObjectProxy, StreamProxy

__all__ = [
    "DEFERRED_TO_PROVIDER",
    "STREAM_OUTCOME",
    "TIME_TO_FIRST_TOKEN_MS",
    "AsyncStreamProxy",
    "CallFinish",
    "CallSpan",
    "Endpoint",
    "ObjectProxy",
    "Pair",
    "SpanKindValue",
    "StreamAccumulator",
    "StreamError",
    "StreamOutcome",
    "StreamProxy",
    "StreamWatch",
    "Tracing",
    "WrapperFunction",
    "active_call",
    "async_wrapper",
    "inside_call",
    "log_once",
    "stream_outcome_for",
    "sync_wrapper",
]


def active_call(owner: object) -> CallSpan | None:
    """The running call of ``owner`` (an endpoint with ``exposes_call``); see
    :func:`inside_call`, which this is."""
    return inside_call(owner)
