"""Feedback on a session or one of its turns: ``convotel.record_feedback(...)``.

Feedback goes where the application's telemetry goes: one short span (``convotel.feedback``,
OpenInference kind ``EVALUATOR``) carrying the session's ``session.id`` and OpenInference's
annotation attributes (``annotation.name``, ``annotation.score``, ``annotation.label``,
``annotation.explanation``, ``annotation.annotator_kind``), plus ``convotel.feedback.scope``
(``session`` or ``turn``), ``convotel.feedback.turn`` (the turn's trace id) and
``convotel.feedback.source`` (who gave it). Every OTLP backend and the embedded store receive it;
the read model (:mod:`convotel.sessions`) lists it on its session instead of counting it as a turn.

With a Phoenix endpoint (``phoenix_endpoint=`` or ``$CONVOTEL_PHOENIX_ENDPOINT``) it is also sent
to Phoenix's REST API (``/v1/session_annotations``, or ``/v1/trace_annotations`` for a turn), so it
appears on the session in Phoenix's UI: from a background thread, with a bounded timeout; a Phoenix
that is down is logged once and never blocks the application.

Invalid input (a blank or non-string session id or name, a score that is not a finite number, no
score, label or explanation) is a warning (:class:`InvalidFeedbackWarning`) and records nothing:
never an exception into the application.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import warnings
from dataclasses import dataclass, replace
from typing import Any

from openinference.semconv.trace import (
    AnnotationAttributes,
    OpenInferenceSpanKindValues,
    SpanAttributes,
)
from opentelemetry import trace as trace_api

__all__ = [
    "FEEDBACK_SCOPE",
    "FEEDBACK_SOURCE",
    "FEEDBACK_TURN",
    "PHOENIX_ENDPOINT_ENV",
    "PHOENIX_TIMEOUT",
    "Feedback",
    "InvalidFeedbackWarning",
    "phoenix_request",
    "record_feedback",
    "send_to_phoenix",
]

logger = logging.getLogger("convotel")

FEEDBACK_SCOPE = "convotel.feedback.scope"
FEEDBACK_TURN = "convotel.feedback.turn"
FEEDBACK_SOURCE = "convotel.feedback.source"
PHOENIX_ENDPOINT_ENV = "CONVOTEL_PHOENIX_ENDPOINT"
#: Seconds a request to Phoenix may take before it is given up (and logged once).
PHOENIX_TIMEOUT = 3.0
_SPAN_NAME = "convotel.feedback"
_MAX_TEXT = 4000
_logged: set[str] = set()


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
        _log_once("recording feedback", exc)
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
    tracer = provider.get_tracer("convotel.feedback")
    feedback = Feedback(
        session, feedback_name, number, label_text, explanation_text, turn_id, source_text
    )
    span = tracer.start_span(_SPAN_NAME, attributes=feedback.attributes())
    span.end()
    feedback = replace(feedback, time_ns=getattr(span, "start_time", 0) or 0)
    endpoint = phoenix_endpoint or os.environ.get(PHOENIX_ENDPOINT_ENV)
    if endpoint:
        threading.Thread(
            target=send_to_phoenix, args=(feedback, endpoint), name="convotel-feedback", daemon=True
        ).start()
    return feedback


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
    }
    if feedback.turn is not None:
        annotation["trace_id"] = feedback.turn
        path = "/v1/trace_annotations"
    else:
        annotation["session_id"] = feedback.session_id
        path = "/v1/session_annotations"
    return endpoint.rstrip("/") + path, {"data": [annotation]}


def send_to_phoenix(feedback: Feedback, endpoint: str, timeout: float = PHOENIX_TIMEOUT) -> bool:
    """POST ``feedback`` to Phoenix; ``False`` (logged once) if Phoenix did not take it."""
    import urllib.request  # only when feedback goes to Phoenix

    url, body = phoenix_request(feedback, endpoint)
    request = urllib.request.Request(
        url + "?sync=true",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    api_key = os.environ.get("PHOENIX_API_KEY")
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return bool(200 <= response.status < 300)
    except Exception as exc:  # noqa: BLE001 - a Phoenix that is down never reaches the app
        _log_once(f"sending feedback to Phoenix at {endpoint}", exc)
        return False


def _log_once(where: str, exc: BaseException) -> None:
    if where in _logged:
        return
    _logged.add(where)
    logger.warning("convotel: %s failed: %s", where, exc)
