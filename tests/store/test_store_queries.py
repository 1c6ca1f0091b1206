"""SpanStore queries: the indexed pre-selection never changes what the read model says."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from opentelemetry.sdk.trace.export import SpanExportResult
from store_spans import CHAIN, MS, T0_NS, SpanMaker, ids

from convotel.sessions import build_sessions
from convotel.store import SpanStore, SQLiteSpanExporter


def at(ms: float) -> datetime:
    return datetime.fromtimestamp((T0_NS + ms * MS) / 1e9, tz=timezone.utc)


def write(path: Path, spans: SpanMaker) -> None:
    exporter = SQLiteSpanExporter(path)
    assert exporter.export(spans.finished()) is SpanExportResult.SUCCESS
    exporter.shutdown()


HOUR_MS = 3_600_000


def test_errors_only_and_since_look_at_the_whole_session(
    store_path: Path, spans: SpanMaker
) -> None:
    # The error happened three hours before the session's latest turn.
    spans.turn(0, session="s-err", user="u", question="q", answer=None, error=OSError("x"))
    spans.turn(3 * HOUR_MS, session="s-err", user="u", question="later", answer="fine")
    spans.turn(3 * HOUR_MS, session="s-ok", user="u", question="q", answer="fine")
    write(store_path, spans)

    with SpanStore(store_path) as store:
        found = store.sessions(errors_only=True, since=at(3 * HOUR_MS - 60_000))

    assert [s.session_id for s in found] == ["s-err"]
    assert found[0].errors == 1
    assert len(found[0].turns) == 2


def test_until_keeps_sessions_that_started_before_it(store_path: Path, spans: SpanMaker) -> None:
    spans.turn(0, session="early", user="u", question="q", answer="a")
    spans.turn(HOUR_MS, session="early", user="u", question="q", answer="a")
    spans.turn(HOUR_MS, session="late", user="u", question="q", answer="a")
    write(store_path, spans)

    with SpanStore(store_path) as store:
        found = store.sessions(until=at(HOUR_MS / 2))

    assert [s.session_id for s in found] == ["early"]


def test_user_filter_matches_the_sessions_first_user_only(
    store_path: Path, spans: SpanMaker
) -> None:
    spans.turn(0, session="s-1", user="alice", question="q", answer="a")
    spans.turn(100, session="s-1", user="mallory", question="q", answer="a")  # leaked turn
    spans.turn(200, session="s-2", user="mallory", question="q", answer="a")
    write(store_path, spans)

    with SpanStore(store_path) as store:
        assert [s.session_id for s in store.sessions(user_id="mallory")] == ["s-2"]
        assert [s.session_id for s in store.sessions(user_id="alice")] == ["s-1"]


def test_a_session_id_only_on_a_child_span_still_finds_the_whole_trace(
    store_path: Path, spans: SpanMaker
) -> None:
    root = spans.start("agent", CHAIN, 0, {"input.value": "plan my trip"})
    spans.llm(5, 10, session="s-child", user="u", parent=root, answer="done", prompt=4)
    spans.end(root, 30)
    write(store_path, spans)

    with SpanStore(store_path) as store:
        session = store.session("s-child")

    assert session is not None
    assert session.first_input == "plan my trip"
    assert len(session.turns[0].spans) == 2
    assert session.total_latency_ns == 30 * MS


def test_a_trace_is_only_listed_under_the_session_it_belongs_to(
    store_path: Path, spans: SpanMaker
) -> None:
    root = spans.start("turn", CHAIN, 0, {**ids("s-owner", "u"), "input.value": "mine"})
    spans.llm(5, 5, session="s-stray", user="u", parent=root)  # a leaked child
    spans.end(root, 20)
    spans.turn(100, session="s-stray", user="u", question="own turn", answer="ok")
    write(store_path, spans)

    with SpanStore(store_path) as store:
        stray = store.session("s-stray")
        owner = store.session("s-owner")
        listed = store.sessions()

    assert stray is not None
    assert owner is not None
    assert [turn.input for turn in stray.turns] == ["own turn"]
    assert [turn.input for turn in owner.turns] == ["mine"]
    assert [s.session_id for s in listed] == ["s-stray", "s-owner"]


def test_listing_many_sessions_pages_through_them_in_recency_order(
    store_path: Path, spans: SpanMaker
) -> None:
    for number in range(250):
        spans.turn(number * 1000, session=f"s-{number:03d}", user="u", question="q", answer="a")
    write(store_path, spans)

    with SpanStore(store_path) as store:
        everything = store.sessions()
        first_120 = store.sessions(limit=120)

    expected = [f"s-{number:03d}" for number in reversed(range(250))]
    assert [s.session_id for s in everything] == expected
    assert [s.session_id for s in first_120] == expected[:120]
    assert everything == sorted(build_sessions(spans.finished()), key=lambda s: -s.last_time_ns)


def test_since_and_until_are_exact_at_the_edges(store_path: Path, spans: SpanMaker) -> None:
    spans.turn(0, session="s-1", user="u", question="q", answer="a", latency_ms=100)
    write(store_path, spans)

    with SpanStore(store_path) as store:
        assert store.sessions(since=at(100)) != []
        assert store.sessions(since=at(100) + timedelta(milliseconds=1)) == []
        assert store.sessions(until=at(0)) != []
        assert store.sessions(until=at(0) - timedelta(milliseconds=1)) == []
