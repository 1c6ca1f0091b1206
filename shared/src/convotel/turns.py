"""Whole traces join their session, and every turn gets an input and an output at its root.

In a web service the root of each trace is the HTTP server span, which starts before the
application enters ``using_session`` and knows nothing of the conversation. Arize Phoenix (and
most backends) read a session's membership, first input and last output from the trace's *root*
span, so without help such sessions show empty turns. :class:`TraceJoiner` (run by
:class:`~convotel.propagation.SessionSpanProcessor`) tracks the spans open in this process and:

* **stamps the open ancestors**: when a span starts in a context that carries a session or user
  id, its open ancestors up to the local root (the first span whose parent is remote or absent)
  get the ``session.id`` / ``user.id`` they lack; entering ``using_session`` / ``using_user``
  stamps the current span and its ancestors straight away;
* **inherits downwards**: a span started where the context carries no session (e.g. the spans
  that send a streamed response body after the handler returned) takes ``session.id`` /
  ``user.id`` from its nearest open ancestor;
* **writes the turn's text on the root** (the turn rule): ``input.value`` is the newest user
  message of the first model call of the turn to finish (not the history the request repeats),
  ``output.value`` the reply text of the last model call that finished with text (a streamed
  reply: the text that was streamed; a tool-call-only reply leaves the previous text). Both as
  ``text/plain``. A value the application set on the root itself is never overwritten. When the
  model call hid its text (``TraceConfig``), the root shows the same redaction marker.

Ids already on a span are never replaced. Everything here is best effort and never raises.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from openinference.semconv.trace import (
    MessageAttributes,
    MessageContentAttributes,
    OpenInferenceMimeTypeValues,
    OpenInferenceSpanKindValues,
    SpanAttributes,
)
from opentelemetry import trace as trace_api
from opentelemetry.context import Context
from opentelemetry.util.types import AttributeValue

__all__ = [
    "TraceJoiner",
    "reply_text",
    "turn_input_text",
]

logger = logging.getLogger(__name__)

_SESSION_ID = SpanAttributes.SESSION_ID
_USER_ID = SpanAttributes.USER_ID
_JOINED = (_SESSION_ID, _USER_ID)
_KIND = SpanAttributes.OPENINFERENCE_SPAN_KIND
_LLM = OpenInferenceSpanKindValues.LLM.value
_INPUT_VALUE = SpanAttributes.INPUT_VALUE
_INPUT_MIME = SpanAttributes.INPUT_MIME_TYPE
_OUTPUT_VALUE = SpanAttributes.OUTPUT_VALUE
_OUTPUT_MIME = SpanAttributes.OUTPUT_MIME_TYPE
_TEXT = OpenInferenceMimeTypeValues.TEXT.value
_JSON = OpenInferenceMimeTypeValues.JSON.value
_INPUT_PREFIX = SpanAttributes.LLM_INPUT_MESSAGES + "."
_OUTPUT_PREFIX = SpanAttributes.LLM_OUTPUT_MESSAGES + "."
_ROLE_SUFFIX = "." + MessageAttributes.MESSAGE_ROLE
_CONTENT = MessageAttributes.MESSAGE_CONTENT
_CONTENTS = MessageAttributes.MESSAGE_CONTENTS + "."
_PART_TEXT = "." + MessageContentAttributes.MESSAGE_CONTENT_TEXT


# --------------------------------------------------------------------------- the turn rule


def turn_input_text(attributes: Mapping[str, AttributeValue]) -> str | None:
    """The text a model call contributes as its turn's input: its newest user message.

    Falls back to the call's ``input.value`` when that is text (not JSON), e.g. the redaction
    marker of a hidden input.
    """
    newest = -1
    for key, value in attributes.items():
        if value == "user" and key.startswith(_INPUT_PREFIX) and key.endswith(_ROLE_SUFFIX):
            index = _index(key, _INPUT_PREFIX)
            if index is not None and index > newest:
                newest = index
    if newest >= 0:
        text = _message_text(attributes, f"{_INPUT_PREFIX}{newest}.")
        if text is not None:
            return text
    return _plain_value(attributes, _INPUT_VALUE, _INPUT_MIME)


def reply_text(attributes: Mapping[str, AttributeValue]) -> str | None:
    """The reply text of a model call (its first output message), else its text output."""
    text = _message_text(attributes, f"{_OUTPUT_PREFIX}0.")
    if text is not None:
        return text
    if any(key.startswith(_OUTPUT_PREFIX) for key in attributes):
        return None  # an output message without text (tool calls only): no reply text
    return _plain_value(attributes, _OUTPUT_VALUE, _OUTPUT_MIME)


def _index(key: str, prefix: str) -> int | None:
    head = key[len(prefix) :].split(".", 1)[0]
    return int(head) if head.isdigit() else None


def _message_text(attributes: Mapping[str, AttributeValue], message_prefix: str) -> str | None:
    """``message.content``, else the text content parts joined by newlines."""
    content = attributes.get(message_prefix + _CONTENT)
    if isinstance(content, str) and content:
        return content
    parts_prefix = message_prefix + _CONTENTS
    parts: list[tuple[int, str]] = []
    for key, value in attributes.items():
        if isinstance(value, str) and key.startswith(parts_prefix) and key.endswith(_PART_TEXT):
            index = _index(key, parts_prefix)
            if index is not None:
                parts.append((index, value))
    return "\n".join(text for _, text in sorted(parts)) if parts else None


def _plain_value(
    attributes: Mapping[str, AttributeValue], value_key: str, mime_key: str
) -> str | None:
    value = attributes.get(value_key)
    if not isinstance(value, str) or not value or attributes.get(mime_key) == _JSON:
        return None
    return value


# ------------------------------------------------------------------------- the open spans


class _OpenSpan:
    """One span open in this process: a weak reference and its open parent's id."""

    __slots__ = ("parent_id", "span")

    def __init__(self, span: weakref.ref[Any], parent_id: int | None) -> None:
        self.span = span
        self.parent_id = parent_id


class _TurnText:
    """What the joiner wrote on one local root (so it never overwrites the application's)."""

    __slots__ = ("input_decided", "output_written")

    def __init__(self) -> None:
        self.input_decided = False
        self.output_written: str | None = None


_JOINERS: weakref.WeakSet[TraceJoiner] = weakref.WeakSet()


class TraceJoiner:
    """Tracks the spans open in this process; see the module docstring for what it does.

    ``join_trace`` switches the stamping of ancestors and descendants, ``turn_text`` the turn's
    input and output on the root.
    """

    def __init__(self, *, join_trace: bool = True, turn_text: bool = True) -> None:
        self.join_trace = join_trace
        self.turn_text = turn_text
        self._open: dict[int, _OpenSpan] = {}
        self._turns: dict[int, _TurnText] = {}
        self._lock = threading.Lock()
        if join_trace:
            _JOINERS.add(self)

    # -- span lifecycle ------------------------------------------------------------------

    def span_started(self, span: Any, has_ids: bool) -> None:
        """Register ``span``; ``has_ids``: it was started with a session or user in context."""
        span_id = span.get_span_context().span_id
        parent = span.parent
        parent_id = None
        if parent is not None and not parent.is_remote and parent.span_id in self._open:
            parent_id = parent.span_id
        self._open[span_id] = _OpenSpan(weakref.ref(span, self._forget(span_id)), parent_id)
        if not self.join_trace or parent_id is None:
            return
        if has_ids:
            self._stamp_ancestors(span, parent_id)
        self._inherit(span, parent_id)

    def span_ended(self, span: Any) -> None:
        """Forget ``span``; an ended model call writes its turn's text on the open root."""
        span_id = span.context.span_id
        entry = self._open.pop(span_id, None)
        if entry is None:
            return
        if entry.parent_id is None:
            self._turns.pop(span_id, None)
            return
        if self.turn_text and span.attributes.get(_KIND) == _LLM:
            self._write_turn_text(span.attributes, entry.parent_id)

    def join_current(self, context: Context) -> None:
        """Stamp the context's current span and its open ancestors with the context's ids."""
        span = trace_api.get_current_span(context)
        span_id = span.get_span_context().span_id
        if span_id not in self._open:
            return
        ids = {key: context.get(key) for key in _JOINED}
        self._stamp_chain(span_id, {k: v for k, v in ids.items() if isinstance(v, str)})

    # -- helpers -------------------------------------------------------------------------

    def _forget(self, span_id: int) -> Callable[[object], None]:
        def forget(_: object) -> None:  # the span was collected without ending
            self._open.pop(span_id, None)
            self._turns.pop(span_id, None)

        return forget

    def _span(self, span_id: int | None) -> tuple[Any, int | None] | None:
        entry = self._open.get(span_id) if span_id is not None else None
        span = entry.span() if entry is not None else None
        return None if span is None or entry is None else (span, entry.parent_id)

    def _stamp_ancestors(self, span: Any, parent_id: int) -> None:
        attributes = span.attributes
        ids = {key: attributes[key] for key in _JOINED if key in attributes}
        if ids:
            self._stamp_chain(parent_id, ids)

    def _stamp_chain(self, span_id: int | None, ids: Mapping[str, AttributeValue]) -> None:
        """Give ``span_id`` and its open ancestors the ids they lack (never replaces one)."""
        while (found := self._span(span_id)) is not None:
            span, span_id = found
            attributes = span.attributes
            missing = {key: value for key, value in ids.items() if key not in attributes}
            if missing:
                span.set_attributes(missing)

    def _inherit(self, span: Any, parent_id: int) -> None:
        found = self._span(parent_id)
        if found is None:
            return
        parent_attributes, attributes = found[0].attributes, span.attributes
        inherited = {
            key: parent_attributes[key]
            for key in _JOINED
            if key in parent_attributes and key not in attributes
        }
        if inherited:
            span.set_attributes(inherited)

    def _local_root(self, span_id: int) -> Any | None:
        root = None
        current: int | None = span_id
        while (found := self._span(current)) is not None:
            root, current = found
        return root

    def _write_turn_text(self, attributes: Mapping[str, AttributeValue], parent_id: int) -> None:
        root = self._local_root(parent_id)
        if root is None:
            return
        root_id = root.context.span_id
        with self._lock:
            turn = self._turns.get(root_id)
            if turn is None:
                turn = self._turns[root_id] = _TurnText()
            root_attributes = root.attributes
            if not turn.input_decided:
                text = turn_input_text(attributes)
                if text is not None:
                    turn.input_decided = True
                    if _INPUT_VALUE not in root_attributes:
                        root.set_attributes({_INPUT_VALUE: text, _INPUT_MIME: _TEXT})
            text = reply_text(attributes)
            if text is not None:
                current = root_attributes.get(_OUTPUT_VALUE)
                if current is None or current == turn.output_written:
                    root.set_attributes({_OUTPUT_VALUE: text, _OUTPUT_MIME: _TEXT})
                    turn.output_written = text


def join_current_trace(context: Context) -> None:
    """Called when ``using_session`` / ``using_user`` is entered: stamp the open trace now."""
    for joiner in list(_JOINERS):
        try:
            joiner.join_current(context)
        except Exception:
            logger.debug("convotel: could not join the current trace", exc_info=True)


def has_joiners() -> bool:
    """True when some :class:`TraceJoiner` stamps traces (a cheap check for the hot path)."""
    return bool(_JOINERS)
