"""Real SDK spans at explicit times, carrying OpenInference attributes (helpers for tests/store)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from openinference.semconv.trace import (
    MessageAttributes,
    OpenInferenceMimeTypeValues,
    OpenInferenceSpanKindValues,
    SpanAttributes,
    ToolCallAttributes,
)
from opentelemetry import trace as trace_api
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.util.types import AttributeValue

T0_NS = 1_764_000_000_000_000_000  # a fixed instant (2025-11-24) so times are predictable
MS = 1_000_000

LLM = OpenInferenceSpanKindValues.LLM.value
CHAIN = OpenInferenceSpanKindValues.CHAIN.value
TOOL = OpenInferenceSpanKindValues.TOOL.value


def messages(prefix: str, *pairs: tuple[str, str]) -> dict[str, AttributeValue]:
    """Flattened OpenInference messages: ``prefix.{i}.message.role/content``."""
    attributes: dict[str, AttributeValue] = {}
    for index, (role, content) in enumerate(pairs):
        attributes[f"{prefix}.{index}.{MessageAttributes.MESSAGE_ROLE}"] = role
        attributes[f"{prefix}.{index}.{MessageAttributes.MESSAGE_CONTENT}"] = content
    return attributes


def tool_call_attributes(
    message_index: int, calls: Sequence[tuple[str, str, str]]
) -> dict[str, AttributeValue]:
    """Tool calls ``(id, name, arguments)`` of output message ``message_index``."""
    message = f"{SpanAttributes.LLM_OUTPUT_MESSAGES}.{message_index}"
    base = f"{message}.{MessageAttributes.MESSAGE_TOOL_CALLS}"
    attributes: dict[str, AttributeValue] = {}
    for index, (call_id, name, arguments) in enumerate(calls):
        attributes[f"{base}.{index}.{ToolCallAttributes.TOOL_CALL_ID}"] = call_id
        attributes[f"{base}.{index}.{ToolCallAttributes.TOOL_CALL_FUNCTION_NAME}"] = name
        attributes[f"{base}.{index}.{ToolCallAttributes.TOOL_CALL_FUNCTION_ARGUMENTS_JSON}"] = (
            arguments
        )
    return attributes


def ids(session: str | None, user: str | None) -> dict[str, AttributeValue]:
    found: dict[str, AttributeValue] = {}
    if session is not None:
        found[SpanAttributes.SESSION_ID] = session
    if user is not None:
        found[SpanAttributes.USER_ID] = user
    return found


class SpanMaker:
    """Starts and ends real SDK spans at times given in milliseconds after ``T0_NS``."""

    def __init__(self, provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
        self.tracer = provider.get_tracer("tests.store")
        self.exporter = exporter

    def start(
        self,
        name: str,
        kind: str,
        at_ms: float,
        attributes: Mapping[str, AttributeValue] | None = None,
        parent: Span | None = None,
    ) -> Span:
        context = trace_api.set_span_in_context(parent) if parent is not None else None
        return self.tracer.start_span(
            name,
            context=context,
            attributes={SpanAttributes.OPENINFERENCE_SPAN_KIND: kind, **(attributes or {})},
            start_time=T0_NS + int(at_ms * MS),
        )

    @staticmethod
    def end(span: Span, at_ms: float, error: BaseException | None = None) -> None:
        if error is not None:
            span.record_exception(error, timestamp=T0_NS + int(at_ms * MS))
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.end(end_time=T0_NS + int(at_ms * MS))

    def llm(
        self,
        at_ms: float,
        duration_ms: float,
        *,
        session: str | None = None,
        user: str | None = None,
        question: str | None = None,
        answer: str | None = None,
        prompt: int = 0,
        completion: int = 0,
        total: int | None = None,
        tool_calls: Sequence[tuple[str, str, str]] = (),
        parent: Span | None = None,
        error: BaseException | None = None,
        extra: Mapping[str, AttributeValue] | None = None,
    ) -> Span:
        """An LLM span as a provider adapter records it (JSON request in ``input.value``)."""
        attributes: dict[str, AttributeValue] = {
            **ids(session, user),
            SpanAttributes.INPUT_VALUE: '{"model": "gpt-4o-mini", "messages": ["..."]}',
            SpanAttributes.INPUT_MIME_TYPE: OpenInferenceMimeTypeValues.JSON.value,
            SpanAttributes.LLM_MODEL_NAME: "gpt-4o-mini",
            SpanAttributes.LLM_TOKEN_COUNT_PROMPT: prompt,
            SpanAttributes.LLM_TOKEN_COUNT_COMPLETION: completion,
            SpanAttributes.LLM_TOKEN_COUNT_TOTAL: prompt + completion if total is None else total,
        }
        if question is not None:
            attributes |= messages(
                SpanAttributes.LLM_INPUT_MESSAGES, ("system", "Be brief."), ("user", question)
            )
        if answer is not None:
            attributes |= messages(SpanAttributes.LLM_OUTPUT_MESSAGES, ("assistant", answer))
        if tool_calls:
            attributes[
                f"{SpanAttributes.LLM_OUTPUT_MESSAGES}.0.{MessageAttributes.MESSAGE_ROLE}"
            ] = "assistant"
            attributes |= tool_call_attributes(0, tool_calls)
        attributes |= extra or {}
        span = self.start("ChatCompletion", LLM, at_ms, attributes, parent)
        self.end(span, at_ms + duration_ms, error)
        return span

    def turn(
        self,
        at_ms: float,
        *,
        session: str | None,
        user: str | None,
        question: str,
        answer: str | None,
        latency_ms: float = 100,
        prompt: int = 10,
        completion: int = 5,
        tool_calls: Sequence[tuple[str, str, str]] = (),
        error: BaseException | None = None,
    ) -> str:
        """A chatbot turn: a CHAIN root with text input/output around one LLM call.

        Returns the trace id (hex).
        """
        root = self.start(
            "chat_turn",
            CHAIN,
            at_ms,
            {**ids(session, user), SpanAttributes.INPUT_VALUE: question},
            None,
        )
        self.llm(
            at_ms + 5,
            latency_ms - 10,
            session=session,
            user=user,
            question=question,
            answer=answer,
            prompt=prompt,
            completion=completion,
            tool_calls=tool_calls,
            parent=root,
            error=error,
        )
        if answer is not None:
            root.set_attribute(SpanAttributes.OUTPUT_VALUE, answer)
        self.end(root, at_ms + latency_ms, error)
        return trace_id_of(root)

    def finished(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())


def trace_id_of(span: Span) -> str:
    return trace_api.format_trace_id(span.get_span_context().trace_id)
