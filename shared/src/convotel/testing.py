"""pytest plugin: prove in your own tests that every turn lands in the right session.

Registered through the ``pytest11`` entry point and inert unless a test asks for its fixture::

    def test_turns_stay_in_their_session(convotel_spans):
        with using_session("s-1"), using_user("u-1"):
            client.chat.completions.create(...)      # replayed from a cassette
        convotel_spans.assert_every_span_in_a_session()
        session = convotel_spans.assert_session("s-1", user="u-1", turns=1, llm_calls=1)

``convotel_spans`` installs an in-memory exporter on a fresh ``TracerProvider``, instruments every
installed convotel instrumentor (``opentelemetry_instrumentor`` entry points under ``convotel.``)
against it for the test, and uninstruments them afterwards. Override the
``convotel_instrumentors`` fixture to choose instrumentors, ``convotel_instrument_options`` to
pass extra keyword arguments (e.g. ``config=TraceConfig(...)``) to ``instrument()``, or
``convotel_span_processors`` to run processors before the exporter as your service's provider does
(``[SessionSpanProcessor()]`` for a web endpoint whose HTTP server span is the root).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

# Loaded by every pytest run through the pytest11 entry point: the OpenTelemetry SDK and the read
# model are imported only when a test asks for the fixture, so the plugin costs nothing otherwise.
if TYPE_CHECKING:
    from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
        BaseInstrumentor,
    )
    from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from convotel.sessions import Session, SessionGrouping, SpanRecord, TokenCounts, Turn

__all__ = [
    "CapturedSpans",
    "SkippedInstrumentor",
    "convotel_instrument_options",
    "convotel_instrumentors",
    "convotel_span_processors",
    "convotel_spans",
    "discover_instrumentors",
]

ENTRY_POINT_GROUP = "opentelemetry_instrumentor"


@dataclass(frozen=True)
class SkippedInstrumentor:
    """An installed convotel instrumentor the fixture could not use, and why."""

    name: str
    reason: str


def discover_instrumentors() -> tuple[list[BaseInstrumentor], list[SkippedInstrumentor]]:
    """Every installed convotel instrumentor (entry points whose module is under ``convotel.``).

    One whose module cannot be imported, or whose framework is not installed in a supported
    version, is returned as skipped with the reason.
    """
    from importlib.metadata import entry_points

    from opentelemetry.instrumentation.dependencies import get_dependency_conflicts
    from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
        BaseInstrumentor,
    )

    found: list[BaseInstrumentor] = []
    skipped: list[SkippedInstrumentor] = []
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        if not entry_point.value.startswith("convotel."):
            continue
        try:
            instrumentor_class = entry_point.load()
            instrumentor = instrumentor_class()
        except Exception as exc:  # noqa: BLE001 - a broken optional package must not break tests
            skipped.append(SkippedInstrumentor(entry_point.value, f"cannot load: {exc!r}"))
            continue
        if not isinstance(instrumentor, BaseInstrumentor):
            skipped.append(SkippedInstrumentor(entry_point.value, "not a BaseInstrumentor"))
            continue
        if any(instrumentor is known for known in found):
            continue  # the same distribution found twice on sys.path, or a shared singleton
        conflict = get_dependency_conflicts(instrumentor.instrumentation_dependencies())
        if conflict is not None:
            skipped.append(SkippedInstrumentor(entry_point.value, str(conflict)))
            continue
        found.append(instrumentor)
    return found, skipped


class CapturedSpans:
    """The spans finished during one test, and the sessions they form."""

    def __init__(
        self,
        exporter: InMemorySpanExporter,
        tracer_provider: TracerProvider,
        instrumentors: Sequence[BaseInstrumentor] = (),
        skipped: Sequence[SkippedInstrumentor] = (),
    ) -> None:
        self.exporter = exporter
        self.tracer_provider = tracer_provider
        self.instrumentors = tuple(instrumentors)
        self.skipped = tuple(skipped)

    def readable_spans(self) -> tuple[ReadableSpan, ...]:
        """The finished SDK spans, in the order they ended."""
        return tuple(self.exporter.get_finished_spans())

    def spans(self) -> list[SpanRecord]:
        from convotel.sessions import SpanRecord

        return [SpanRecord.from_readable_span(span) for span in self.readable_spans()]

    def grouping(self) -> SessionGrouping:
        from convotel.sessions import group_by_session

        return group_by_session(self.readable_spans())

    def sessions(self) -> list[Session]:
        """Sessions in order of first activity (the read model ``convotel sessions`` uses)."""
        return list(self.grouping().sessions)

    def clear(self) -> None:
        self.exporter.clear()

    def session(self, session_id: str) -> Session:
        """The session with this id; fails the test listing the sessions there are."""
        grouping = self.grouping()
        session = grouping.get(session_id)
        if session is None:
            pytest.fail(
                f"no session {session_id!r} among the finished spans.\n"
                + _describe_grouping(grouping),
                pytrace=False,
            )
        return session

    def assert_every_span_in_a_session(self, *, kinds: Sequence[str] | None = None) -> None:
        """Fail naming each span (of the given OpenInference kinds, default all) without
        ``session.id``."""
        wanted = {kind.upper() for kind in kinds} if kinds is not None else None
        spans = self.spans()
        missing = [
            span
            for span in spans
            if span.session_id is None and (wanted is None or span.span_kind in wanted)
        ]
        if not spans:
            pytest.fail("no spans finished: is the instrumentor installed and called?")
        if missing:
            lines = "\n".join(f"  - {span.describe()}" for span in missing)
            pytest.fail(
                f"{len(missing)} of {len(spans)} spans lack a session.id:\n{lines}",
                pytrace=False,
            )

    def assert_sessions_isolated(self) -> None:
        """Fail when a turn leaked into another session: a trace whose spans carry different
        ``session.id`` values, or a session whose turns carry different ``user.id`` values."""
        problems: list[str] = []
        grouping = self.grouping()
        for turn in (
            *(turn for session in grouping.sessions for turn in session.turns),
            *grouping.turns_without_session,
        ):
            for span in turn.stray_spans:
                problems.append(
                    f"{turn.describe()} belongs to session {turn.session_id!r}, but its "
                    f"{span.describe()} carries session.id {span.session_id!r}"
                )
        for session in grouping.sessions:
            if len(session.user_ids) > 1:
                for turn in session.turns:
                    strangers = [user for user in turn.user_ids if user != session.user_id]
                    if strangers:
                        problems.append(
                            f"{turn.describe()} of session {session.session_id!r} (user "
                            f"{session.user_id!r}) carries user.id {', '.join(strangers)}: "
                            "it leaked from another user's conversation"
                        )
        if problems:
            pytest.fail(
                "turns leaked between sessions:\n"
                + "\n".join(f"  - {problem}" for problem in problems),
                pytrace=False,
            )

    def assert_session(
        self,
        session_id: str,
        *,
        user: str | None = None,
        turns: int | None = None,
        llm_calls: int | None = None,
        tokens: TokenCounts | tuple[int, int, int] | Mapping[str, int] | None = None,
        errors: int | None = None,
        inputs: Sequence[str] | None = None,
        max_cost: float | None = None,
    ) -> Session:
        """Check the named facts about one session; the failure lists every mismatch and the
        session's turns. Returns the session for further checks.

        ``max_cost`` is a ceiling in USD on the session's cost (``llm.cost.total`` summed over its
        model calls, see :mod:`convotel.cost`); it fails when a model call has no price (an
        unknown model, ``record_cost`` off, or no ``genai-prices``): a ceiling on part of the
        calls would pass for the wrong reason."""
        session = self.session(session_id)
        actual_tokens = session.tokens
        checks: list[tuple[str, object, object]] = [
            ("user", user, session.user_id),
            ("turns", turns, len(session.turns)),
            ("llm_calls", llm_calls, session.llm_calls),
            ("tokens", _token_counts(tokens), actual_tokens),
            ("errors", errors, session.errors),
            ("inputs", list(inputs) if inputs is not None else None, _inputs(session.turns)),
        ]
        mismatches = [
            f"  {name}: expected {expected!r}, got {actual!r}"
            for name, expected, actual in checks
            if expected is not None and expected != actual
        ]
        if max_cost is not None:
            mismatches += _cost_mismatches(session, max_cost)
        if mismatches:
            pytest.fail(
                f"session {session_id!r} does not match:\n"
                + "\n".join(mismatches)
                + "\n"
                + _describe_session(session),
                pytrace=False,
            )
        return session


def _cost_mismatches(session: Session, max_cost: float) -> list[str]:
    unpriced = session.unpriced_llm_calls
    if unpriced or session.cost_usd is None:
        return [
            f"  max_cost: expected at most ${max_cost}, but {unpriced} of its "
            f"{session.llm_calls} model calls recorded no cost (unknown model or provider, "
            "record_cost off, or genai-prices not installed)"
        ]
    if session.cost_usd > max_cost:
        return [f"  max_cost: expected at most ${max_cost}, got ${session.cost_usd}"]
    return []


def _token_counts(
    tokens: TokenCounts | tuple[int, int, int] | Mapping[str, int] | None,
) -> TokenCounts | None:
    from convotel.sessions import TokenCounts

    if tokens is None or isinstance(tokens, TokenCounts):
        return tokens
    if isinstance(tokens, Mapping):
        return TokenCounts(**tokens)
    return TokenCounts(*tokens)


def _inputs(turns: Sequence[Turn]) -> list[str | None]:
    return [turn.input for turn in turns]


def _describe_session(session: Session) -> str:
    lines = [f"session {session.session_id!r} (user {session.user_id!r}) has these turns:"]
    for number, turn in enumerate(session.turns, start=1):
        lines.append(
            f"  {number}. {turn.describe()} user {turn.user_id!r}, {turn.llm_calls} LLM calls, "
            f"tokens {turn.tokens.prompt}/{turn.tokens.completion}/{turn.tokens.total}, "
            f"{len(turn.errors)} errors"
            + (f", cost ${turn.cost_usd}" if turn.cost_usd is not None else "")
        )
    return "\n".join(lines)


def _describe_grouping(grouping: SessionGrouping) -> str:
    if not grouping.sessions and not grouping.turns_without_session:
        return "No spans finished: is the instrumentor installed and called?"
    lines = [_describe_session(session) for session in grouping.sessions]
    if grouping.turns_without_session:
        lines.append(f"{len(grouping.turns_without_session)} turns carry no session.id:")
        lines += [f"  - {turn.describe()}" for turn in grouping.turns_without_session]
    return "\n".join(lines)


@pytest.fixture
def convotel_instrumentors() -> list[BaseInstrumentor]:
    """The instrumentors ``convotel_spans`` applies (default: every installed convotel one)."""
    return discover_instrumentors()[0]


@pytest.fixture
def convotel_instrument_options() -> dict[str, Any]:
    """Extra keyword arguments for each ``instrument()`` call (e.g. ``config=TraceConfig()``)."""
    return {}


@pytest.fixture
def convotel_span_processors() -> list[SpanProcessor]:
    """Processors the ``convotel_spans`` provider runs before its exporter (default: none), e.g.
    ``[SessionSpanProcessor()]`` to test a web endpoint as your service's provider traces it."""
    return []


@pytest.fixture
def convotel_spans(
    convotel_instrumentors: list[BaseInstrumentor],
    convotel_instrument_options: dict[str, Any],
    convotel_span_processors: list[SpanProcessor],
) -> Iterator[CapturedSpans]:
    """Spans of this test, captured in memory from every convotel instrumentor."""
    already = [
        type(instrumentor).__name__
        for instrumentor in convotel_instrumentors
        if instrumentor.is_instrumented_by_opentelemetry
    ]
    if already:
        pytest.fail(
            f"{', '.join(already)} already instrumented (by a conftest or a fixture?): "
            "convotel_spans instruments it against its own tracer provider; call "
            "uninstrument() first or drop the other instrumentation",
            pytrace=False,
        )
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    for processor in convotel_span_processors:
        provider.add_span_processor(processor)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumented: list[BaseInstrumentor] = []
    try:
        for instrumentor in convotel_instrumentors:
            instrumentor.instrument(
                tracer_provider=provider, skip_dep_check=True, **convotel_instrument_options
            )
            instrumented.append(instrumentor)
        _, skipped = discover_instrumentors()
        yield CapturedSpans(exporter, provider, instrumented, skipped)
    finally:
        for instrumentor in reversed(instrumented):
            instrumentor.uninstrument()
        provider.shutdown()
