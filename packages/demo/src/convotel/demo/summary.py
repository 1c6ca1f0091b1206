"""The closing lines of ``convotel demo``: this run's sessions read back from where the spans
went (the SQLite store, or the in-memory copy kept when they go over OTLP)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TextIO

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from convotel.cli.session_text import format_sessions_table
from convotel.demo.conversations import Outcome
from convotel.demo.telemetry import Telemetry
from convotel.sessions import Session, build_sessions
from convotel.store import SpanStore

__all__ = ["collected_sessions", "print_summary", "stored_sessions"]


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
    if telemetry.store is not None:
        sessions = stored_sessions(telemetry.store.path, outcome.session_ids)
    else:
        assert telemetry.collector is not None
        sessions = collected_sessions(telemetry.collector, outcome.session_ids)
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
