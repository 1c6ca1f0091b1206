"""Finished spans as the read model sees them: :class:`SpanRecord`, built from OpenTelemetry
``ReadableSpan`` objects or from rows of the SQLite store (see :mod:`convotel.sessions`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

from openinference.semconv.trace import OpenInferenceSpanKindValues, SpanAttributes
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import format_span_id, format_trace_id
from opentelemetry.util.types import AttributeValue

__all__ = ["SpanEvent", "SpanLike", "SpanRecord", "as_span_record", "identifier"]

_SESSION_SOURCE = "convotel.session.source"  # convotel.provider_sessions.SESSION_SOURCE
_LLM_KIND = OpenInferenceSpanKindValues.LLM.value


@dataclass(frozen=True)
class SpanEvent:
    """One span event (``exception`` events explain errors)."""

    name: str
    time_ns: int
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)


@dataclass(frozen=True)
class SpanRecord:
    """A finished span reduced to what the read model needs; built from SDK spans or store rows."""

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    start_ns: int
    end_ns: int
    status_code: str = "UNSET"
    status_message: str | None = None
    kind: str = "INTERNAL"
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)
    events: tuple[SpanEvent, ...] = ()
    resource_attributes: Mapping[str, AttributeValue] = field(default_factory=dict)

    @classmethod
    def from_readable_span(cls, span: ReadableSpan) -> SpanRecord:
        """Adapt a finished OpenTelemetry SDK span."""
        context = span.get_span_context()
        if context is None:
            raise ValueError(f"span {span.name!r} has no span context")
        parent = span.parent
        return cls(
            trace_id=format_trace_id(context.trace_id),
            span_id=format_span_id(context.span_id),
            parent_id=format_span_id(parent.span_id) if parent is not None else None,
            name=span.name,
            start_ns=span.start_time or 0,
            end_ns=span.end_time or span.start_time or 0,
            status_code=span.status.status_code.name,
            status_message=span.status.description,
            kind=span.kind.name,
            attributes=dict(span.attributes or {}),
            events=tuple(
                SpanEvent(event.name, event.timestamp, dict(event.attributes or {}))
                for event in span.events
            ),
            resource_attributes=dict(span.resource.attributes),
        )

    @property
    def span_kind(self) -> str | None:
        """The OpenInference span kind (``LLM``, ``CHAIN``, ...), if set."""
        value = self.attributes.get(SpanAttributes.OPENINFERENCE_SPAN_KIND)
        return value.upper() if isinstance(value, str) else None

    @property
    def is_llm(self) -> bool:
        return self.span_kind == _LLM_KIND

    @property
    def session_id(self) -> str | None:
        return identifier(self.attributes.get(SpanAttributes.SESSION_ID))

    @property
    def user_id(self) -> str | None:
        return identifier(self.attributes.get(SpanAttributes.USER_ID))

    @property
    def session_source(self) -> str | None:
        """Where its session came from (``convotel.session.source``: ``context``, or the
        provider's conversation, see :mod:`convotel.provider_sessions`)."""
        return identifier(self.attributes.get(_SESSION_SOURCE))

    @property
    def is_error(self) -> bool:
        return self.status_code == "ERROR"

    @property
    def duration_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns)

    def describe(self) -> str:
        """A one-line description for assertion messages and logs."""
        kind = self.span_kind or self.kind
        return f"span {self.name!r} ({kind}, trace {self.trace_id}, span {self.span_id})"


SpanLike: TypeAlias = "SpanRecord | ReadableSpan"


def as_span_record(span: SpanLike) -> SpanRecord:
    """Adapt either kind of finished span to a :class:`SpanRecord`."""
    return span if isinstance(span, SpanRecord) else SpanRecord.from_readable_span(span)


def identifier(value: object) -> str | None:
    """A session/user id as the read model sees it: a non-blank string (ints are stringified)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value
    return None
