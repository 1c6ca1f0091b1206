"""The one read model of "a session", shared by `convotel sessions` and the pytest plugin.

Finished spans (OpenTelemetry ``ReadableSpan`` objects or rows of the SQLite store) are adapted to
:class:`SpanRecord` and grouped the way Arize Phoenix groups them:

- a *turn* is one trace (a root span and its descendants);
- a trace belongs to the session of the first span in it (by start time, root first) that carries
  ``session.id``; traces without any ``session.id`` belong to no session;
- a session's user is the first non-empty ``user.id`` among its spans, in time order;
- tokens are summed over LLM-kind spans only (``llm.token_count.prompt``/``completion``; ``total``
  when reported, else prompt + completion), so a framework span wrapping a provider span is not
  counted twice;
- an error is counted where it happened: a span with status ERROR none of whose children has
  status ERROR (an exception bubbling up through three spans is one error);
- cost (USD) is summed over LLM-kind spans' ``llm.cost.total`` (see :mod:`convotel.cost`), so it
  too is counted once; ``None`` when no model call in it was priced, and the model calls without
  a price (unknown model, cost recording off) are counted apart;
- a turn's time to first token runs from its start to the earliest first token among its LLM
  spans that streamed (``convotel.stream.time_to_first_token_ms``, from each span's start).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from openinference.semconv.trace import (
    MessageAttributes,
    OpenInferenceMimeTypeValues,
    SpanAttributes,
    ToolCallAttributes,
)
from opentelemetry.semconv.attributes.exception_attributes import (
    EXCEPTION_MESSAGE,
    EXCEPTION_TYPE,
)
from opentelemetry.util.types import AttributeValue

from convotel.feedback import FEEDBACK_SCOPE, Feedback
from convotel.finish import TIME_TO_FIRST_TOKEN_MS
from convotel.span_records import SpanEvent, SpanLike, SpanRecord, as_span_record
from convotel.turn_rule import reply_text, turn_input_text

__all__ = [
    "Session",
    "SessionGrouping",
    "SpanEvent",
    "SpanRecord",
    "TokenCounts",
    "ToolCall",
    "Turn",
    "TurnError",
    "as_span_record",
    "build_sessions",
    "group_by_session",
    "span_cost",
    "sum_costs",
]

_JSON_MIME = OpenInferenceMimeTypeValues.JSON.value
_EXCEPTION_EVENT = "exception"
#: Written by ``convotel.web`` on the root of a request whose client went away mid-response.
_CLIENT_DISCONNECTED = "convotel.client.disconnected"


@dataclass(frozen=True)
class TokenCounts:
    """Prompt, completion and total token counts."""

    prompt: int = 0
    completion: int = 0
    total: int = 0

    def __add__(self, other: TokenCounts) -> TokenCounts:
        return TokenCounts(
            self.prompt + other.prompt,
            self.completion + other.completion,
            self.total + other.total,
        )

    @classmethod
    def of_span(cls, span: SpanRecord) -> TokenCounts:
        """The counts an LLM span reports (zero for any other kind)."""
        if not span.is_llm:
            return cls()
        prompt = _count(span.attributes.get(SpanAttributes.LLM_TOKEN_COUNT_PROMPT))
        completion = _count(span.attributes.get(SpanAttributes.LLM_TOKEN_COUNT_COMPLETION))
        total = _count(span.attributes.get(SpanAttributes.LLM_TOKEN_COUNT_TOTAL))
        return cls(prompt, completion, total or prompt + completion)


@dataclass(frozen=True)
class ToolCall:
    """A tool call the model asked for (``llm.output_messages.*.message.tool_calls.*``)."""

    name: str
    arguments: str | None = None
    id: str | None = None


@dataclass(frozen=True)
class TurnError:
    """Where a turn failed: the innermost error span and its message."""

    span_name: str
    span_id: str
    message: str


@dataclass(frozen=True)
class Turn:
    """One trace: a user request and everything the app did to answer it."""

    trace_id: str
    session_id: str | None
    user_id: str | None
    root: SpanRecord
    spans: tuple[SpanRecord, ...]
    input: str | None
    output: str | None
    tool_calls: tuple[ToolCall, ...]
    errors: tuple[TurnError, ...]
    tokens: TokenCounts
    llm_calls: int
    start_ns: int
    end_ns: int
    #: USD over its priced model calls (``llm.cost.total``); ``None`` if none was priced.
    cost_usd: float | None = None
    #: Model calls that recorded no cost (so ``cost_usd`` leaves them out).
    unpriced_llm_calls: int = 0

    @property
    def latency_ns(self) -> int:
        """Duration of the root span (the whole request as the app saw it)."""
        return self.root.duration_ns

    @property
    def time_to_first_token_ns(self) -> int | None:
        """From the turn's start to the first token of its first streamed model call (the
        earliest first token among the LLM spans with ``convotel.stream.time_to_first_token_ms``);
        ``None`` when no model call in it streamed."""
        firsts = [
            span.start_ns + round(ttft * 1e6)
            for span in self.spans
            if span.is_llm
            and isinstance(ttft := span.attributes.get(TIME_TO_FIRST_TOKEN_MS), (int, float))
            and not isinstance(ttft, bool)
            and ttft >= 0
        ]
        return max(0, min(firsts) - self.start_ns) if firsts else None

    @property
    def client_disconnected(self) -> bool:
        """The web client went away before the reply was complete (``convotel.web``)."""
        return self.root.attributes.get(_CLIENT_DISCONNECTED) is True

    @property
    def spans_without_session(self) -> tuple[SpanRecord, ...]:
        return tuple(span for span in self.spans if span.session_id is None)

    @property
    def stray_spans(self) -> tuple[SpanRecord, ...]:
        """Spans carrying a different ``session.id`` than the one the turn belongs to."""
        return tuple(
            span
            for span in self.spans
            if span.session_id is not None and span.session_id != self.session_id
        )

    @property
    def user_ids(self) -> tuple[str, ...]:
        return _distinct(span.user_id for span in self.spans)

    def describe(self) -> str:
        text = _shorten(self.input, 60)
        return f"turn {self.trace_id} (root {self.root.name!r}, input {text!r})"


@dataclass(frozen=True)
class Session:
    """The turns that share one ``session.id``, in time order."""

    session_id: str
    turns: tuple[Turn, ...]
    #: Feedback given on it or its turns (:func:`convotel.record_feedback`), oldest first.
    feedback: tuple[Feedback, ...] = ()

    @property
    def user_id(self) -> str | None:
        """The first non-empty ``user.id`` in the session (as Phoenix reports it)."""
        return next(iter(self.user_ids), None)

    @property
    def user_ids(self) -> tuple[str, ...]:
        return _distinct(user for turn in self.turns for user in turn.user_ids)

    @property
    def source(self) -> str | None:
        """Where the session came from: the first ``convotel.session.source`` among its spans
        (``context`` for ``using_session``, else the provider's, e.g. ``openai.conversation``)."""
        return next(
            (found for span in self.spans if (found := span.session_source) is not None), None
        )

    @property
    def spans(self) -> tuple[SpanRecord, ...]:
        return tuple(span for turn in self.turns for span in turn.spans)

    @property
    def llm_calls(self) -> int:
        return sum(turn.llm_calls for turn in self.turns)

    @property
    def tokens(self) -> TokenCounts:
        return sum((turn.tokens for turn in self.turns), TokenCounts())

    @property
    def errors(self) -> int:
        return sum(len(turn.errors) for turn in self.turns)

    @property
    def cost_usd(self) -> float | None:
        """USD over the session's priced model calls; ``None`` if none was priced."""
        return sum_costs(turn.cost_usd for turn in self.turns)

    @property
    def unpriced_llm_calls(self) -> int:
        return sum(turn.unpriced_llm_calls for turn in self.turns)

    @property
    def first_time_ns(self) -> int:
        return min(turn.start_ns for turn in self.turns)

    @property
    def last_time_ns(self) -> int:
        return max(turn.end_ns for turn in self.turns)

    @property
    def total_latency_ns(self) -> int:
        """Sum of the turns' latencies (time the user spent waiting, not wall-clock span)."""
        return sum(turn.latency_ns for turn in self.turns)

    @property
    def first_input(self) -> str | None:
        return self.turns[0].input

    @property
    def last_output(self) -> str | None:
        return self.turns[-1].output


@dataclass(frozen=True)
class SessionGrouping:
    """Sessions plus the turns that carried no ``session.id`` at all."""

    sessions: tuple[Session, ...]
    turns_without_session: tuple[Turn, ...]

    def get(self, session_id: str) -> Session | None:
        return next((s for s in self.sessions if s.session_id == session_id), None)


def group_by_session(spans: Iterable[SpanLike]) -> SessionGrouping:
    """Group finished spans into turns and sessions (sessions in order of first activity)."""
    by_trace: dict[str, list[SpanRecord]] = {}
    feedback: dict[str, list[Feedback]] = {}
    for span in spans:
        record = as_span_record(span)
        if record.attributes.get(FEEDBACK_SCOPE) is not None:  # feedback, not a turn
            given = Feedback.from_attributes(record.attributes, record.start_ns)
            if given is not None:
                feedback.setdefault(given.session_id, []).append(given)
            continue
        by_trace.setdefault(record.trace_id, []).append(record)
    turns = sorted(
        (build_turn(trace_spans) for trace_spans in by_trace.values()),
        key=lambda turn: (turn.start_ns, turn.trace_id),
    )
    by_session: dict[str, list[Turn]] = {}
    orphans: list[Turn] = []
    for turn in turns:
        if turn.session_id is None:
            orphans.append(turn)
        else:
            by_session.setdefault(turn.session_id, []).append(turn)
    sessions = tuple(
        Session(
            session_id,
            tuple(session_turns),
            tuple(sorted(feedback.get(session_id, ()), key=lambda f: f.time_ns)),
        )
        for session_id, session_turns in by_session.items()
    )
    return SessionGrouping(sessions, tuple(orphans))


def build_sessions(spans: Iterable[SpanLike]) -> list[Session]:
    """The sessions found in ``spans``, in order of first activity."""
    return list(group_by_session(spans).sessions)


def build_turn(trace_spans: Sequence[SpanRecord]) -> Turn:
    """Summarise the spans of one trace."""
    if not trace_spans:
        raise ValueError("a turn needs at least one span")
    span_ids = {span.span_id for span in trace_spans}
    ordered = sorted(
        trace_spans,
        key=lambda span: (span.start_ns, span.parent_id in span_ids),
    )
    roots = [span for span in ordered if span.parent_id not in span_ids]
    root = roots[0] if roots else ordered[0]
    llm_spans = [span for span in ordered if span.is_llm]
    costs = [span_cost(span) for span in llm_spans]
    return Turn(
        trace_id=root.trace_id,
        session_id=next((s.session_id for s in ordered if s.session_id is not None), None),
        user_id=next((s.user_id for s in ordered if s.user_id is not None), None),
        root=root,
        spans=tuple(ordered),
        input=_turn_input(root, llm_spans),
        output=_turn_output(root, llm_spans),
        tool_calls=tuple(call for span in llm_spans for call in _tool_calls(span)),
        errors=_turn_errors(ordered),
        tokens=sum((TokenCounts.of_span(span) for span in llm_spans), TokenCounts()),
        llm_calls=len(llm_spans),
        start_ns=min(span.start_ns for span in ordered),
        end_ns=max(span.end_ns for span in ordered),
        cost_usd=sum_costs(costs),
        unpriced_llm_calls=costs.count(None),
    )


def span_cost(span: SpanRecord) -> float | None:
    """The USD an LLM span recorded (``llm.cost.total``), if any."""
    value = span.attributes.get(SpanAttributes.LLM_COST_TOTAL)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        return None
    return float(value)


def sum_costs(costs: Iterable[float | None]) -> float | None:
    """The sum of the known costs (rounded to a millionth of a micro-dollar), ``None`` if none."""
    known = [cost for cost in costs if cost is not None]
    return round(sum(known), 12) if known else None


def _turn_input(root: SpanRecord, llm_spans: Sequence[SpanRecord]) -> str | None:
    """The root's text input, else the turn rule (:mod:`convotel.turn_rule`) over the model calls:
    the newest user message of the first call that has one."""
    text = _plain_text(root, SpanAttributes.INPUT_VALUE, SpanAttributes.INPUT_MIME_TYPE)
    if text is not None:
        return text
    for span in llm_spans:
        text = turn_input_text(span.attributes)
        if text:
            return text
    return _raw_value(root, llm_spans[:1], SpanAttributes.INPUT_VALUE)


def _turn_output(root: SpanRecord, llm_spans: Sequence[SpanRecord]) -> str | None:
    """The root's text output, else the reply text of the last model call that has one."""
    text = _plain_text(root, SpanAttributes.OUTPUT_VALUE, SpanAttributes.OUTPUT_MIME_TYPE)
    if text is not None:
        return text
    for span in reversed(llm_spans):
        text = reply_text(span.attributes)
        if text:
            return text
    return _raw_value(root, llm_spans[-1:], SpanAttributes.OUTPUT_VALUE)


def _plain_text(span: SpanRecord, value_key: str, mime_key: str) -> str | None:
    value = span.attributes.get(value_key)
    if not isinstance(value, str) or not value:
        return None
    return None if span.attributes.get(mime_key) == _JSON_MIME else value


def _raw_value(root: SpanRecord, llm_spans: Sequence[SpanRecord], key: str) -> str | None:
    for span in (root, *llm_spans):
        value = span.attributes.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _tool_calls(span: SpanRecord) -> Iterator[ToolCall]:
    for message in _indexed(span.attributes, SpanAttributes.LLM_OUTPUT_MESSAGES).values():
        for call in _indexed(message, MessageAttributes.MESSAGE_TOOL_CALLS).values():
            name = call.get(ToolCallAttributes.TOOL_CALL_FUNCTION_NAME)
            arguments = call.get(ToolCallAttributes.TOOL_CALL_FUNCTION_ARGUMENTS_JSON)
            call_id = call.get(ToolCallAttributes.TOOL_CALL_ID)
            yield ToolCall(
                name=name if isinstance(name, str) else "?",
                arguments=arguments if isinstance(arguments, str) else None,
                id=call_id if isinstance(call_id, str) else None,
            )


def _indexed(
    attributes: Mapping[str, AttributeValue], prefix: str
) -> dict[int, dict[str, AttributeValue]]:
    """Split flattened ``prefix.{i}.rest`` keys into ``{i: {rest: value}}``, sorted by ``i``."""
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.(.+)")
    groups: dict[int, dict[str, AttributeValue]] = {}
    for key, value in attributes.items():
        match = pattern.fullmatch(key)
        if match:
            groups.setdefault(int(match.group(1)), {})[match.group(2)] = value
    return dict(sorted(groups.items()))


def _turn_errors(spans: Sequence[SpanRecord]) -> tuple[TurnError, ...]:
    failed_parents = {span.parent_id for span in spans if span.is_error}
    return tuple(
        TurnError(span.name, span.span_id, _error_message(span))
        for span in spans
        if span.is_error and span.span_id not in failed_parents
    )


def _error_message(span: SpanRecord) -> str:
    for event in span.events:
        if event.name == _EXCEPTION_EVENT:
            kind = event.attributes.get(EXCEPTION_TYPE)
            message = event.attributes.get(EXCEPTION_MESSAGE)
            text = ": ".join(str(part) for part in (kind, message) if part)
            if text:
                return text
    return span.status_message or "error"


def _count(value: object) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, (int, float)):
        return int(value)
    return 0


def _distinct(values: Iterable[str | None]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(value for value in values if value is not None))


def _shorten(text: str | None, width: int) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"
