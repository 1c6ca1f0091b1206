"""A session as a timeline, for ``convotel sessions show``: one line per turn, drawn with rich.

Each line holds the turn's number, when it started (``+m:ss`` from the session's start), a bar for
its duration, flags for tool calls and errors, then its duration, time to first token (on a wide
enough terminal), tokens and cost; at 72 columns::

    TURN   START                        FLAGS    TIME   TOK IN/OUT      COST
       1   +0:00  ░▸█████▊                     2.40 s     120 / 45   $0.0012
       2   +0:31  ███▎                  ⚙1     1.00 s     180 / 12  $0.00080
       3   +1:35  ░░░░▸███████████████  ⚙2 ✗1  6.20 s  1,234 / 456   $0.0031
       4  +12:05  █▏                           350 ms       40 / 8         -

Every bar is drawn on one scale, the longest turn filling the column (in eighths of a character):
the bars compare the turns' durations, while the START column says where each one sits in the
session (a shared clock would squeeze the turns into slivers between the user's pauses). On a
turn whose model call streamed, ``▸`` marks its first token and ``░`` the wait before it.

The width is the terminal's; on a narrow one the flags get shorter, then the columns of first
token, start, cost and tokens are dropped in turn (:data:`_GIVE_WAY`), so each turn keeps one
line. rich writes plain text when the
output is not a terminal and honours ``NO_COLOR`` (and ``FORCE_COLOR``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TextIO

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.segment import Segment
from rich.style import Style
from rich.table import Table
from rich.text import Text

from convotel.cli.cost_text import format_cost
from convotel.cli.text_table import format_duration
from convotel.feedback import Feedback
from convotel.sessions import Session, Turn

__all__ = ["print_timeline"]

_MIN_BAR = 10  # characters the bar keeps before side columns are dropped
_PARTIAL = " ▏▎▍▌▋▊▉"  # a bar's last character, in eighths
_FULL, _WAIT, _FIRST_TOKEN = "█", "░", "▸"
_TOOL, _ERROR, _FEEDBACK = "⚙", "✗", "✎"

_BAR_STYLE = Style(color="cyan")
_ERROR_BAR_STYLE = Style(color="red")
_WAIT_STYLE = Style(color="cyan", dim=True)
_MARKER_STYLE = Style(color="yellow", bold=True)
_TOOL_STYLE = Style(color="yellow")
_ERROR_STYLE = Style(color="red", bold=True)
_FEEDBACK_STYLE = Style(color="magenta")


@dataclass(frozen=True)
class _Bar:
    """One turn's bar, drawn to the width rich gives its column."""

    duration_ns: int
    longest_ns: int
    first_token_ns: int | None
    failed: bool

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(_MIN_BAR, options.max_width)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        if width < 1:
            return
        eighths = round(self.duration_ns / self.longest_ns * width * 8) if self.longest_ns else 0
        full, part = divmod(min(max(eighths, 1), width * 8), 8)  # never less than "▏"
        style = _ERROR_BAR_STYLE if self.failed else _BAR_STYLE
        cells = [Segment(_FULL, style)] * full + ([Segment(_PARTIAL[part], style)] if part else [])
        if self.first_token_ns is not None:
            at = self.first_token_ns / self.longest_ns if self.longest_ns else 0
            marker = min(int(at * width), len(cells) - 1)
            cells[:marker] = [Segment(_WAIT, _WAIT_STYLE)] * marker
            cells[marker] = Segment(_FIRST_TOKEN, _MARKER_STYLE)
        yield from Segment.simplify(cells)
        yield Segment(" " * (width - len(cells)))


@dataclass(eq=False)
class _Column:
    """A column beside the bar; ``compact`` cells, if any, are used before columns are dropped."""

    header: str
    cells: list[Text]
    justify: Literal["left", "right"] = "right"
    compact: list[Text] | None = None

    @property
    def natural(self) -> int:
        return max([cell_len(self.header), *(cell.cell_len for cell in self.cells)])


#: How the columns give way on a narrow terminal, in order: each is compacted if it can be, else
#: dropped, until the bar has a fifth of the width (at least :data:`_MIN_BAR` characters).
_GIVE_WAY = ("FLAGS", "1ST TOKEN", "START", "COST", "TOK IN/OUT")


def _offset_text(nanoseconds: int) -> str:
    """``+0:12``, ``+12:05``, ``+1:02:03`` (from the session's start)."""
    minutes, seconds = divmod(nanoseconds // 1_000_000_000, 60)
    hours, minutes = divmod(minutes, 60)
    return f"+{hours}:{minutes:02d}:{seconds:02d}" if hours else f"+{minutes}:{seconds:02d}"


def _flags(turn: Turn, feedback: Sequence[Feedback] = (), *, compact: bool = False) -> Text:
    """``⚙ 2 tools  ✗ 1 error  ✎ thumbs: down`` (``⚙2 ✗1 ✎1`` when ``compact``); ``feedback``
    is the feedback given on this turn (one is shown by name and label or score)."""
    flags = Text()
    for glyph, count, noun, style in (
        (_TOOL, len(turn.tool_calls), "tool", _TOOL_STYLE),
        (_ERROR, len(turn.errors), "error", _ERROR_STYLE),
        (_FEEDBACK, len(feedback), "feedback", _FEEDBACK_STYLE),
    ):
        if count:
            flags.append((" " if compact else "  ") if flags else "")
            if compact:
                words = f"{count}"
            elif glyph == _FEEDBACK and count == 1:
                words = f" {_feedback_word(feedback[0])}"
            else:
                plural = "s" if count != 1 and noun != "feedback" else ""
                words = f" {count} {noun}{plural}"
            flags.append(glyph + words, style)
    return flags


def _feedback_word(given: Feedback) -> str:
    """``thumbs: down``, ``nps: 9``, or the name alone."""
    if given.label is not None:
        return f"{given.name}: {given.label}"
    if given.score is not None:
        return f"{given.name}: {given.score:g}"
    return given.name


def _turn_feedback(session: Session) -> list[list[Feedback]]:
    """Per turn, the feedback given on it (by its trace id)."""
    by_trace: dict[str, list[Feedback]] = {}
    for given in session.feedback:
        if given.turn is not None:
            by_trace.setdefault(given.turn, []).append(given)
    return [by_trace.get(turn.trace_id, []) for turn in session.turns]


def _columns(session: Session) -> tuple[list[_Column], list[_Column]]:
    """The columns left of the bar and those right of it."""
    turns, start = session.turns, session.first_time_ns
    feedback = _turn_feedback(session)
    left = [
        _Column("TURN", [Text(str(n)) for n in range(1, len(turns) + 1)]),
        _Column("START", [Text(_offset_text(t.start_ns - start)) for t in turns]),
    ]
    right = [
        _Column(
            "FLAGS",
            [_flags(t, given) for t, given in zip(turns, feedback, strict=True)],
            justify="left",
            compact=[
                _flags(t, given, compact=True) for t, given in zip(turns, feedback, strict=True)
            ],
        ),
        _Column("TIME", [Text(format_duration(t.latency_ns)) for t in turns]),
    ]
    firsts = [t.time_to_first_token_ns for t in turns]
    if any(first is not None for first in firsts):  # only once some model call streamed
        cells = [Text("-" if f is None else format_duration(f)) for f in firsts]
        right.append(_Column("1ST TOKEN", cells))
    tokens = [Text(f"{t.tokens.prompt:,} / {t.tokens.completion:,}") for t in turns]
    right.append(_Column("TOK IN/OUT", tokens))
    if any(t.cost_usd is not None for t in turns):  # only once some call was priced
        costs = [Text(format_cost(t.cost_usd, t.unpriced_llm_calls)) for t in turns]
        right.append(_Column("COST", costs))
    return left, right


def _fit(columns: list[_Column], width: int) -> list[_Column]:
    """``columns`` after giving way (:data:`_GIVE_WAY`) to a bar of a fifth of ``width``."""
    wanted = max(_MIN_BAR, width // 5)
    kept = list(columns)
    for header in _GIVE_WAY:
        if sum(c.natural + 2 for c in kept) + wanted <= width:
            break
        column = next((c for c in kept if c.header == header), None)
        if column is not None and column.compact is not None:
            column.cells, column.compact = column.compact, None
        elif column is not None:
            kept.remove(column)
    return kept


def _legend(with_feedback: bool) -> Text:
    """The key to the glyphs (feedback's only when some turn got feedback)."""
    return Text.assemble(
        "Timeline  ",
        (_FULL, _BAR_STYLE),
        " duration  ",
        (_WAIT, _WAIT_STYLE),
        (_FIRST_TOKEN, _MARKER_STYLE),
        " first token  ",
        (_TOOL, _TOOL_STYLE),
        " tools  ",
        (_ERROR, _ERROR_STYLE),
        " errors  ",
        *(((_FEEDBACK, _FEEDBACK_STYLE), " feedback  ") if with_feedback else ()),
        "(the longest turn fills the bar)",
    )


def _table(session: Session, width: int) -> Table:
    left, right = _columns(session)
    kept = _fit([*left, *right], width)
    left, right = [c for c in left if c in kept], [c for c in right if c in kept]
    table = Table(box=None, padding=(0, 1), pad_edge=False, expand=True, header_style="bold")
    for column in left:
        table.add_column(column.header, justify="right", no_wrap=True)
    table.add_column("", ratio=1, no_wrap=True, overflow="crop")
    for column in right:
        table.add_column(column.header, justify=column.justify, no_wrap=True, overflow="ellipsis")
    longest = max(turn.latency_ns for turn in session.turns)
    for row, turn in enumerate(session.turns):
        bar = _Bar(turn.latency_ns, longest, turn.time_to_first_token_ns, bool(turn.errors))
        table.add_row(*(c.cells[row] for c in left), bar, *(c.cells[row] for c in right))
    return table


def print_timeline(session: Session, file: TextIO, width: int) -> None:
    """Print ``session``'s timeline to ``file``, ``width`` characters wide (plain text unless
    ``file`` is a terminal; no colour under ``NO_COLOR``)."""
    if not session.turns:
        return
    console = Console(file=file, width=width, highlight=False, markup=False, emoji=False)
    with_feedback = any(given.turn is not None for given in session.feedback)
    console.print(_legend(with_feedback), no_wrap=True, overflow="ellipsis", crop=True)
    console.print(_table(session, width))
