"""Sessions as text: the ``convotel sessions`` table and one session turn by turn
(``convotel sessions show``)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from datetime import datetime, timezone

from convotel import provider_sessions
from convotel.cli.cost_text import format_cost
from convotel.cli.text_table import (
    Column,
    format_duration,
    format_table,
    terminal_width,
    truncate,
)
from convotel.feedback import Feedback
from convotel.sessions import Session, TokenCounts, Turn

__all__ = [
    "format_feedback",
    "format_session",
    "format_session_summary",
    "format_session_turns",
    "format_sessions_table",
]

_MAX_FIELD_CHARS = 4000  # per text field in `sessions show`

#: The table's short names of the provider sources (``openai.response`` is a chain's first
#: response); another source is shown as recorded.
_SOURCE_LABELS = {
    provider_sessions.OPENAI_CONVERSATION: "openai conv",
    provider_sessions.OPENAI_PREVIOUS_RESPONSE: "openai chain",
    provider_sessions.OPENAI_RESPONSE: "openai chain",
    provider_sessions.MISTRAL_CONVERSATION: "mistral conv",
    provider_sessions.LLAMA_INDEX_CHAT_STORE: "llamaindex key",
}


def _source_label(source: str | None) -> str:
    """A session's source in the table: ``-`` for the application's own (or unrecorded)."""
    if source is None or source == provider_sessions.CONTEXT:
        return "-"
    return _SOURCE_LABELS.get(source) or truncate(source, 14)


def _local_time(nanoseconds: int) -> datetime:
    return datetime.fromtimestamp(nanoseconds / 1e9, tz=timezone.utc).astimezone()


def format_sessions_table(sessions: Sequence[Session], width: int | None = None) -> str:
    """The ``convotel sessions`` table fitted to ``width`` (default: the terminal's); narrow
    terminals lose the FIRST, LATENCY, LAST OUTPUT and FROM columns, in that order. FROM (after
    SESSION) names the provider's conversation a session came from, when any did."""

    def time_text(nanoseconds: int) -> str:
        return f"{_local_time(nanoseconds):%m-%d %H:%M:%S}"

    columns = [
        Column("SESSION", [s.session_id for s in sessions], shrink_to=12),
        Column("USER", [s.user_id or "-" for s in sessions], shrink_to=8),
        Column("TURNS", [str(len(s.turns)) for s in sessions], right=True),
        Column("FIRST", [time_text(s.first_time_ns) for s in sessions], drop_rank=1),
        Column("LAST", [time_text(s.last_time_ns) for s in sessions]),
        Column(
            "LATENCY",
            [format_duration(s.total_latency_ns) for s in sessions],
            right=True,
            drop_rank=2,
        ),
        Column("TOK IN", [f"{s.tokens.prompt:,}" for s in sessions], right=True),
        Column("TOK OUT", [f"{s.tokens.completion:,}" for s in sessions], right=True),
        Column("ERRORS", [str(s.errors) for s in sessions], right=True),
        Column("FIRST INPUT", [truncate(s.first_input, 200) for s in sessions], shrink_to=13),
        Column(
            "LAST OUTPUT",
            [truncate(s.last_output, 200) for s in sessions],
            shrink_to=13,
            drop_rank=3,
        ),
    ]
    if any(s.cost_usd is not None for s in sessions):  # only once some call was priced
        costs = [format_cost(s.cost_usd, s.unpriced_llm_calls) for s in sessions]
        after = next(i for i, c in enumerate(columns) if c.header == "TOK OUT") + 1
        columns.insert(after, Column("COST", costs, right=True))
    sources = [_source_label(s.source) for s in sessions]
    if any(source != "-" for source in sources):
        # At most 14 characters, never shrunk: dropped last on a narrow terminal.
        columns.insert(1, Column("FROM", sources, drop_rank=4))
    return format_table(columns, width or terminal_width())


def _tokens_text(tokens: TokenCounts) -> str:
    return f"{tokens.prompt:,} in / {tokens.completion:,} out ({tokens.total:,} total)"


def _cost_text(session: Session) -> str:
    unpriced = session.unpriced_llm_calls
    if session.cost_usd is None:
        return "- (no model call was priced)" if session.llm_calls else "-"
    text = f"{format_cost(session.cost_usd)} USD"
    if unpriced:
        text += f" (+ {unpriced} model call{'s' if unpriced != 1 else ''} without a price)"
    return text


def _clip(text: str) -> str:
    if len(text) <= _MAX_FIELD_CHARS:
        return text
    return text[:_MAX_FIELD_CHARS] + f"… ({len(text) - _MAX_FIELD_CHARS:,} more characters)"


def _labelled(label: str, text: str, width: int) -> list[str]:
    """``label`` then ``text`` wrapped to ``width``, continuation lines aligned under the text."""
    indent = " " * 4 + " " * 8
    first_prefix = f"    {label:<8}"
    lines: list[str] = []
    for paragraph in _clip(text).splitlines() or [""]:
        wrapped = textwrap.wrap(
            paragraph,
            width=max(20, width),
            initial_indent=first_prefix if not lines else indent,
            subsequent_indent=indent,
            break_long_words=True,
            replace_whitespace=False,
        )
        lines.extend(wrapped or [indent.rstrip()])
    return lines


def _turn_lines(number: int, turn: Turn, session_user: str | None, width: int) -> list[str]:
    header = [
        f"Turn {number}",
        f"{_local_time(turn.start_ns):%H:%M:%S}",
        format_duration(turn.latency_ns),
        f"{turn.tokens.prompt:,} in / {turn.tokens.completion:,} out",
        f"{turn.llm_calls} LLM call{'s' if turn.llm_calls != 1 else ''}",
    ]
    if turn.cost_usd is not None:
        header.insert(4, format_cost(turn.cost_usd, turn.unpriced_llm_calls))
    if turn.user_id is not None and turn.user_id != session_user:
        header.append(f"user {turn.user_id}")
    if turn.client_disconnected:
        header.append("client went away")
    title = truncate("-- " + " | ".join(header), width - 1) + " "
    lines = [title + "-" * max(0, width - len(title))]
    lines += _labelled("trace", turn.trace_id, width)
    lines += _labelled("user", turn.input or "(no input recorded)", width)
    for call in turn.tool_calls:
        lines += _labelled("tool", f"{call.name}({call.arguments or ''})", width)
    for error in turn.errors:
        lines += _labelled("error", f"{error.span_name}: {error.message}", width)
    if turn.output is not None:
        lines += _labelled("model", turn.output, width)
    elif not turn.errors and not turn.tool_calls:
        lines += _labelled("model", "(no output recorded)", width)
    return lines


def format_session(session: Session, width: int | None = None) -> str:
    """One session turn by turn, for ``convotel sessions show``: its summary, then each turn
    (the command prints its timeline in between, see :mod:`convotel.cli.timeline`)."""
    summary, turns = format_session_summary(session), format_session_turns(session, width)
    return f"{summary}\n{turns}" if turns else summary


def format_session_summary(session: Session) -> str:
    """The lines that sum a session up: id, source, users, turns, tokens, time, cost, feedback."""
    first, last = _local_time(session.first_time_ns), _local_time(session.last_time_ns)
    last_text = f"{last:%H:%M:%S}" if last.date() == first.date() else f"{last:%Y-%m-%d %H:%M:%S}"
    users = ", ".join(session.user_ids) or "-"
    lines = [f"Session   {session.session_id}"]
    source = session.source
    if source == provider_sessions.CONTEXT:
        lines.append("Source    context (set by the application)")
    elif source is not None:
        lines.append(f"Source    {source} (the provider's own conversation)")
    lines += [
        f"User      {users}",
        f"Turns     {len(session.turns)}  |  LLM calls {session.llm_calls}  |  "
        f"errors {session.errors}",
        f"Tokens    {_tokens_text(session.tokens)}",
        f"Time      {first:%Y-%m-%d %H:%M:%S} -> {last_text}  |  "
        f"total latency {format_duration(session.total_latency_ns)}",
        f"Cost      {_cost_text(session)}",
    ]
    for given in session.feedback:
        lines.append(f"Feedback  {format_feedback(given, session)}")
    return "\n".join(lines)


def format_session_turns(session: Session, width: int | None = None) -> str:
    """Each turn of a session in full (each preceded by a blank line), fitted to ``width``."""
    width = width or terminal_width()
    lines: list[str] = []
    for number, turn in enumerate(session.turns, start=1):
        lines.append("")
        lines += _turn_lines(number, turn, session.user_id, width)
    return "\n".join(lines)


def format_feedback(given: Feedback, session: Session) -> str:
    """One piece of feedback on ``session``, as ``sessions show`` lists it:
    ``thumbs: down (0) "too slow" by alice, on turn 2``."""
    parts = [f"{given.name}:"]
    if given.label is not None:
        parts.append(given.label)
    if given.score is not None:
        parts.append(f"({given.score:g})" if given.label is not None else f"{given.score:g}")
    if given.explanation is not None:
        parts.append(f'"{given.explanation}"')
    if given.source is not None:
        parts.append(f"by {given.source}")
    text = " ".join(parts)
    if given.turn is not None:
        numbers = [n for n, turn in enumerate(session.turns, 1) if turn.trace_id == given.turn]
        text += f", on turn {numbers[0]}" if numbers else f", on trace {given.turn}"
    return text
