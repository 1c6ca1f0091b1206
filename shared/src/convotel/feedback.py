"""Feedback on a session or one of its turns: ``convotel.record_feedback(...)``.

Feedback goes where the application's telemetry goes: one short span (``convotel.feedback``,
OpenInference kind ``EVALUATOR``) carrying the session's ``session.id`` and OpenInference's
annotation attributes (``annotation.name``, ``annotation.score``, ``annotation.label``,
``annotation.explanation``, ``annotation.annotator_kind``), plus ``convotel.feedback.scope``
(``session`` or ``turn``), ``convotel.feedback.turn`` (the turn's trace id) and
``convotel.feedback.source`` (who gave it). Every OTLP backend and the embedded store receive it;
the read model (:mod:`convotel.sessions`) lists it on its session instead of counting it as a turn.

The span is never a root span: outside any span it starts under a remote parent that is never
exported (in the turn's own trace for a turn), sampled as a root span of the session would be.
Phoenix takes a session's first input and last output from its root spans, so a root feedback
span, the session's latest, would blank its last output there.

With a Phoenix endpoint (``phoenix_endpoint=`` or ``$CONVOTEL_PHOENIX_ENDPOINT``) it is also sent
to Phoenix's REST API (``/v1/session_annotations``, or ``/v1/trace_annotations`` for a turn), so it
appears on the session in Phoenix's UI, as a ``HUMAN`` annotation whose ``identifier`` (and
``metadata.source``) is the source: Phoenix keeps one annotation per name and identifier on a
session or trace, so a source's new feedback of one name replaces its previous one there. It is
sent from a background thread with a bounded timeout (:func:`flush_feedback` waits for it); while
Phoenix does not know the session or trace yet (HTTP 404: its spans may still be on their way)
it is sent again a few times (:data:`PHOENIX_RETRY_DELAYS`). A Phoenix that is down or never
learns of the session is logged once per endpoint and problem, and never blocks the application.
Feedback on a session the sampler dropped is not sent: Phoenix has none of its spans.

Invalid input (a blank or non-string session id or name, a score that is not a finite number, no
score, label or explanation) is a warning (:class:`InvalidFeedbackWarning`) and records nothing:
never an exception into the application.
"""

from __future__ import annotations

import collections
import json
import math
import os
import re
import threading
import time
import urllib.error
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from openinference.semconv.trace import (
    AnnotationAttributes,
    OpenInferenceSpanKindValues,
    SpanAttributes,
)
from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Decision, Sampler

from convotel.call_span import log_once

__all__ = [
    "FEEDBACK_SCOPE",
    "FEEDBACK_SOURCE",
    "FEEDBACK_TURN",
    "PHOENIX_ENDPOINT_ENV",
    "PHOENIX_RETRY_DELAYS",
    "PHOENIX_TIMEOUT",
    "Feedback",
    "InvalidFeedbackWarning",
    "flush_feedback",
    "phoenix_request",
    "record_feedback",
    "send_to_phoenix",
]

FEEDBACK_SCOPE = "convotel.feedback.scope"
FEEDBACK_TURN = "convotel.feedback.turn"
FEEDBACK_SOURCE = "convotel.feedback.source"
PHOENIX_ENDPOINT_ENV = "CONVOTEL_PHOENIX_ENDPOINT"
#: Seconds a request to Phoenix may take before it is given up (and logged once).
PHOENIX_TIMEOUT = 3.0
#: Seconds before each new attempt while Phoenix answers 404 (it does not know the session or
#: trace yet: a batch span processor holds spans up to 5 s); then it is logged and given up.
PHOENIX_RETRY_DELAYS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
_SPAN_NAME = "convotel.feedback"
_MAX_TEXT = 4000
_ids = RandomIdGenerator()
_TRACE_ID = re.compile("[0-9a-fA-F]{32}")
#: At most this many threads send feedback to Phoenix at once (each ends when nothing waits).
MAX_SENDERS = 4
#: At most this many sends wait or run; beyond it feedback is not sent to Phoenix (logged once).
MAX_PENDING = 10_000
_queue: collections.deque[tuple[Feedback, str]] = collections.deque()
_senders = 0  # sender threads running
_unfinished = 0  # sends queued or running
_idle = threading.Condition()  # notified when _unfinished drops to 0


class InvalidFeedbackWarning(UserWarning):
    """Feedback that cannot be recorded as given (it is not recorded)."""


@dataclass(frozen=True)
class Feedback:
    """One piece of feedback on a session (or on one of its turns, ``turn`` = its trace id)."""

    session_id: str
    name: str
    score: float | None = None
    label: str | None = None
    explanation: str | None = None
    turn: str | None = None
    source: str | None = None
    time_ns: int = 0

    @property
    def scope(self) -> str:
        return "turn" if self.turn is not None else "session"

    def attributes(self) -> dict[str, Any]:
        """The span attributes that carry it (``None`` values left out)."""
        found = {
            SpanAttributes.OPENINFERENCE_SPAN_KIND: OpenInferenceSpanKindValues.EVALUATOR.value,
            SpanAttributes.SESSION_ID: self.session_id,
            AnnotationAttributes.ANNOTATION_NAME: self.name,
            AnnotationAttributes.ANNOTATION_SCORE: self.score,
            AnnotationAttributes.ANNOTATION_LABEL: self.label,
            AnnotationAttributes.ANNOTATION_EXPLANATION: self.explanation,
            AnnotationAttributes.ANNOTATION_ANNOTATOR_KIND: "HUMAN",
            FEEDBACK_SCOPE: self.scope,
            FEEDBACK_TURN: self.turn,
            FEEDBACK_SOURCE: self.source,
        }
        return {key: value for key, value in found.items() if value is not None}

    @classmethod
    def from_attributes(cls, attributes: Any, time_ns: int = 0) -> Feedback | None:
        """The feedback a span carries, if it is a feedback span."""
        if attributes.get(FEEDBACK_SCOPE) is None:
            return None
        score = attributes.get(AnnotationAttributes.ANNOTATION_SCORE)
        return cls(
            session_id=str(attributes.get(SpanAttributes.SESSION_ID, "")),
            name=str(attributes.get(AnnotationAttributes.ANNOTATION_NAME, "")),
            score=float(score) if isinstance(score, (int, float)) else None,
            label=_text(attributes.get(AnnotationAttributes.ANNOTATION_LABEL)),
            explanation=_text(attributes.get(AnnotationAttributes.ANNOTATION_EXPLANATION)),
            turn=_text(attributes.get(FEEDBACK_TURN)),
            source=_text(attributes.get(FEEDBACK_SOURCE)),
            time_ns=time_ns,
        )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _warn(problem: str) -> None:
    warnings.warn(f"convotel: feedback not recorded: {problem}", InvalidFeedbackWarning, 3)


def _checked_text(value: object, what: str, *, required: bool = False) -> str | bool | None:
    """The text, ``None`` if absent, or ``False`` (after a warning) if invalid."""
    if value is None:
        if required:
            _warn(f"{what} is missing")
            return False
        return None
    if not isinstance(value, str) or not value.strip():
        _warn(f"{what} must be a non-blank string, got {value!r}")
        return False
    return value[:_MAX_TEXT]


def record_feedback(
    session_id: str,
    name: str,
    *,
    score: float | None = None,
    label: str | None = None,
    explanation: str | None = None,
    turn: str | None = None,
    source: str | None = None,
    tracer_provider: trace_api.TracerProvider | None = None,
    phoenix_endpoint: str | None = None,
) -> Feedback | None:
    """Attach feedback to session ``session_id`` (or to its turn ``turn``, a trace id): a
    ``name`` (``"thumbs"``, ``"resolved"``...), a ``score`` and/or a ``label``, an
    ``explanation``, and who gave it (``source``). Returns what was recorded, or ``None`` after
    an :class:`InvalidFeedbackWarning` when the input cannot be recorded; never raises."""
    try:
        return _record(
            session_id, name, score, label, explanation, turn, source, tracer_provider,
            phoenix_endpoint,
        )  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - feedback never breaks the application
        log_once("recording feedback", message=f"recording feedback failed: {exc}")
        return None


def _record(
    session_id: object,
    name: object,
    score: object,
    label: object,
    explanation: object,
    turn: object,
    source: object,
    tracer_provider: trace_api.TracerProvider | None,
    phoenix_endpoint: str | None,
) -> Feedback | None:
    checked = [
        _checked_text(session_id, "the session id", required=True),
        _checked_text(name, "the name", required=True),
        _checked_text(label, "the label"),
        _checked_text(explanation, "the explanation"),
        _checked_text(turn, "the turn"),
        _checked_text(source, "the source"),
    ]
    if any(value is False for value in checked):
        return None
    session, feedback_name, label_text, explanation_text, turn_id, source_text = (
        value if isinstance(value, str) else None for value in checked
    )
    number: float | None = None
    if score is not None:
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            _warn(f"the score must be a number, got {score!r}")
            return None
        number = float(score)
        if not math.isfinite(number):
            _warn(f"the score must be a finite number, got {score!r}")
            return None
    if number is None and label_text is None and explanation_text is None:
        _warn("give a score, a label or an explanation")
        return None
    assert session is not None
    assert feedback_name is not None
    provider = tracer_provider or trace_api.get_tracer_provider()
    feedback = Feedback(
        session, feedback_name, number, label_text, explanation_text, turn_id, source_text
    )
    attributes = feedback.attributes()
    span = provider.get_tracer("convotel.feedback").start_span(
        _SPAN_NAME, _parent(provider, feedback, attributes), attributes=attributes
    )
    span.end()
    feedback = replace(feedback, time_ns=getattr(span, "start_time", 0) or 0)
    endpoint = phoenix_endpoint or os.environ.get(PHOENIX_ENDPOINT_ENV)
    recorded = span.get_span_context()
    if endpoint and not (recorded.is_valid and not recorded.trace_flags.sampled):
        _send_in_background(feedback, endpoint)
    return feedback


def _parent(
    provider: trace_api.TracerProvider, feedback: Feedback, attributes: dict[str, Any]
) -> context_api.Context | None:
    """The context to start the feedback span in: the current one under a span, else one with a
    remote parent (never exported) in the turn's trace, or a new trace for a session, sampled as
    the provider's sampler would sample a root span of the session there."""
    if trace_api.get_current_span().get_span_context().is_valid:
        return None
    trace_id = _trace_id(feedback.turn) or _ids.generate_trace_id()
    sampler = getattr(provider, "sampler", None)
    sampled = True
    if isinstance(sampler, Sampler):
        decided = sampler.should_sample(None, trace_id, _SPAN_NAME, attributes=attributes)
        sampled = decided.decision is Decision.RECORD_AND_SAMPLE
    flags = trace_api.TraceFlags(trace_api.TraceFlags.SAMPLED if sampled else 0)
    parent = trace_api.SpanContext(trace_id, _ids.generate_span_id(), True, flags)
    return trace_api.set_span_in_context(trace_api.NonRecordingSpan(parent))


def _trace_id(turn: str | None) -> int | None:
    """The trace id ``turn`` names (32 hex digits, not all zero), if it is one."""
    if turn is None or not _TRACE_ID.fullmatch(turn):
        return None
    return int(turn, 16) or None


def phoenix_request(feedback: Feedback, endpoint: str) -> tuple[str, dict[str, Any]]:
    """The URL and JSON body that send ``feedback`` to Phoenix's REST API."""
    result = {
        key: value
        for key, value in (
            ("score", feedback.score),
            ("label", feedback.label),
            ("explanation", feedback.explanation),
        )
        if value is not None
    }
    annotation: dict[str, Any] = {
        "name": feedback.name,
        "annotator_kind": "HUMAN",
        "result": result,
        "metadata": {"source": feedback.source} if feedback.source else {},
        "identifier": feedback.source or "",
    }
    if feedback.turn is not None:
        annotation["trace_id"] = feedback.turn
        path = "/v1/trace_annotations"
    else:
        annotation["session_id"] = feedback.session_id
        path = "/v1/session_annotations"
    return endpoint.rstrip("/") + path, {"data": [annotation]}


def send_to_phoenix(
    feedback: Feedback,
    endpoint: str,
    timeout: float = PHOENIX_TIMEOUT,
    retry_delays: Sequence[float] | None = None,
) -> bool:
    """POST ``feedback`` to Phoenix, again after each of ``retry_delays`` (default
    :data:`PHOENIX_RETRY_DELAYS`) seconds while Phoenix answers 404; ``False`` (logged once per
    endpoint and problem) if Phoenix did not take it."""
    url, body = phoenix_request(feedback, endpoint)
    delays = PHOENIX_RETRY_DELAYS if retry_delays is None else retry_delays
    for delay in (*delays, None):
        status, problem = _post(url + "?sync=true", body, timeout)
        if status is not None and 200 <= status < 300:
            return True
        if status != 404 or delay is None:
            break
        time.sleep(delay)
    if status == 404:
        target = f"trace {feedback.turn!r}" if feedback.turn else f"session {feedback.session_id!r}"
        problem = f"Phoenix does not know the {target} ({problem})"
    where = f"sending feedback to Phoenix at {endpoint}"
    log_once(f"{where}: {status}", message=f"{where} failed: {problem}")
    return False


def _post(url: str, body: dict[str, Any], timeout: float) -> tuple[int | None, str]:
    """The HTTP status of POSTing ``body`` (``None`` without an answer) and what went wrong."""
    import urllib.request  # only when feedback goes to Phoenix

    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    api_key = os.environ.get("PHOENIX_API_KEY")
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), ""
    except urllib.error.HTTPError as error:
        return error.code, f"HTTP {error.code}: {_detail(error)}"
    except Exception as exc:  # noqa: BLE001 - a Phoenix that is down never reaches the app
        return None, str(exc) or type(exc).__name__


def _detail(error: urllib.error.HTTPError) -> str:
    """What Phoenix said about an error (its JSON ``detail``, else the start of the body)."""
    try:
        text = error.read(2000).decode("utf-8", "replace")
    except Exception:  # noqa: BLE001
        return str(error.reason)
    try:
        detail = json.loads(text).get("detail")
    except (ValueError, AttributeError):
        detail = None
    return str(detail or text.strip() or error.reason)[:300]


def _send_in_background(feedback: Feedback, endpoint: str) -> None:
    """Queue ``feedback`` for a sender thread: at most :data:`MAX_SENDERS` run at once (a burst
    of feedback never starts a thread each); beyond :data:`MAX_PENDING` waiting sends, new ones
    are dropped for Phoenix (logged once; the span has them)."""
    global _senders, _unfinished
    with _idle:
        if _unfinished >= MAX_PENDING:
            drop = True
        else:
            drop = False
            _queue.append((feedback, endpoint))
            _unfinished += 1
            start = _senders < MAX_SENDERS
            if start:
                _senders += 1
    if drop:
        log_once(
            "feedback queue full",
            message=f"more than {MAX_PENDING} feedback sends to Phoenix are waiting: feedback is "
            "dropped for Phoenix until they are done (its spans are recorded as usual)",
        )
        return
    if start:
        try:
            threading.Thread(target=_send_queued, name="convotel-feedback", daemon=True).start()
        except RuntimeError as exc:  # e.g. "can't start new thread": the app goes on
            with _idle:
                _senders -= 1
                orphaned = _senders == 0
            if orphaned:  # no sender left to take what waits: give it up
                _abandon_queue()
            log_once(
                "starting a feedback sender", message=f"starting a feedback sender failed: {exc}"
            )


def _send_queued() -> None:
    """A sender thread: sends what waits in the queue, and ends when it is empty."""
    global _senders
    while True:
        with _idle:
            if not _queue:
                _senders -= 1
                return
            feedback, endpoint = _queue.popleft()
        try:
            send_to_phoenix(feedback, endpoint)
        except Exception as exc:  # noqa: BLE001 - a sender thread never dies of one send
            log_once("sending feedback", message=f"sending feedback to Phoenix failed: {exc!r}")
        finally:
            _done(1)


def _abandon_queue() -> None:
    with _idle:
        abandoned = len(_queue)
        _queue.clear()
    _done(abandoned)


def _done(count: int) -> None:
    global _unfinished
    with _idle:
        _unfinished -= count
        if _unfinished <= 0:
            _idle.notify_all()


def flush_feedback(timeout: float | None = None) -> bool:
    """Wait until the feedback being sent to Phoenix is sent (or given up and logged): at most
    ``timeout`` seconds (``None``: no limit). ``True`` if nothing is left being sent. Sends run
    on daemon threads, which die with the interpreter: a short-lived program (a script, a batch
    job) calls this before it exits."""
    with _idle:
        return _idle.wait_for(lambda: _unfinished <= 0, timeout)
