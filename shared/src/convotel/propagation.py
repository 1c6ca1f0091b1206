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
import re
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
from convotel.provider_sessions import CONTEXT, SESSION_SOURCE, session_source
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

    * adds the context's session, user, metadata and tags to every span that lacks them (with
      the session's ``convotel.session.source``: ``context``, or the provider's conversation it
      came from, see :mod:`convotel.provider_sessions`);
    * joins the whole trace (``join_trace``): the open ancestors of a span started in a session
      (the HTTP server span of a web request, middleware spans) get its ``session.id`` /
      ``user.id``, and spans started outside the session below one that has it (a streamed
      response body sent after the handler returned) inherit them; a session a model call
      learns from its response (a provider conversation's first call) reaches its open ancestors
      when the call ends;
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
                        if key == SESSION_ID and SESSION_SOURCE not in existing:
                            source = session_source(parent_or_current(parent_context))
                            span.set_attribute(SESSION_SOURCE, source or CONTEXT)
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


def parent_or_current(context: Context | None) -> Context:
    return context if context is not None else context_api.get_current()


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


# W3C Baggage limits, applied as OpenTelemetry's W3CBaggagePropagator applies them: a header over
# _MAX_HEADER_LENGTH bytes is ignored whole; list-members over _MAX_MEMBER_LENGTH bytes, and those
# after the first _MAX_MEMBERS, are dropped. A member is used whole or not at all.
_MAX_MEMBER_LENGTH = 4096
_MAX_MEMBERS = 180
# key = RFC 7230 token; value = W3C baggage-octets (percent-encoded UTF-8); properties ignored.
_MEMBER = re.compile(
    r"[ \t]*([!#$%&'*+\-.^_`|~0-9A-Za-z]+)[ \t]*=[ \t]*"
    r"([\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*)[ \t]*(?:;[\t\x20-\x7e]*)?"
)
_SETTERS: dict[str, Callable[..., Context]] = {SESSION_ID: set_session, USER_ID: set_user}


def _byte_length(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _member_key(member: str) -> str:
    return unquote(member.partition("=")[0].strip(" \t"))


def _dropped(member: str, reason: str) -> None:
    """Log a dropped incoming member: a warning when it would have carried one of our ids."""
    key = _member_key(member)
    level = logging.WARNING if key in _PROPAGATED else logging.DEBUG
    logger.log(level, "convotel: incoming baggage member %.64r dropped: %s", key, reason)


def _parse_baggage(header: str) -> dict[str, str]:
    """The decoded members of a ``baggage`` header within the W3C limits (see above)."""
    if _byte_length(header) > _MAX_HEADER_LENGTH:
        logger.warning(
            "convotel: incoming baggage header of %d bytes is over the %d-byte limit; ignored "
            "whole, no session or user id restored from it",
            _byte_length(header),
            _MAX_HEADER_LENGTH,
        )
        return {}
    members = []
    for member in header.split(","):
        if not member.strip(" \t"):
            continue
        if not member.isascii():
            _dropped(member, "it holds characters that are not ASCII")
        elif _byte_length(member) > _MAX_MEMBER_LENGTH:
            _dropped(member, f"it is over the {_MAX_MEMBER_LENGTH}-byte limit")
        else:
            members.append(member)
    for member in members[_MAX_MEMBERS:]:
        _dropped(member, f"the header has more than {_MAX_MEMBERS} members")
    entries: dict[str, str] = {}
    for member in members[:_MAX_MEMBERS]:
        match = _MEMBER.fullmatch(member)
        if match is None:
            _dropped(member, "it is not key=value")
            continue
        try:
            key, value = (unquote(part, errors="strict") for part in match.group(1, 2))
        except UnicodeDecodeError:
            _dropped(member, "its percent-encoding is not UTF-8")
            continue
        entries[key] = value
    return entries


def _refusal(key: str, value: object) -> str | None:
    """Why the receiving side would refuse this id (``None`` if it would restore it)."""
    try:
        _SETTERS[key](Context(), value, strict=True)
    except ValueError as exc:
        return str(exc)
    return None


class SessionBaggagePropagator(TextMapPropagator):
    """Carries ``session.id`` and ``user.id`` across processes in the W3C ``baggage`` header.

    Use it after the standard propagators (it merges into a ``baggage`` header they wrote)::

        set_global_textmap(CompositePropagator(
            [TraceContextTextMapPropagator(), W3CBaggagePropagator(), SessionBaggagePropagator()]
        ))

    or ``OTEL_PROPAGATORS=tracecontext,baggage,convotel_session``. Incoming ids are validated like
    any other id (bad ones are dropped) and become the context's session and user. Both sides keep
    to the W3C limits as OpenTelemetry does (8,192 bytes per header, 180 members, 4,096 bytes per
    member): an oversized incoming header is ignored whole, an oversized member dropped, and an id
    that would not fit beside the baggage already in the header is not sent (with a warning);
    other baggage is never dropped to make room.
    """

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        try:
            self._inject(carrier, context, setter)
        except Exception:  # never break the outgoing request
            logger.debug("convotel: could not write the baggage header", exc_info=True)

    def _inject(self, carrier: CarrierT, context: Context | None, setter: Setter[CarrierT]) -> None:
        ctx = context if context is not None else context_api.get_current()
        ours = {key: value for key, value in get_attributes_from_context(ctx) if key in _PROPAGATED}
        if not ours:
            return
        existing = carrier.get(_BAGGAGE_HEADER) if isinstance(carrier, Mapping) else None
        members = []
        if isinstance(existing, str):  # a stale session.id / user.id member never goes out
            members = [
                member.strip(" \t")
                for member in existing.split(",")
                if member.strip(" \t") and _member_key(member) not in ours
            ]
        length = _byte_length(",".join(members))
        for key, value in ours.items():
            refusal = _refusal(key, value)
            if refusal is not None:
                logger.debug("convotel: %s not sent in baggage: %s", key, refusal)
                continue
            member = f"{quote(key)}={quote(str(value), safe='')}"
            added = len(member) + (1 if members else 0)  # quote() output is ASCII
            if (
                len(member) > _MAX_MEMBER_LENGTH
                or len(members) >= _MAX_MEMBERS
                or length + added > _MAX_HEADER_LENGTH
            ):
                logger.warning(
                    "convotel: %s not sent in the baggage header: it would take the header past "
                    "the W3C limits (%d bytes, %d members, %d bytes per member)",
                    key,
                    _MAX_HEADER_LENGTH,
                    _MAX_MEMBERS,
                    _MAX_MEMBER_LENGTH,
                )
                continue
            members.append(member)
            length += added
        if members or existing:
            setter.set(carrier, _BAGGAGE_HEADER, ",".join(members))

    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        ctx = context if context is not None else context_api.get_current()
        try:
            headers = [value for value in getter.get(carrier, _BAGGAGE_HEADER) or [] if value]
            if not headers:
                return ctx
            # Several baggage header lines are one comma-separated list (RFC 9110).
            entries = _parse_baggage(",".join(str(header) for header in headers))
        except Exception:  # never break the incoming request
            logger.debug("convotel: could not read the baggage header", exc_info=True)
            return ctx
        for key, setter in _SETTERS.items():
            if key not in entries:
                continue
            try:
                ctx = setter(ctx, entries[key], strict=True)
            except ValueError as exc:
                logger.debug("convotel: ignoring a bad id in incoming baggage: %s", exc)
        return ctx

    @property
    def fields(self) -> set[str]:
        return {_BAGGAGE_HEADER}
