"""The ``convotel`` command: ``convotel sessions`` (list / show from the span store) and
``convotel demo`` (implemented in ``convotel.demo.app`` of the ``convotel-demo`` distribution,
imported only when asked for)."""

from __future__ import annotations

import argparse
import importlib
import io
import json
import os
import re
import shutil
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, TextIO

from convotel.sessions import Session, TokenCounts, Turn
from convotel.store import STORE_ENV_VAR, SpanStore, StoreError

__all__ = [
    "build_parser",
    "format_session",
    "format_sessions_table",
    "main",
    "parse_time",
    "session_as_json",
]

DEFAULT_LIMIT = 50
DEMO_MODULE = "convotel.demo.app"
#: The distribution that provides :data:`DEMO_MODULE` (the core does not ship the demo).
DEMO_DISTRIBUTION = "convotel-demo"
_MAX_FIELD_CHARS = 4000  # per text field in `sessions show`
_RELATIVE_TIME = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


# ---------------------------------------------------------------------------- text formatting


def terminal_width() -> int:
    """The terminal's width (``$COLUMNS`` wins; 160 when output is not a terminal)."""
    return max(40, shutil.get_terminal_size((160, 24)).columns)


def truncate(text: str | None, width: int) -> str:
    """One line of at most ``width`` characters (whitespace collapsed, ``…`` when cut)."""
    flat = " ".join((text or "").split())
    if len(flat) <= width:
        return flat
    return flat[: max(0, width - 1)] + "…"


def format_duration(nanoseconds: int) -> str:
    seconds = nanoseconds / 1e9
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _local_time(nanoseconds: int) -> datetime:
    return datetime.fromtimestamp(nanoseconds / 1e9, tz=timezone.utc).astimezone()


def _iso_time(nanoseconds: int) -> str:
    moment = datetime.fromtimestamp(nanoseconds // 1000 / 1e6, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Column:
    """A table column: ``shrink_to`` makes it truncatable, ``drop_rank`` droppable (1 first)."""

    header: str
    cells: Sequence[str]
    right: bool = False
    shrink_to: int | None = None
    drop_rank: int | None = None

    @property
    def natural(self) -> int:
        return max([len(self.header), *(len(cell) for cell in self.cells)])

    @property
    def least(self) -> int:
        return self.natural if self.shrink_to is None else min(self.natural, self.shrink_to)


def _fit(columns: Sequence[Column], width: int) -> tuple[list[Column], list[int]]:
    """Drop columns by rank until the rest fit ``width``, then share the room among the
    shrinkable ones (shortest first, never below 6 characters)."""
    kept = list(columns)
    droppable = sorted(
        (c for c in columns if c.drop_rank is not None), key=lambda c: c.drop_rank or 0
    )

    def least_width() -> int:
        return sum(column.least for column in kept) + 2 * (len(kept) - 1)

    while least_width() > width and droppable:
        kept.remove(droppable.pop(0))
    widths = [column.natural for column in kept]
    shrinkable = [i for i, column in enumerate(kept) if column.shrink_to is not None]
    budget = width - 2 * (len(kept) - 1)
    budget -= sum(w for i, w in enumerate(widths) if i not in shrinkable)
    for position, index in enumerate(sorted(shrinkable, key=lambda i: widths[i])):
        share = budget // (len(shrinkable) - position)
        widths[index] = min(widths[index], max(share, 6))
        budget -= widths[index]
    return kept, widths


def _table(columns: Sequence[Column], width: int) -> str:
    """Aligned columns fitted to ``width`` (see :func:`_fit`)."""
    kept, widths = _fit(columns, width)
    lines = []
    for row in range(-1, len(kept[0].cells) if kept else 0):
        cells = []
        for column, column_width in zip(kept, widths, strict=True):
            text = truncate(column.header if row < 0 else column.cells[row], column_width)
            cells.append(text.rjust(column_width) if column.right else text.ljust(column_width))
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def format_sessions_table(sessions: Sequence[Session], width: int | None = None) -> str:
    """The ``convotel sessions`` table fitted to ``width`` (default: the terminal's); narrow
    terminals lose the FIRST, LATENCY and LAST OUTPUT columns, in that order."""

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
    return _table(columns, width or terminal_width())


def _tokens_text(tokens: TokenCounts) -> str:
    return f"{tokens.prompt:,} in / {tokens.completion:,} out ({tokens.total:,} total)"


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
    """One session turn by turn, for ``convotel sessions show``."""
    width = width or terminal_width()
    first, last = _local_time(session.first_time_ns), _local_time(session.last_time_ns)
    last_text = f"{last:%H:%M:%S}" if last.date() == first.date() else f"{last:%Y-%m-%d %H:%M:%S}"
    users = ", ".join(session.user_ids) or "-"
    lines = [
        f"Session   {session.session_id}",
        f"User      {users}",
        f"Turns     {len(session.turns)}  |  LLM calls {session.llm_calls}  |  "
        f"errors {session.errors}",
        f"Tokens    {_tokens_text(session.tokens)}",
        f"Time      {first:%Y-%m-%d %H:%M:%S} -> {last_text}  |  "
        f"total latency {format_duration(session.total_latency_ns)}",
    ]
    for number, turn in enumerate(session.turns, start=1):
        lines.append("")
        lines += _turn_lines(number, turn, session.user_id, width)
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- JSON


def _tokens_json(tokens: TokenCounts) -> dict[str, int]:
    return {"prompt": tokens.prompt, "completion": tokens.completion, "total": tokens.total}


def _turn_as_json(turn: Turn) -> dict[str, Any]:
    return {
        "trace_id": turn.trace_id,
        "user_id": turn.user_id,
        "start_time": _iso_time(turn.start_ns),
        "end_time": _iso_time(turn.end_ns),
        "latency_ms": round(turn.latency_ns / 1e6, 3),
        "input": turn.input,
        "output": turn.output,
        "tool_calls": [
            {"name": call.name, "arguments": call.arguments, "id": call.id}
            for call in turn.tool_calls
        ],
        "errors": [{"span": error.span_name, "message": error.message} for error in turn.errors],
        "llm_calls": turn.llm_calls,
        "tokens": _tokens_json(turn.tokens),
        "client_disconnected": turn.client_disconnected,
    }


def session_as_json(session: Session, *, with_turns: bool = False) -> dict[str, Any]:
    """A JSON-ready summary of a session (with every turn when ``with_turns``)."""
    summary: dict[str, Any] = {
        "session_id": session.session_id,
        "user_id": session.user_id,
        "user_ids": list(session.user_ids),
        "turn_count": len(session.turns),
        "llm_calls": session.llm_calls,
        "tokens": _tokens_json(session.tokens),
        "errors": session.errors,
        "first_time": _iso_time(session.first_time_ns),
        "last_time": _iso_time(session.last_time_ns),
        "total_latency_ms": round(session.total_latency_ns / 1e6, 3),
        "first_input": session.first_input,
        "last_output": session.last_output,
    }
    if with_turns:
        summary["turns"] = [_turn_as_json(turn) for turn in session.turns]
    return summary


# ------------------------------------------------------------------------------------ parsing


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """An ISO-8601 time (naive = local time) or a span back from now: ``90s``, ``15m``, ``2h``,
    ``1d``, ``1w``."""
    now = now or datetime.now(timezone.utc)
    relative = _RELATIVE_TIME.fullmatch(text.strip().lower())
    if relative:
        amount, unit = float(relative.group(1)), relative.group(2)
        return now - timedelta(seconds=amount * _UNIT_SECONDS[unit])
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither an ISO time (2026-11-25T17:20) nor a span like 30m, 2h, 1d"
        ) from None
    return moment if moment.tzinfo is not None else moment.astimezone()


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


@dataclass(frozen=True)
class DemoCommand:
    """The two functions ``convotel.demo.app`` provides."""

    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def load_demo(stderr: TextIO) -> DemoCommand | None:
    """Import the demo lazily; print why and return None when it cannot be loaded."""
    try:
        module = importlib.import_module(DEMO_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name in ("convotel.demo", DEMO_MODULE):
            print(
                f"convotel demo: the demo is not installed here (no module {DEMO_MODULE}). "
                f"Install it with `pip install {DEMO_DISTRIBUTION}` "
                f"(`pip install '{DEMO_DISTRIBUTION}[serve]'` for --serve), "
                "or run it from a checkout of convotel with `nox -s demo`.",
                file=stderr,
            )
        else:
            print(
                f"convotel demo: the demo needs the package {exc.name!r}, which is missing. "
                f"Reinstall {DEMO_DISTRIBUTION} (it brings the demo's dependencies) "
                "or run it with `nox -s demo`.",
                file=stderr,
            )
        return None
    add_arguments, run = getattr(module, "add_arguments", None), getattr(module, "run", None)
    if not callable(add_arguments) or not callable(run):
        print(
            f"convotel demo: {DEMO_MODULE} lacks add_arguments(parser) or run(args).",
            file=stderr,
        )
        return None
    return DemoCommand(add_arguments, run)


def _add_shared_options(parser: argparse.ArgumentParser, *, inherited: bool) -> None:
    # In a sub-command the defaults are suppressed so `sessions --store X show ID` keeps X.
    default: Any = argparse.SUPPRESS if inherited else None
    parser.add_argument(
        "--store",
        metavar="PATH",
        default=default,
        help=f"span store file (default: ${STORE_ENV_VAR}, else .convotel/spans.sqlite3)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS if inherited else False,
        help="print JSON instead of text",
    )


def build_parser(demo: DemoCommand | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convotel",
        description="Look at the conversations (sessions) your LLM application recorded.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    sessions = commands.add_parser(
        "sessions",
        help="list the sessions in the span store (or `sessions show ID`)",
        description="List sessions from the span store, most recently active first.",
    )
    _add_shared_options(sessions, inherited=False)
    sessions.add_argument("--user", metavar="USER", help="only sessions of this user.id")
    sessions.add_argument(
        "--since",
        metavar="WHEN",
        type=parse_time,
        help="only sessions active at or after WHEN (ISO time, or 30m, 2h, 1d ago)",
    )
    sessions.add_argument(
        "--until",
        metavar="WHEN",
        type=parse_time,
        help="only sessions started at or before WHEN (ISO time, or 30m, 2h, 1d ago)",
    )
    sessions.add_argument(
        "--errors-only", action="store_true", help="only sessions with at least one error"
    )
    sessions.add_argument(
        "--limit",
        metavar="N",
        type=_positive_int,
        default=DEFAULT_LIMIT,
        help=f"show at most N sessions (default {DEFAULT_LIMIT})",
    )
    actions = sessions.add_subparsers(dest="sessions_command", metavar="{show}")
    show = actions.add_parser(
        "show",
        help="print one session turn by turn",
        description="Print one session turn by turn (an unambiguous id prefix is enough).",
    )
    show.add_argument("session_id", metavar="ID")
    _add_shared_options(show, inherited=True)

    demo_parser = commands.add_parser(
        "demo",
        help="run a small multi-user chatbot and record its sessions",
        add_help=demo is not None,
    )
    if demo is not None:
        demo.add_arguments(demo_parser)
    return parser


# ----------------------------------------------------------------------------------- commands


def _find_session(store: SpanStore, wanted: str) -> Session | str:
    """The session with id ``wanted`` (or the only one starting with it), else an explanation."""
    session = store.session(wanted)
    if session is not None:
        return session
    matches = [sid for sid in store.session_ids() if sid.startswith(wanted)]
    if len(matches) == 1:
        found = store.session(matches[0])
        if found is not None:
            return found
    if len(matches) > 1:
        listed = ", ".join(matches[:5]) + (", …" if len(matches) > 5 else "")
        return f"{wanted!r} matches {len(matches)} sessions ({listed}); give more of the id"
    return f"no session {wanted!r} in {store.path}; list them with `convotel sessions`"


def _run_sessions(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    try:
        with SpanStore(args.store) as store:
            if args.sessions_command == "show":
                found = _find_session(store, args.session_id)
                if isinstance(found, str):
                    print(f"convotel: {found}", file=stderr)
                    return 1
                if args.json:
                    print(
                        json.dumps(session_as_json(found, with_turns=True), indent=2), file=stdout
                    )
                else:
                    print(format_session(found), file=stdout)
                return 0
            sessions = store.sessions(
                user_id=args.user,
                since=args.since,
                until=args.until,
                errors_only=args.errors_only,
                limit=args.limit,
            )
            if args.json:
                print(json.dumps([session_as_json(s) for s in sessions], indent=2), file=stdout)
            elif sessions:
                print(format_sessions_table(sessions), file=stdout)
                more = " (--limit to see more)" if len(sessions) == args.limit else ""
                print(f"\n{len(sessions)} sessions{more} from {store.path}", file=stdout)
            else:
                filtered = any((args.user, args.since, args.until, args.errors_only))
                hint = " matching these filters" if filtered else ""
                print(f"No sessions{hint} in {store.path}.", file=stdout)
            return 0
    except StoreError as error:
        print(f"convotel: {error}", file=stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``convotel`` command; returns the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="replace")
    demo = None
    if arguments[:1] == ["demo"]:
        demo = load_demo(sys.stderr)
        if demo is None:
            return 2
    parser = build_parser(demo)
    args = parser.parse_args(arguments)
    try:
        if args.command == "sessions":
            return _run_sessions(args, sys.stdout, sys.stderr)
        if args.command == "demo" and demo is not None:
            return int(demo.run(args))
    except BrokenPipeError:  # `convotel sessions | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
