"""Ids set with OpenInference's helpers are honoured by convotel, and the other way round."""

from __future__ import annotations

import json

from openinference.instrumentation import get_attributes_from_context as oi_attributes
from openinference.instrumentation import using_attributes as oi_using_attributes
from openinference.instrumentation import using_session as oi_using_session
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from convotel import get_attributes_from_context, using_attributes, using_metadata, using_session
from convotel.spans import Tracing


def test_openinference_ids_reach_convotel_spans(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    tracing = Tracing(tracer_provider.get_tracer("test"))
    with oi_using_attributes(session_id="oi-s", user_id="oi-u", metadata={"a": 1}, tags=["t"]):
        tracing.start("call", "LLM").end()
    (span,) = span_exporter.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes["session.id"] == "oi-s"
    assert span.attributes["user.id"] == "oi-u"
    assert json.loads(str(span.attributes["metadata"])) == {"a": 1}
    assert list(span.attributes["tag.tags"]) == ["t"]  # type: ignore[arg-type]


def test_convotel_ids_are_read_by_openinference() -> None:
    with using_attributes(session_id="cv-s", user_id="cv-u", tags=["x"]), using_metadata({"k": 2}):
        attributes = dict(oi_attributes())
    assert attributes["session.id"] == "cv-s"
    assert attributes["user.id"] == "cv-u"
    assert list(attributes["tag.tags"]) == ["x"]
    assert json.loads(str(attributes["metadata"])) == {"k": 2}


def test_mixed_nesting_overrides_in_both_directions() -> None:
    with oi_using_session("oi"), using_session("cv"):
        assert dict(get_attributes_from_context())["session.id"] == "cv"
    with using_session("cv"), oi_using_session("oi"):
        assert dict(oi_attributes())["session.id"] == "oi"
