"""The closing lines of ``convotel demo``: this run's sessions, and the feedback its users gave,
read back from where the spans went (the SQLite store, or the in-memory copy kept when they go
over OTLP)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TextIO

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from convotel.cli.session_text import format_feedback, format_sessions_table
from convotel.demo.conversations import Outcome
from convotel.demo.telemetry import Telemetry
from convotel.feedback import PHOENIX_ENDPOINT_ENV
from convotel.sessions import Session, build_sessions
from convotel.store import SpanStore

__all__ = ["collected_sessions", "print_summary", "run_sessions", "stored_sessions"]


def stored_sessions(
    store_path: os.PathLike[str] | str, session_ids: Sequence[str]
) -> list[Session]:
    with SpanStore(store_path) as store:
        found = [store.session(session_id) for session_id in session_ids]
    return _by_recency([session for session in found if session is not None])


def collected_sessions(
    collector: InMemorySpanExporter, session_ids: Sequence[str]
) -> list[Session]:
    wanted = set(session_ids)
    found = build_sessions(collector.get_finished_spans())
    return _by_recency([session for session in found if session.session_id in wanted])


def run_sessions(telemetry: Telemetry, session_ids: Sequence[str]) -> list[Session]:
    """The sessions ``session_ids`` as recorded so far, most recent first."""
    if telemetry.store is not None:
        return stored_sessions(telemetry.store.path, session_ids)
    assert telemetry.collector is not None
    return collected_sessions(telemetry.collector, session_ids)


def _by_recency(sessions: list[Session]) -> list[Session]:
    return sorted(sessions, key=lambda session: (-session.last_time_ns, session.session_id))


def _phoenix_hint(otlp_url: str, project: str) -> str:
    base = otlp_url.split("/v1/traces")[0].rstrip("/")
    return (
        f"Open {base}/projects in a browser, pick the project {project!r} "
        "and its Sessions tab to read each conversation (spans show up there within a second)."
    )


def print_summary(telemetry: Telemetry, outcome: Outcome, out: TextIO) -> None:
    """The sessions table of this run, read back from where the spans went."""
    sessions = run_sessions(telemetry, outcome.session_ids)
    print("", file=out)
    print(format_sessions_table(sessions), file=out)
    print("", file=out)
    users = {session.user_id for session in sessions}
    print(f"{len(sessions)} sessions of {len(users)} users, {outcome.turns} turns.", file=out)
    if telemetry.store is not None:
        store_option = f" --store {telemetry.store.path}"
        example = sessions[0].session_id if sessions else "ID"
        print(f"List them again:  convotel sessions{store_option}", file=out)
        print(f"Read one:         convotel sessions{store_option} show {example}", file=out)
    if telemetry.otlp is not None:
        print(_phoenix_hint(telemetry.otlp.endpoint, telemetry.otlp.project), file=out)
    _print_feedback(sessions, telemetry, out)


def _print_feedback(sessions: Sequence[Session], telemetry: Telemetry, out: TextIO) -> None:
    """The feedback the users gave, one line each, and where else to see it."""
    lines = [
        f"  {session.session_id:<22} {format_feedback(given, session)}"
        for session in sorted(sessions, key=lambda session: session.session_id)
        for given in session.feedback
    ]
    if not lines:
        return
    print("\nFeedback the users gave (convotel.record_feedback):", file=out)
    print("\n".join(lines), file=out)
    if telemetry.store is not None:
        print(
            f"The thumbs-down:  convotel sessions --store {telemetry.store.path} "
            "--feedback thumbs=down",
            file=out,
        )
    endpoint = os.environ.get(PHOENIX_ENDPOINT_ENV)
    if endpoint:
        print(f"Phoenix at {endpoint} has it too, as session and trace annotations.", file=out)
    elif telemetry.otlp is not None:
        print(
            f"Set {PHOENIX_ENDPOINT_ENV} to Phoenix's base URL to send it there as annotations.",
            file=out,
        )
