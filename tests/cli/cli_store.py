"""A span store with a few known conversations, written the way an application writes one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from openinference.semconv.trace import (
    MessageAttributes,
    OpenInferenceSpanKindValues,
    SpanAttributes,
    ToolCallAttributes,
)
from opentelemetry import trace as trace_api
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode
from opentelemetry.util.types import AttributeValue

from convotel.store import SQLiteSpanExporter

MINUTE_NS = 60 * 1_000_000_000
MS_NS = 1_000_000
LONG_QUESTION = "Please summarise " + "the quarterly report in great detail " * 10


@dataclass(frozen=True)
class TurnSpec:
    question: str
    answer: str | None
    prompt: int = 10
    completion: int = 5
    tool_call: tuple[str, str] | None = None
    error: str | None = None


@dataclass(frozen=True)
class SessionSpec:
    session_id: str | None
    user_id: str
    minutes_ago: float
    turns: Sequence[TurnSpec] = field(default_factory=tuple)


SCENARIO = (
    SessionSpec(
        "s-old",
        "alice",
        180,
        (TurnSpec("good morning", "morning!"), TurnSpec("bye", "see you", prompt=20, completion=3)),
    ),
    SessionSpec(
        "s-weather",
        "alice",
        20,
        (
            TurnSpec("weather in Paris?", None, tool_call=("get_weather", '{"city": "Paris"}')),
            TurnSpec("and tomorrow?", "Rain, 12°C.", prompt=40, completion=8),
        ),
    ),
    SessionSpec(
        "s-broken",
        "bob",
        10,
        (
            TurnSpec("hello?", None, error="APIStatusError: 503 upstream unavailable"),
            TurnSpec("hello again", "Hi Bob!"),
        ),
    ),
    SessionSpec("s-long", "carol", 5, (TurnSpec(LONG_QUESTION, "It went well. " * 30),)),
    SessionSpec(None, "nobody", 1, (TurnSpec("untracked", "no session id"),)),
)


def _llm_attributes(turn: TurnSpec, ids: dict[str, AttributeValue]) -> dict[str, AttributeValue]:
    output = SpanAttributes.LLM_OUTPUT_MESSAGES
    attributes: dict[str, AttributeValue] = {
        **ids,
        SpanAttributes.OPENINFERENCE_SPAN_KIND: OpenInferenceSpanKindValues.LLM.value,
        f"{SpanAttributes.LLM_INPUT_MESSAGES}.0.{MessageAttributes.MESSAGE_ROLE}": "user",
        f"{SpanAttributes.LLM_INPUT_MESSAGES}.0.{MessageAttributes.MESSAGE_CONTENT}": turn.question,
        SpanAttributes.LLM_TOKEN_COUNT_PROMPT: turn.prompt,
        SpanAttributes.LLM_TOKEN_COUNT_COMPLETION: turn.completion,
        SpanAttributes.LLM_TOKEN_COUNT_TOTAL: turn.prompt + turn.completion,
    }
    if turn.answer is not None:
        attributes[f"{output}.0.{MessageAttributes.MESSAGE_ROLE}"] = "assistant"
        attributes[f"{output}.0.{MessageAttributes.MESSAGE_CONTENT}"] = turn.answer
    if turn.tool_call is not None:
        call = f"{output}.0.{MessageAttributes.MESSAGE_TOOL_CALLS}.0"
        attributes[f"{call}.{ToolCallAttributes.TOOL_CALL_FUNCTION_NAME}"] = turn.tool_call[0]
        attributes[f"{call}.{ToolCallAttributes.TOOL_CALL_FUNCTION_ARGUMENTS_JSON}"] = (
            turn.tool_call[1]
        )
    return attributes


def write_scenario(path: Path, now_ns: int) -> None:
    """Write :data:`SCENARIO` through a real BatchSpanProcessor into the store at ``path``."""
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(SQLiteSpanExporter(path)))
    tracer = provider.get_tracer("tests.cli")
    for spec in SCENARIO:
        ids: dict[str, AttributeValue] = {SpanAttributes.USER_ID: spec.user_id}
        if spec.session_id is not None:
            ids[SpanAttributes.SESSION_ID] = spec.session_id
        start = now_ns - int(spec.minutes_ago * MINUTE_NS)
        for number, turn in enumerate(spec.turns):
            at = start + number * 1000 * MS_NS
            root = tracer.start_span(
                "chat_turn",
                attributes={
                    **ids,
                    SpanAttributes.OPENINFERENCE_SPAN_KIND: "CHAIN",
                    SpanAttributes.INPUT_VALUE: turn.question,
                },
                start_time=at,
            )
            llm = tracer.start_span(
                "ChatCompletion",
                context=trace_api.set_span_in_context(root),
                attributes=_llm_attributes(turn, ids),
                start_time=at + 10 * MS_NS,
            )
            if turn.error is not None:
                llm.set_status(Status(StatusCode.ERROR, turn.error))
            llm.end(end_time=at + 400 * MS_NS)
            if turn.answer is not None:
                root.set_attribute(SpanAttributes.OUTPUT_VALUE, turn.answer)
            root.end(end_time=at + 500 * MS_NS)
    provider.shutdown()
