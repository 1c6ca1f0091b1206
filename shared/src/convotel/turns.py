"""Whole traces join their session, and every turn gets an input and an output at its root.

In a web service the root of each trace is the HTTP server span, which starts before the
application enters ``using_session`` and knows nothing of the conversation. Arize Phoenix (and
most backends) read a session's membership, first input and last output from the trace's *root*
span, so without help such sessions show empty turns. :class:`TraceJoiner` (run by
:class:`~convotel.propagation.SessionSpanProcessor`) tracks the spans open in this process and:

* **stamps the open ancestors**: when a span starts in a context that carries a session or user
  id, its open ancestors up to the local root (the first span whose parent is remote or absent)
  get the ``session.id`` / ``user.id`` they lack; entering ``using_session`` / ``using_user``
  stamps the current span and its ancestors straight away; a session a span only gets when it
  ends (a provider conversation learnt from the response, see
  :mod:`convotel.provider_sessions`) is stamped on its open ancestors then, with its
  ``convotel.session.source``;
* **inherits downwards**: a span started where the context carries no session (e.g. the spans
  that send a streamed response body after the handler returned) takes ``session.id`` /
  ``user.id`` from its nearest open ancestor;
* **writes the turn's text on the root** (the turn rule): ``input.value`` is the newest user
  message of the first model call of the turn to finish (not the history the request repeats),
  ``output.value`` the reply text of the last model call that finished with text (a streamed
  reply: the text that was streamed; a tool-call-only reply leaves the previous text). Both as
  ``text/plain``; text content parts are joined by newlines. A value the application set on
  the root itself is never overwritten. When the model call hid its text (``TraceConfig``),
  the root shows the same redaction marker. A model call that ends after its root: nothing.

  Two kinds of rendered prompts count by what they were rendered from. A message in DSPy's
  field format (``[[ ## question ## ]]`` ...) counts by its fields' values: the input fields,
  the output fields but ``reasoning`` (one field: its value; several: ``name: value``
  paragraphs; a JSON object answering such a request likewise), never the format's reminders.
  A message rendered around the text input of a framework operation enclosing the call (a
  CHAIN or AGENT span between it and the root, e.g. a query engine rendering its question into
  a RAG prompt) counts as that input once the span ends (the outermost such span's).

Ids already on a span are never replaced. Everything here is best effort and never raises.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Mapping
from typing import Any

from openinference.semconv.trace import (
    OpenInferenceMimeTypeValues,
    OpenInferenceSpanKindValues,
    SpanAttributes,
)
from opentelemetry import trace as trace_api
from opentelemetry.context import Context
from opentelemetry.util.types import AttributeValue

from convotel.collected_ends import register_own_lock
from convotel.turn_rule import plain_value, reply_text, turn_input_text

__all__ = [
    "TraceJoiner",
    "reply_text",
    "turn_input_text",
]

logger = logging.getLogger(__name__)

_SESSION_ID = SpanAttributes.SESSION_ID
_USER_ID = SpanAttributes.USER_ID
_JOINED = (_SESSION_ID, _USER_ID)
_SOURCE = "convotel.session.source"  # convotel.provider_sessions.SESSION_SOURCE
_KIND = SpanAttributes.OPENINFERENCE_SPAN_KIND
_LLM = OpenInferenceSpanKindValues.LLM.value
#: Framework inputs kept per root until its first model call decides (the newest ones).
_MAX_ENDED_INPUTS = 32
_FRAMEWORK_KINDS = (
    OpenInferenceSpanKindValues.CHAIN.value,
    OpenInferenceSpanKindValues.AGENT.value,
)
_INPUT_VALUE = SpanAttributes.INPUT_VALUE
_INPUT_MIME = SpanAttributes.INPUT_MIME_TYPE
_OUTPUT_VALUE = SpanAttributes.OUTPUT_VALUE
_OUTPUT_MIME = SpanAttributes.OUTPUT_MIME_TYPE
_TEXT = OpenInferenceMimeTypeValues.TEXT.value


# ------------------------------------------------------------------------- the open spans


class _OpenSpan(weakref.ref):  # type: ignore[type-arg]
    """A span open in this process: a weak reference, its id, its open parent's and root's ids.

    ``ids`` caches the session/user ids the span is known to carry (``None``: not read yet):
    reading a missing key from the SDK's attribute mapping costs more than the rest of the work.
    Ids are never removed from a span, so a cached id is always there; before writing one the
    cache says is missing, the span itself is asked.
    """

    __slots__ = ("ids", "parent", "parent_id", "root_id", "span_id")
    span_id: int
    parent_id: int | None
    parent: _OpenSpan | None  # kept after the parent ends: the chain up to the root stays known
    root_id: int
    ids: dict[str, AttributeValue] | None


class _TurnText:
    """What the joiner wrote on one local root (so it never overwrites the application's), and
    the first model call's message and enclosing spans (for a framework input inside it)."""

    __slots__ = (
        "enclosing",
        "ended_inputs",
        "input_decided",
        "input_written",
        "message",
        "output_written",
    )

    def __init__(self) -> None:
        self.input_decided = False
        self.input_written: str | None = None
        self.output_written: str | None = None
        self.message: str | None = None  # the first model call's newest user message
        self.enclosing: tuple[int, ...] = ()  # the spans around that call, innermost first
        self.ended_inputs: dict[int, str] = {}  # framework inputs that ended before it

    def rendered_around(self, text: str) -> bool:
        """Whether the first model call's message is a prompt rendered around ``text``."""
        return self.message is not None and text != self.message and text in self.message

    def ended_framework_input(self) -> str | None:
        """The text input of the outermost enclosing framework span that ended before the first
        model call did and that its message was rendered around."""
        found = None
        for span_id in self.enclosing:
            text = self.ended_inputs.get(span_id)
            if text is not None and self.rendered_around(text):
                found = text
        return found


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
        # Re-entrant: a stream the garbage collector finds while this lock is held ends its
        # span from its finalizer, in this thread, and that end comes back here.
        self._lock = threading.RLock()
        register_own_lock(self._lock)
        self._on_collected = self._collected
        if join_trace:
            _JOINERS.add(self)

    # -- span lifecycle ------------------------------------------------------------------

    def span_started(self, span: Any, has_ids: bool) -> None:
        """Register ``span``; ``has_ids``: it was started with a session or user in context."""
        span_id = span.get_span_context().span_id
        parent = span.parent
        entry = _OpenSpan(span, self._on_collected)
        entry.span_id = span_id
        entry.ids = _read_ids(span.attributes) if has_ids and self.join_trace else None
        parent_entry = None
        if parent is not None and not parent.is_remote:
            parent_entry = self._open.get(parent.span_id)
        if parent_entry is None:
            entry.parent_id, entry.parent, entry.root_id = None, None, span_id
        else:
            entry.parent_id, entry.parent = parent.span_id, parent_entry
            entry.root_id = parent_entry.root_id
        self._open[span_id] = entry
        if not self.join_trace or parent_entry is None:
            return
        if entry.ids:
            self._stamp_chain(parent_entry, entry.ids)
            if _SESSION_ID in entry.ids and _USER_ID in entry.ids:
                return  # nothing left to inherit
        self._inherit(span, entry, parent_entry)

    def span_ended(self, span: Any) -> None:
        """Forget ``span``; an ended model call writes its turn's text on its open root."""
        span_id = span.context.span_id
        entry = self._open.pop(span_id, None)
        if entry is None:
            return
        if entry.parent_id is None:
            self._turns.pop(span_id, None)
            return
        if self.join_trace and (entry.ids is None or _SESSION_ID not in entry.ids):
            self._join_session_learnt(span, entry)
        if self.turn_text:
            attributes = span.attributes
            kind = attributes.get(_KIND)
            if kind == _LLM:
                self._write_turn_text(attributes, entry)
            elif kind in _FRAMEWORK_KINDS:
                self._framework_ended(attributes, entry)

    def join_current(self, context: Context) -> None:
        """Stamp the context's current span and its open ancestors with the context's ids."""
        span = trace_api.get_current_span(context)
        entry = self._open.get(span.get_span_context().span_id)
        if entry is None:
            return
        ids = {key: value for key in _JOINED if isinstance(value := context.get(key), str)}
        if ids:
            self._stamp_chain(entry, ids)

    # -- helpers -------------------------------------------------------------------------

    def _join_session_learnt(self, span: Any, entry: _OpenSpan) -> None:
        """A span that started without a session ends with one: stamp its open ancestors."""
        attributes = span.attributes
        session = attributes.get(_SESSION_ID)
        if session is None:
            return
        ids: dict[str, AttributeValue] = {_SESSION_ID: session}
        source = attributes.get(_SOURCE)
        if source is not None:
            ids[_SOURCE] = source
        parent = self._open.get(entry.parent_id) if entry.parent_id is not None else None
        if parent is not None:
            self._stamp_chain(parent, ids)
        else:
            root = self._open.get(entry.root_id)
            if root is not None:
                self._stamp(root, ids)

    def _collected(self, entry: _OpenSpan) -> None:
        """A span was garbage-collected without ending: forget it."""
        if self._open.get(entry.span_id) is entry:
            self._open.pop(entry.span_id, None)
        self._turns.pop(entry.span_id, None)

    def _stamp_chain(self, entry: _OpenSpan, ids: Mapping[str, AttributeValue]) -> None:
        """Give ``entry``'s span, its open ancestors and its open root the ids they lack.

        The root is stamped even when an ancestor between them has ended already.
        """
        found: _OpenSpan | None = entry
        root_id = entry.root_id
        while found is not None:
            self._stamp(found, ids)
            if found.parent_id is None:
                return
            found = self._open.get(found.parent_id)
        root = self._open.get(root_id)
        if root is not None:
            self._stamp(root, ids)

    @staticmethod
    def _stamp(entry: _OpenSpan, ids: Mapping[str, AttributeValue]) -> None:
        known = _known_ids(entry)
        if known is None or all(key in known for key in ids):
            return
        span = entry()
        if span is None:
            return
        attributes = span.attributes  # the application may have set one since it was read
        missing = {}
        for key, value in ids.items():
            if key not in known:
                found = attributes.get(key)
                if found is None:
                    missing[key] = known[key] = value
                else:
                    known[key] = found
        if _SESSION_ID not in missing:
            missing.pop(_SOURCE, None)  # a source only goes with the session it describes
        if missing:
            span.set_attributes(missing)

    @staticmethod
    def _inherit(span: Any, entry: _OpenSpan, parent_entry: _OpenSpan) -> None:
        parent_ids = _known_ids(parent_entry)
        if not parent_ids:
            return
        own = entry.ids if entry.ids is not None else _read_ids(span.attributes)
        inherited = {key: value for key, value in parent_ids.items() if key not in own}
        if _SESSION_ID not in inherited:
            inherited.pop(_SOURCE, None)
        if inherited:
            span.set_attributes(inherited)
            own = {**own, **inherited}
        entry.ids = own

    def _write_turn_text(self, attributes: Mapping[str, AttributeValue], call: _OpenSpan) -> None:
        root_id = call.root_id
        entry = self._open.get(root_id)
        root = entry() if entry is not None else None
        if root is None:
            return  # the root ended first (or was collected): nothing to write on
        written: dict[str, AttributeValue] = {}
        with self._lock:
            turn = self._turns.get(root_id)
            if turn is None:
                turn = self._turns[root_id] = _TurnText()
            root_attributes = root.attributes
            if not turn.input_decided:
                text = turn_input_text(attributes)
                if text is not None:
                    turn.input_decided = True
                    turn.message, turn.enclosing = text, _enclosing(call)
                    text = turn.ended_framework_input() or text
                    if _INPUT_VALUE not in root_attributes:
                        written[_INPUT_VALUE], written[_INPUT_MIME] = text, _TEXT
                        turn.input_written = text
            text = reply_text(attributes)
            if text is not None:
                current = root_attributes.get(_OUTPUT_VALUE)
                if current is None or current == turn.output_written:
                    written[_OUTPUT_VALUE], written[_OUTPUT_MIME] = text, _TEXT
                    turn.output_written = text
            if written:
                root.set_attributes(written)

    def _framework_ended(self, attributes: Mapping[str, AttributeValue], entry: _OpenSpan) -> None:
        """A framework span ended: when the turn's first model call (before or after this) was
        made inside it from a prompt rendered around its text input, that text is the input."""
        text = plain_value(attributes, _INPUT_VALUE, _INPUT_MIME)
        root_entry = self._open.get(entry.root_id)
        root = root_entry() if root_entry is not None and text is not None else None
        if root is None or text is None:
            return
        with self._lock:
            turn = self._turns.get(entry.root_id)
            if turn is None:
                turn = self._turns[entry.root_id] = _TurnText()
            if turn.message is None:  # no model call has decided yet: keep it for the first one
                ended = turn.ended_inputs
                if len(ended) >= _MAX_ENDED_INPUTS:  # a long-lived root without model calls
                    del ended[next(iter(ended))]
                ended[entry.span_id] = text
                return
            if entry.span_id not in turn.enclosing or not turn.rendered_around(text):
                return
            written = turn.input_written
            if written is not None and root.attributes.get(_INPUT_VALUE) == written:
                root.set_attribute(_INPUT_VALUE, text)
                turn.input_written = text


def _enclosing(call: _OpenSpan) -> tuple[int, ...]:
    """The spans between ``call`` and its root (open or ended), innermost first."""
    found = []
    current = call.parent
    while current is not None and current.span_id != call.root_id:
        found.append(current.span_id)
        current = current.parent
    return tuple(found)


def _read_ids(attributes: Mapping[str, AttributeValue]) -> dict[str, AttributeValue]:
    """The span's session and user ids (and the session's source, when it has a session)."""
    ids: dict[str, AttributeValue] = {
        key: value for key in _JOINED if (value := attributes.get(key)) is not None
    }
    if _SESSION_ID in ids and (source := attributes.get(_SOURCE)) is not None:
        ids[_SOURCE] = source
    return ids


def _known_ids(entry: _OpenSpan) -> dict[str, AttributeValue] | None:
    """The ids ``entry``'s span carries (read once); ``None`` when the span is gone."""
    if entry.ids is None:
        span = entry()
        if span is None:
            return None
        entry.ids = _read_ids(span.attributes)
    return entry.ids


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
