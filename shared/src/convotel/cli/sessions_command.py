"""``convotel sessions [show ID]``: its options and what it prints from the span store."""

from __future__ import annotations

import argparse
import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any, TextIO

from convotel.cli.session_json import session_as_json
from convotel.cli.session_text import (
    format_session_summary,
    format_session_turns,
    format_sessions_table,
)
from convotel.cli.text_table import terminal_width
from convotel.sessions import Session
from convotel.store import STORE_ENV_VAR, SpanStore, StoreError

__all__ = [
    "CLI_EXTRA",
    "DEFAULT_LIMIT",
    "add_session_filters",
    "add_sessions_command",
    "add_shared_options",
    "parse_time",
    "post_filters",
    "print_session",
    "run_sessions",
]

DEFAULT_LIMIT = 50
#: What installs the timeline of ``sessions show`` (rich).
CLI_EXTRA = "convotel[cli]"
_RELATIVE_TIME = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


# ------------------------------------------------------------------------------------ options


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


def add_sessions_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``sessions`` (and its ``show``) to ``commands``, the result of
    ``ArgumentParser.add_subparsers()``."""
    sessions = commands.add_parser(
        "sessions",
        help="list the sessions in the span store (or `sessions show ID`)",
        description="List sessions from the span store, most recently active first.",
    )
    _add_shared_options(sessions, inherited=False)
    add_session_filters(sessions)
    actions = sessions.add_subparsers(dest="sessions_command", metavar="{show}")
    show = actions.add_parser(
        "show",
        help="print one session turn by turn",
        description="Print one session turn by turn (an unambiguous id prefix is enough).",
    )
    show.add_argument("session_id", metavar="ID")
    _add_shared_options(show, inherited=True)


def add_shared_options(parser: argparse.ArgumentParser, *, inherited: bool) -> None:
    """``--store`` and ``--json`` (in a sub-command, ``inherited`` keeps the parent's values)."""
    _add_shared_options(parser, inherited=inherited)


def add_session_filters(sessions: argparse.ArgumentParser, what: str = "sessions") -> None:
    """The filters of ``convotel sessions`` (``convotel users`` has the same): ``--user``,
    ``--since``, ``--until``, ``--errors-only``, ``--source`` and ``--limit`` (of ``what``)."""
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
        "--source",
        metavar="SOURCE",
        help="only sessions whose id came from SOURCE (context, openai.conversation, "
        "openai.previous_response, openai.response, mistral.conversation)",
    )
    sessions.add_argument(
        "--feedback",
        metavar="NAME[=LABEL]",
        help="only sessions with feedback NAME (given with convotel.record_feedback), or with "
        "that LABEL",
    )
    sessions.add_argument(
        "--limit",
        metavar="N",
        type=_positive_int,
        default=DEFAULT_LIMIT,
        help=f"show at most N {what} (default {DEFAULT_LIMIT})",
    )


# ------------------------------------------------------------------------------------ running


def post_filters(sessions: list[Session], args: argparse.Namespace) -> list[Session]:
    """``sessions`` kept by the filters the store cannot apply: ``--source``, ``--feedback``."""
    if args.source:
        sessions = [s for s in sessions if s.source == args.source]
    if args.feedback:
        name, _, label = args.feedback.partition("=")
        sessions = [
            s
            for s in sessions
            if any(f.name == name and (not label or f.label == label) for f in s.feedback)
        ]
    return sessions


def print_listing(
    what: str,
    as_json: list[dict[str, Any]] | None,
    table: str | None,
    count: int,
    args: argparse.Namespace,
    store: SpanStore,
    stdout: TextIO,
) -> None:
    """Print a listing of ``what`` (``sessions``, ``users``): its JSON, else its table and a
    count line, else why nothing is listed."""
    if as_json is not None:
        print(json.dumps(as_json, indent=2), file=stdout)
    elif table is not None:
        print(table, file=stdout)
        more = " (--limit to see more)" if count == args.limit else ""
        print(f"\n{count} {what}{more} from {store.path}", file=stdout)
    else:
        chosen = (args.user, args.since, args.until, args.errors_only, args.source)
        hint = " matching these filters" if any((*chosen, args.feedback)) else ""
        print(f"No {what}{hint} in {store.path}.", file=stdout)


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


def print_session(session: Session, stdout: TextIO) -> None:
    """``sessions show``: the session's summary, its timeline (drawn by rich, the ``cli`` extra;
    without it, a line saying so) and every turn in full."""
    width = terminal_width()
    print(format_session_summary(session), file=stdout)
    print(file=stdout)
    try:
        from convotel.cli.timeline import print_timeline
    except ModuleNotFoundError as missing:
        if (missing.name or "").partition(".")[0] != "rich":
            raise
        print(f"Timeline  needs rich: pip install {CLI_EXTRA!r}", file=stdout)
    else:
        print_timeline(session, stdout, width)
    print(format_session_turns(session, width), file=stdout)


def run_sessions(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    """Print the sessions ``args`` ask for (or one with ``show``); returns the exit status."""
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
                    print_session(found, stdout)
                return 0
            sessions = store.sessions(
                user_id=args.user,
                since=args.since,
                until=args.until,
                errors_only=args.errors_only,
                limit=None if args.source or args.feedback else args.limit,
            )
            if args.source or args.feedback:
                sessions = post_filters(sessions, args)[: args.limit]
            print_listing(
                "sessions",
                [session_as_json(s) for s in sessions] if args.json else None,
                format_sessions_table(sessions) if sessions and not args.json else None,
                len(sessions),
                args,
                store,
                stdout,
            )
            return 0
    except StoreError as error:
        print(f"convotel: {error}", file=stderr)
        return 1
