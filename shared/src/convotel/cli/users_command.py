"""``convotel users [show USER]``: one row per user from the span store, or one user's sessions.

The filters are those of ``convotel sessions`` and pick sessions (``--errors-only``: sessions with
an error; ``--since``: sessions active since...); each user row sums the sessions picked. Sessions
without a ``user.id`` belong to no user and are left out.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from typing import Any, TextIO

from convotel.cli.cost_text import format_cost
from convotel.cli.session_json import session_as_json
from convotel.cli.session_text import format_sessions_table
from convotel.cli.sessions_command import (
    add_session_filters,
    add_shared_options,
    post_filters,
    print_listing,
)
from convotel.cli.text_table import Column, format_table, terminal_width
from convotel.sessions import Session
from convotel.store import SpanStore, StoreError
from convotel.users import UserSummary, summarize_users

__all__ = ["add_users_command", "format_users_table", "run_users", "user_as_json"]


def add_users_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``users`` (and its ``show``) to ``commands``."""
    users = commands.add_parser(
        "users",
        help="list the users in the span store (or `users show USER`)",
        description="List users from the span store, most recently seen first: their sessions, "
        "turns, tokens, cost, errors, first and last seen. The filters pick sessions.",
    )
    add_shared_options(users, inherited=False)
    add_session_filters(users, "users")
    actions = users.add_subparsers(dest="users_command", metavar="{show}")
    show = actions.add_parser(
        "show",
        help="list one user's sessions",
        description="One user's totals and sessions, most recently active first.",
    )
    show.add_argument("user_id", metavar="USER")
    add_shared_options(show, inherited=True)


# ------------------------------------------------------------------------------------ output


def _iso_time(nanoseconds: int) -> str:
    moment = datetime.fromtimestamp(nanoseconds // 1000 / 1e6, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _local_time(nanoseconds: int) -> str:
    return (
        f"{datetime.fromtimestamp(nanoseconds / 1e9, tz=timezone.utc).astimezone():%m-%d %H:%M:%S}"
    )


def user_as_json(user: UserSummary, *, with_sessions: bool = False) -> dict[str, Any]:
    """A JSON-ready summary of a user (with each session's summary when ``with_sessions``)."""
    tokens = user.tokens
    summary: dict[str, Any] = {
        "user_id": user.user_id,
        "session_count": len(user.sessions),
        "turn_count": user.turns,
        "llm_calls": user.llm_calls,
        "tokens": {"prompt": tokens.prompt, "completion": tokens.completion, "total": tokens.total},
        "cost_usd": user.cost_usd,
        "unpriced_llm_calls": user.unpriced_llm_calls,
        "errors": user.errors,
        "first_seen": _iso_time(user.first_seen_ns),
        "last_seen": _iso_time(user.last_seen_ns),
    }
    if with_sessions:
        summary["sessions"] = [session_as_json(session) for session in user.sessions]
    return summary


def format_users_table(users: list[UserSummary], width: int | None = None) -> str:
    """The ``convotel users`` table fitted to ``width`` (default: the terminal's)."""
    columns = [
        Column("USER", [u.user_id for u in users], shrink_to=12),
        Column("SESSIONS", [str(len(u.sessions)) for u in users], right=True),
        Column("TURNS", [str(u.turns) for u in users], right=True),
        Column("TOK IN", [f"{u.tokens.prompt:,}" for u in users], right=True),
        Column("TOK OUT", [f"{u.tokens.completion:,}" for u in users], right=True),
        Column("COST", [format_cost(u.cost_usd, u.unpriced_llm_calls) for u in users], right=True),
        Column("ERRORS", [str(u.errors) for u in users], right=True),
        Column("FIRST SEEN", [_local_time(u.first_seen_ns) for u in users], drop_rank=1),
        Column("LAST SEEN", [_local_time(u.last_seen_ns) for u in users]),
    ]
    return format_table(columns, width or terminal_width())


# ------------------------------------------------------------------------------------ running


def _picked_sessions(store: SpanStore, args: argparse.Namespace, user: str | None) -> list[Session]:
    sessions = store.sessions(
        user_id=user, since=args.since, until=args.until, errors_only=args.errors_only
    )
    return post_filters(sessions, args)


def _show(store: SpanStore, args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    found = summarize_users(_picked_sessions(store, args, args.user_id))
    if not found:
        print(
            f"convotel: no sessions of user {args.user_id!r} in {store.path}"
            "; list the users with `convotel users`",
            file=stderr,
        )
        return 1
    user = found[0]
    if args.json:
        print(json.dumps(user_as_json(user, with_sessions=True), indent=2), file=stdout)
        return 0
    tokens = user.tokens
    lines = [
        f"User      {user.user_id}",
        f"Sessions  {len(user.sessions)}  |  turns {user.turns}  |  LLM calls {user.llm_calls}"
        f"  |  errors {user.errors}",
        f"Tokens    {tokens.prompt:,} in / {tokens.completion:,} out ({tokens.total:,} total)",
        f"Cost      {format_cost(user.cost_usd, user.unpriced_llm_calls)}",
        f"Seen      {_local_time(user.first_seen_ns)} -> {_local_time(user.last_seen_ns)}",
        "",
        format_sessions_table(list(user.sessions)),
    ]
    print("\n".join(lines), file=stdout)
    return 0


def run_users(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    """Print the users ``args`` ask for (or one with ``show``); returns the exit status."""
    try:
        with SpanStore(args.store) as store:
            if args.users_command == "show":
                return _show(store, args, stdout, stderr)
            users = summarize_users(_picked_sessions(store, args, args.user))[: args.limit]
            print_listing(
                "users",
                [user_as_json(u) for u in users] if args.json else None,
                format_users_table(users) if users and not args.json else None,
                len(users),
                args,
                store,
                stdout,
            )
            return 0
    except StoreError as error:
        print(f"convotel: {error}", file=stderr)
        return 1
