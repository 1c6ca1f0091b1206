"""Make session and user ids follow the work: every span, thread pools, other processes.

All of it is opt-in:

* :class:`SessionSpanProcessor` stamps ``session.id``, ``user.id``, ``metadata`` and ``tag.tags``
  from the context onto *every* span started in it (HTTP clients, databases, your own spans), so
  they show up in the session too.
* :func:`propagate` and :class:`ContextPropagatingExecutor` carry the caller's context (and so its
  ids) into work run on other threads.
* :class:`SessionBaggagePropagator` sends ``session.id`` and ``user.id`` to downstream services in
  the W3C ``baggage`` header and restores them there. Nothing else is propagated: metadata, tags and
  prompt templates are free text and never leave the process. User ids do leave it, so use
  pseudonymous ids if the downstream service should not learn who the user is.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar
from urllib.parse import quote, unquote

from opentelemetry import context as context_api
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from convotel.context import (
    METADATA,
    SESSION_ID,
    TAGS,
    USER_ID,
    get_attributes_from_context,
    set_session,
    set_user,
)
from convotel.turns import TraceJoiner

__all__ = [
    "ContextPropagatingExecutor",
    "SessionBaggagePropagator",
    "SessionSpanProcessor",
    "propagate",
]

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

_STAMPED = (SESSION_ID, USER_ID, METADATA, TAGS)
_PROPAGATED = (SESSION_ID, USER_ID)
_BAGGAGE_HEADER = "baggage"
_MAX_HEADER_LENGTH = 8192


class SessionSpanProcessor(SpanProcessor):
    """Puts every span of a conversation's traces into its session.

    ``tracer_provider.add_span_processor(SessionSpanProcessor())``; add it before the exporting
    processors. It

    * adds the context's session, user, metadata and tags to every span that lacks them;
    * joins the whole trace (``join_trace``): the open ancestors of a span started in a session
      (the HTTP server span of a web request, middleware spans) get its ``session.id`` /
      ``user.id``, and spans started outside the session below one that has it (a streamed
      response body sent after the handler returned) inherit them;
    * writes each turn's input and output on its root span (``turn_text``): see
      :mod:`convotel.turns` for the rule. A value the application set itself is kept.

    Attributes a span already has are left alone. ``SessionSpanProcessor(join_trace=False,
    turn_text=False)`` (or ``CONVOTEL_JOIN_TRACE=false`` / ``CONVOTEL_TURN_TEXT=false``) keeps only
    the stamping from the context.
    """

    def __init__(self, *, join_trace: bool | None = None, turn_text: bool | None = None) -> None:
        self._joiner = TraceJoiner(
            join_trace=_env_flag("CONVOTEL_JOIN_TRACE") if join_trace is None else join_trace,
            turn_text=_env_flag("CONVOTEL_TURN_TEXT") if turn_text is None else turn_text,
        )
        self._tracks_spans = self._joiner.join_trace or self._joiner.turn_text

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        try:
            existing = span.attributes or {}
            has_ids = False
            for key, value in get_attributes_from_context(parent_context):
                if key in _STAMPED:
                    has_ids = has_ids or key in _PROPAGATED
                    if key not in existing:
                        span.set_attribute(key, value)
            if self._tracks_spans:
                self._joiner.span_started(span, has_ids)
        except Exception:  # a processor must never break span creation
            logger.debug("convotel: could not stamp session attributes", exc_info=True)

    def on_end(self, span: ReadableSpan) -> None:
        if not self._tracks_spans:
            return
        try:
            self._joiner.span_ended(span)
        except Exception:  # a processor must never break ending a span
            logger.debug("convotel: could not record the turn", exc_info=True)

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _env_flag(name: str) -> bool:
    """An on-by-default switch: ``false``, ``0``, ``no`` or ``off`` turn it off."""
    return os.environ.get(name, "").strip().lower() not in ("false", "0", "no", "off")


def propagate(function: Callable[P, R]) -> Callable[P, R]:
    """Bind ``function`` to the current context, for running it on another thread.

    ``pool.submit(propagate(handle), request)`` or ``Thread(target=propagate(work))``: the
    function then sees the session and user ids (and the active span) of the code that called
    :func:`propagate`, whichever thread runs it.
    """
    captured = context_api.get_current()

    @functools.wraps(function)
    def run_in_captured_context(*args: P.args, **kwargs: P.kwargs) -> R:
        token = context_api.attach(captured)
        try:
            return function(*args, **kwargs)
        finally:
            context_api.detach(token)

    return run_in_captured_context


class ContextPropagatingExecutor(ThreadPoolExecutor):
    """A ``ThreadPoolExecutor`` whose tasks run in the context of the code that submitted them."""

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future[R]:
        return super().submit(propagate(fn), *args, **kwargs)


def _parse_baggage(header: str) -> dict[str, str]:
    entries: dict[str, str] = {}
    for member in header[:_MAX_HEADER_LENGTH].split(","):
        key, separator, rest = member.partition("=")
        if not separator:
            continue
        value = rest.split(";", 1)[0]
        entries[unquote(key.strip())] = unquote(value.strip())
    return entries


class SessionBaggagePropagator(TextMapPropagator):
    """Carries ``session.id`` and ``user.id`` across processes in the W3C ``baggage`` header.

    Use it after the standard propagators (it merges into a ``baggage`` header they wrote)::

        set_global_textmap(CompositePropagator(
            [TraceContextTextMapPropagator(), W3CBaggagePropagator(), SessionBaggagePropagator()]
        ))

    or ``OTEL_PROPAGATORS=tracecontext,baggage,convotel_session``. Incoming ids are validated like
    any other id (bad ones are dropped) and become the context's session and user.
    """

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        ctx = context if context is not None else context_api.get_current()
        ours = {key: value for key, value in get_attributes_from_context(ctx) if key in _PROPAGATED}
        if not ours:
            return
        kept = []
        existing = carrier.get(_BAGGAGE_HEADER) if isinstance(carrier, Mapping) else None
        if isinstance(existing, str) and existing:
            for member in existing.split(","):
                if unquote(member.partition("=")[0].strip()) not in ours:
                    kept.append(member.strip())
        kept += [f"{quote(key)}={quote(str(value), safe='')}" for key, value in ours.items()]
        setter.set(carrier, _BAGGAGE_HEADER, ",".join(kept))

    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        ctx = context if context is not None else context_api.get_current()
        headers = getter.get(carrier, _BAGGAGE_HEADER) or []
        entries: dict[str, str] = {}
        for header in headers:
            entries.update(_parse_baggage(header))
        session_id, user_id = entries.get(SESSION_ID), entries.get(USER_ID)
        try:
            if session_id is not None:
                ctx = set_session(ctx, session_id, strict=True)
            if user_id is not None:
                ctx = set_user(ctx, user_id, strict=True)
        except ValueError as exc:
            logger.debug("convotel: ignoring a bad id in incoming baggage: %s", exc)
        return ctx

    @property
    def fields(self) -> set[str]:
        return {_BAGGAGE_HEADER}
