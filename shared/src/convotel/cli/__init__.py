"""The ``convotel`` command: ``convotel sessions`` (list / show from the span store, see
:mod:`convotel.cli.sessions_command`) and ``convotel demo`` (implemented in ``convotel.demo.app``
of the ``convotel-demo`` distribution, imported only when asked for: see
:mod:`convotel.cli.demo_command`). ``convotel users``: :mod:`convotel.cli.users_command`."""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Sequence

from convotel.cli.demo_command import (
    DEMO_DISTRIBUTION,
    DEMO_MODULE,
    DemoCommand,
    add_demo_command,
    load_demo,
)
from convotel.cli.export_command import add_export_command, run_export
from convotel.cli.session_json import session_as_json
from convotel.cli.session_text import format_session, format_sessions_table
from convotel.cli.sessions_command import (
    DEFAULT_LIMIT,
    add_sessions_command,
    parse_time,
    run_sessions,
)
from convotel.cli.text_table import Column, format_duration, terminal_width, truncate
from convotel.cli.users_command import add_users_command, run_users

__all__ = [
    "DEFAULT_LIMIT",
    "DEMO_DISTRIBUTION",
    "DEMO_MODULE",
    "Column",
    "DemoCommand",
    "build_parser",
    "format_duration",
    "format_session",
    "format_sessions_table",
    "load_demo",
    "main",
    "parse_time",
    "session_as_json",
    "terminal_width",
    "truncate",
]


def build_parser(demo: DemoCommand | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convotel",
        description="Look at the conversations (sessions) your LLM application recorded.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_sessions_command(commands)
    add_users_command(commands)
    add_export_command(commands)
    add_demo_command(commands, demo)
    return parser


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
            return run_sessions(args, sys.stdout, sys.stderr)
        if args.command == "users":
            return run_users(args, sys.stdout, sys.stderr)
        if args.command == "export":
            return run_export(args, sys.stdout, sys.stderr)
        if args.command == "demo" and demo is not None:
            return int(demo.run(args))
    except BrokenPipeError:  # `convotel sessions | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    parser.print_help(sys.stderr)
    return 2
