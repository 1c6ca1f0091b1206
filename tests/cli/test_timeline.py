"""The timeline of `convotel sessions show`: one line per turn, sized to the terminal, plain text
unless the output is a terminal, no colour under NO_COLOR; and the time to first token it marks."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import pytest
from openinference.semconv.trace import (
    MessageAttributes,
    OpenInferenceSpanKindValues,
    SpanAttributes,
    ToolCallAttributes,
)
from opentelemetry.util.types import AttributeValue

from convotel.cli import main, session_as_json
from convotel.finish import TIME_TO_FIRST_TOKEN_MS
from convotel.sessions import Session, SpanRecord, build_sessions

GOLDEN = Path(__file__).parent / "golden"
UPDATE_GOLDEN = os.environ.get("CONVOTEL_UPDATE_GOLDEN") == "1"
S, MS = 1_000_000_000, 1_000_000
#: 2026-11-25 09:00:00 UTC; the timeline prints times from the session's start, so the golden
#: file holds no local time.
T0 = 1_795_597_200 * S

PrintTimeline = Callable[[Session, TextIO, int], None]


@pytest.fixture
def print_timeline() -> PrintTimeline:
    pytest.importorskip("rich")
    from convotel.cli.timeline import print_timeline

    return print_timeline


@pytest.fixture(autouse=True)
def no_colour_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLORTERM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")


def turn_spans(
    number: int,
    start_s: float,
    duration_ms: int,
    *,
    first_token_ms: float | None = None,
    tools: tuple[str, ...] = (),
    error: str | None = None,
    tokens: tuple[int, int] = (100, 20),
    cost: float | None = None,
    session_id: str = "s-golden",
) -> list[SpanRecord]:
    """One turn: a root span and, 10 ms into it, a model call (streamed if ``first_token_ms``)."""
    trace_id, root_id, llm_id = f"{number:032x}", f"{number:016x}", f"{number + 100:016x}"
    start = T0 + int(start_s * S)
    end = start + duration_ms * MS
    llm: dict[str, AttributeValue] = {
        SpanAttributes.SESSION_ID: session_id,
        SpanAttributes.OPENINFERENCE_SPAN_KIND: OpenInferenceSpanKindValues.LLM.value,
        SpanAttributes.LLM_TOKEN_COUNT_PROMPT: tokens[0],
        SpanAttributes.LLM_TOKEN_COUNT_COMPLETION: tokens[1],
    }
    if first_token_ms is not None:
        llm[TIME_TO_FIRST_TOKEN_MS] = first_token_ms
    if cost is not None:
        llm[SpanAttributes.LLM_COST_TOTAL] = cost
    for index, name in enumerate(tools):
        call = f"{SpanAttributes.LLM_OUTPUT_MESSAGES}.0.{MessageAttributes.MESSAGE_TOOL_CALLS}"
        llm[f"{call}.{index}.{ToolCallAttributes.TOOL_CALL_FUNCTION_NAME}"] = name
    root_attributes: dict[str, AttributeValue] = {
        SpanAttributes.SESSION_ID: session_id,
        SpanAttributes.OPENINFERENCE_SPAN_KIND: "CHAIN",
    }
    return [
        SpanRecord(trace_id, root_id, None, "chat_turn", start, end, attributes=root_attributes),
        SpanRecord(
            trace_id,
            llm_id,
            root_id,
            "ChatCompletion",
            start + min(10 * MS, duration_ms * MS),
            end,
            status_code="ERROR" if error else "UNSET",
            status_message=error,
            attributes=llm,
        ),
    ]


def session_of(*turns: list[SpanRecord]) -> Session:
    (session,) = build_sessions(span for spans in turns for span in spans)
    return session


def golden_session() -> Session:
    """Four turns: streamed, a tool call, streamed with tools and an error, unpriced and quick."""
    return session_of(
        turn_spans(1, 0, 2400, first_token_ms=390, tokens=(120, 45), cost=0.0012),
        turn_spans(2, 31, 1000, tools=("get_weather",), tokens=(180, 12), cost=0.0008),
        turn_spans(
            3,
            95,
            6200,
            first_token_ms=1490,
            tools=("search", "fetch_page"),
            error="RateLimitError: 429",
            tokens=(1234, 456),
            cost=0.0031,
        ),
        turn_spans(4, 725, 350, tokens=(40, 8)),
    )


def render(print_timeline: PrintTimeline, session: Session, width: int) -> str:
    out = io.StringIO()
    print_timeline(session, out, width)
    return out.getvalue()


def turn_rows(text: str) -> dict[int, str]:
    """The timeline's turn lines, by turn number."""
    rows = [line for line in text.splitlines() if re.match(r"\s*\d+ ", line)]
    return {int(line.split()[0]): line for line in rows}


class Terminal(io.StringIO):
    """Output that says it is a terminal."""

    def isatty(self) -> bool:
        return True


# SGR parameters that set a colour (foreground, background, 256 and true colour, bright).
_COLOUR_CODES = {*range(30, 39), *range(40, 49), *range(90, 98), *range(100, 108)}


def colour_codes(text: str) -> set[int]:
    codes = {
        int(code)
        for parameters in re.findall(r"\x1b\[([\d;]*)m", text)
        for code in parameters.split(";")
        if code
    }
    return codes & _COLOUR_CODES


# ------------------------------------------------------------------------------------ drawing


def test_timeline_matches_the_golden_file_at_100_columns(print_timeline: PrintTimeline) -> None:
    text = render(print_timeline, golden_session(), 100)

    golden = GOLDEN / "timeline_100.txt"
    if UPDATE_GOLDEN:
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8")
    assert all(len(line) <= 100 for line in text.splitlines())


@pytest.mark.parametrize("width", [80, 60, 40])
def test_a_narrow_terminal_keeps_one_line_per_turn_within_its_width(
    print_timeline: PrintTimeline, width: int
) -> None:
    text = render(print_timeline, golden_session(), width)

    lines = text.splitlines()
    assert len(lines) == 2 + 4  # legend, header, one line per turn
    assert all(len(line) <= width for line in lines)
    rows = turn_rows(text)
    assert sorted(rows) == [1, 2, 3, 4]
    assert all(re.search(r"\d (ms|s)\b", rows[n]) for n in rows)  # the duration stays
    assert "✗" in rows[3]
    assert "⚙" in rows[2]


def test_at_60_columns_the_bar_keeps_room_and_tokens_stay(print_timeline: PrintTimeline) -> None:
    rows = turn_rows(render(print_timeline, golden_session(), 60))

    assert "1,234 / 456" in rows[3]
    assert rows[3].count("█") + rows[3].count("░") >= 10


def test_bars_compare_the_turns_durations(print_timeline: PrintTimeline) -> None:
    rows = turn_rows(render(print_timeline, golden_session(), 100))

    def bar_cells(row: str) -> int:
        return sum(row.count(glyph) for glyph in "█░▸▏▎▍▌▋▊▉")

    lengths = {number: bar_cells(row) for number, row in rows.items()}
    assert lengths[3] > lengths[1] > lengths[2] > lengths[4] >= 1


def test_first_token_is_marked_only_on_streamed_turns(print_timeline: PrintTimeline) -> None:
    rows = turn_rows(render(print_timeline, golden_session(), 100))

    assert [n for n, row in rows.items() if "▸" in row] == [1, 3]
    assert [n for n, row in rows.items() if "░" in row] == [1, 3]
    assert re.search(r"░+▸█", rows[3])  # the wait, the first token, then the rest of the turn
    assert "1.50 s" in rows[3]  # 10 ms into the turn + 1,490 ms
    assert "400 ms" in rows[1]


def test_tool_calls_and_errors_are_flagged(print_timeline: PrintTimeline) -> None:
    rows = turn_rows(render(print_timeline, golden_session(), 100))

    assert "⚙ 1 tool " in rows[2]
    assert "⚙ 2 tools  ✗ 1 error" in rows[3]
    assert "✗" not in rows[1] + rows[2] + rows[4]
    assert "⚙" not in rows[1] + rows[4]


def test_feedback_on_a_turn_is_flagged_on_its_line(print_timeline: PrintTimeline) -> None:
    from dataclasses import replace

    from convotel.feedback import Feedback

    session = golden_session()
    turn_2, turn_3 = session.turns[1].trace_id, session.turns[2].trace_id
    given = (
        Feedback("s-golden", "thumbs", label="down", turn=turn_2, source="ana"),
        Feedback("s-golden", "nps", score=3, turn=turn_3),
        Feedback("s-golden", "resolved", score=0, turn=turn_3),
        Feedback("s-golden", "thumbs", label="up"),  # on the session: not on a turn line
    )
    text = render(print_timeline, replace(session, feedback=given), 120)
    rows = turn_rows(text)

    assert "✎ feedback" in text.splitlines()[0]  # the legend names it once some turn has any
    assert "✎ thumbs: down" in rows[2]
    assert "✗ 1 error  ✎ 2 feedback" in rows[3]
    assert "✎" not in rows[1] + rows[4]
    narrow = turn_rows(render(print_timeline, replace(session, feedback=given), 60))
    assert "✎1" in narrow[2]  # compact on a narrow terminal
    plain = render(print_timeline, session, 120)
    assert "✎" not in plain  # no feedback on a turn: no flag, no legend entry


def test_tokens_and_cost_are_at_the_side(print_timeline: PrintTimeline) -> None:
    text = render(print_timeline, golden_session(), 100)
    rows = turn_rows(text)

    assert "TOK IN/OUT" in text
    assert "COST" in text
    assert rows[3].endswith("1,234 / 456   $0.0031")
    assert rows[4].endswith("40 / 8         -")  # not priced


def test_a_one_turn_session_of_zero_duration_is_drawn(print_timeline: PrintTimeline) -> None:
    session = session_of(turn_spans(1, 0, 0, first_token_ms=0, tokens=(0, 0)))

    text = render(print_timeline, session, 60)

    rows = turn_rows(text)
    assert list(rows) == [1]
    assert "0 ms" in rows[1]
    assert "▸" in rows[1]
    assert "COST" not in text  # nothing was priced


def test_a_session_without_streaming_has_no_first_token_column(
    print_timeline: PrintTimeline,
) -> None:
    session = session_of(turn_spans(1, 0, 500), turn_spans(2, 3, 800))

    text = render(print_timeline, session, 100)

    assert "1ST TOKEN" not in text
    assert "▸" not in "".join(turn_rows(text).values())


# ------------------------------------------------------------------------------------ colour


def test_a_terminal_gets_colours(print_timeline: PrintTimeline) -> None:
    terminal = Terminal()

    print_timeline(golden_session(), terminal, 100)

    assert colour_codes(terminal.getvalue())


def test_no_color_leaves_colours_out_on_a_terminal(
    print_timeline: PrintTimeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    terminal = Terminal()

    print_timeline(golden_session(), terminal, 100)

    assert "▸" in terminal.getvalue()
    assert colour_codes(terminal.getvalue()) == set()


def test_output_that_is_not_a_terminal_is_plain_text(print_timeline: PrintTimeline) -> None:
    text = render(print_timeline, golden_session(), 100)

    assert "\x1b" not in text


# ------------------------------------------------------------------------------------ command


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_show_prints_the_timeline_between_the_summary_and_the_turns(
    capsys: pytest.CaptureFixture[str], scenario_store: Path
) -> None:
    pytest.importorskip("rich")

    code, out, err = run(capsys, "sessions", "show", "s-weather", "--store", str(scenario_store))

    assert (code, err) == (0, "")
    lines = out.splitlines()
    legend = next(i for i, line in enumerate(lines) if line.startswith("Timeline  "))
    assert lines[legend - 1] == ""
    assert lines[legend - 2].startswith("Cost      ")
    assert lines[legend + 1].split()[:2] == ["TURN", "START"]
    assert lines[legend + 2].split()[:2] == ["1", "+0:00"]
    assert "⚙ 1 tool" in lines[legend + 2]
    assert lines[legend + 3].split()[:2] == ["2", "+0:01"]
    assert lines[legend + 4] == ""
    assert lines[legend + 5].startswith("-- Turn 1 |")
    assert all(len(line) <= 120 for line in lines)


def test_show_through_a_pipe_writes_no_escape_codes(scenario_store: Path) -> None:
    pytest.importorskip("rich")
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}

    result = subprocess.run(
        [sys.executable, "-m", "convotel.cli", "sessions", "show", "s-broken"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env={**env, "CONVOTEL_STORE": str(scenario_store), "PYTHONIOENCODING": "utf-8"},
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "Timeline  " in result.stdout
    assert "✗ 1 error" in result.stdout
    assert "\x1b" not in result.stdout


def test_without_rich_show_prints_the_rest_and_says_how_to_get_the_timeline(
    capsys: pytest.CaptureFixture[str], scenario_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [name for name in sys.modules if name == "rich" or name.startswith("rich.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "rich", None)
    monkeypatch.delitem(sys.modules, "convotel.cli.timeline", raising=False)

    code, out, err = run(capsys, "sessions", "show", "s-weather", "--store", str(scenario_store))

    assert (code, err) == (0, "")
    assert "Timeline  needs rich: pip install 'convotel[cli]'" in out.splitlines()
    assert out.startswith("Session   s-weather\n")
    assert "    tool    get_weather" in out
    assert out.count("-- Turn") == 2


# ------------------------------------------------------------------------------------ the turn


def test_time_to_first_token_runs_from_the_turn_start_to_the_earliest_first_token() -> None:
    first, second = turn_spans(1, 0, 3000, first_token_ms=800)
    later_stream = SpanRecord(
        first.trace_id,
        "00000000000000ff",
        first.span_id,
        "ChatCompletion",
        first.start_ns + 100 * MS,
        first.end_ns,
        attributes={**second.attributes, TIME_TO_FIRST_TOKEN_MS: 300.5},
    )
    session = session_of([first, second, later_stream])

    (turn,) = session.turns
    assert turn.time_to_first_token_ns == 400_500_000  # 100 ms + 300.5 ms, before 10 + 800
    assert session_of(turn_spans(2, 0, 500)).turns[0].time_to_first_token_ns is None


def test_show_json_has_each_turns_time_to_first_token() -> None:
    session = session_of(turn_spans(1, 0, 900, first_token_ms=250), turn_spans(2, 5, 500))

    turns: list[dict[str, Any]] = session_as_json(session, with_turns=True)["turns"]

    assert [turn["time_to_first_token_ms"] for turn in turns] == [260.0, None]
    json.dumps(turns)
