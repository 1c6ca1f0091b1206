"""A stream the garbage collector finds while a lock is held.

CPython runs finalizers in whichever thread triggers a collection, at whatever allocation
triggers it. A stream proxy left in a reference cycle (a cancelled request's traceback holds
its frame) ends its span from its finalizer, so that span's end could run inside code holding a
lock the end needs again, in the same thread:

* convotel's own locks (the turn writer's, the response chains'): re-entrant, the end is let in
  inline; with a plain lock the thread (a web server's event loop) would hang for good;
* anyone else's (``BatchSpanProcessor`` waking its worker, an exporter, a span processor): the
  end runs in a helper thread once the collection is over (``convotel.collected_ends``); before,
  the thread hung.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from convotel import call_span, collected_ends, turns, using_session
from convotel.propagation import SessionSpanProcessor
from convotel.provider_sessions import ResponseChains
from convotel.spans import CallSpan, Pair, StreamProxy, Tracing
from convotel.store import SpanStore
from convotel.store import exporter as store_exporter
from convotel.store.exporter import SQLiteSpanExporter
from convotel.turns import TraceJoiner

OUTCOME = "convotel.stream.outcome"


class Chunks:
    def __iter__(self) -> Iterator[str]:
        yield from ("Hel", "lo")


class Texts:
    def process(self, chunk: Any) -> None:
        return None

    def attributes(self) -> Iterator[Pair]:
        yield "llm.output_messages.0.message.role", "assistant"
        yield "llm.output_messages.0.message.content", "dropped reply"


def lost_in_a_cycle(tracing: Tracing, question: str) -> CallSpan:
    """A model stream nobody holds any more, kept alive only by a reference cycle; its call
    stays reachable (as a request's stream watch holds it)."""
    call: CallSpan = tracing.start("lost stream", "LLM")
    call.set("llm.input_messages.0.message.role", "user")
    call.set("llm.input_messages.0.message.content", question)
    cycle: list[Any] = [StreamProxy(Chunks(), call, Texts())]
    cycle.append(cycle)
    return call


def finishes_within(seconds: float, work: Any) -> bool:
    done = threading.Event()

    def run() -> None:
        work()
        done.set()

    threading.Thread(target=run, daemon=True).start()  # a hung thread must not hang the tests
    return done.wait(seconds)


def test_a_stream_collected_while_the_turn_writer_holds_its_lock_ends_without_a_hang(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SessionSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(provider.get_tracer("convotel-test"))
    root = provider.get_tracer("web").start_span("POST /chat")
    token = context_api.attach(trace_api.set_span_in_context(root))
    gc.disable()  # the collection happens where the test says
    try:
        with using_session("s-1"):
            held = lost_in_a_cycle(tracing, "first question")
            model = tracing.start("model call", "LLM")
            model.set("llm.input_messages.0.message.role", "user")
            model.set("llm.input_messages.0.message.content", "second question")
        reads = turns.turn_input_text
        collected = []

        def collection_inside_the_lock(attributes: Any) -> Any:
            if not collected:  # an allocation in the writer's critical section starts a collection
                collected.append(gc.collect())
            return reads(attributes)

        monkeypatch.setattr(turns, "turn_input_text", collection_inside_the_lock)
        assert finishes_within(5, model.end), "ending a span hung inside the turn writer's lock"
    finally:
        gc.enable()
        context_api.detach(token)
    root.end()
    assert collected
    assert held.ended
    ended = {span.name: span for span in exporter.get_finished_spans()}
    assert set(ended) == {"lost stream", "model call", "POST /chat"}
    assert ended["lost stream"].attributes["convotel.stream.outcome"] == "abandoned"
    assert ended["POST /chat"].attributes["session.id"] == "s-1"
    provider.shutdown()


def test_the_response_chains_let_a_collected_stream_in() -> None:
    sessions = ResponseChains(limit=4)

    def remember_with_a_collection_inside() -> None:
        class EndsWhenCollected:  # what a collected stream's end does: remembers its session
            def __del__(self) -> None:
                sessions.remember("resp-2", "conversation-2")

        cycle: list[Any] = [EndsWhenCollected()]
        cycle.append(cycle)
        del cycle
        with sessions._lock:  # an allocation while remembering starts a collection
            gc.collect()
        sessions.remember("resp-1", "conversation-1")

    gc.disable()
    try:
        assert finishes_within(5, remember_with_a_collection_inside)
    finally:
        gc.enable()
    assert sessions.session_of("resp-1") == "conversation-1"
    assert sessions.session_of("resp-2") == "conversation-2"


class EndingThreads(SpanProcessor):
    """Remembers which thread ended each span."""

    def __init__(self) -> None:
        self.threads: dict[str, str] = {}

    def on_end(self, span: ReadableSpan) -> None:
        self.threads[span.name] = threading.current_thread().name


class LockingProcessor(SpanProcessor):
    """Takes a plain lock on every end, as BatchSpanProcessor's wake-up does; a collection can
    start while it is held (``collect_inside`` forces one at the end of ``span_name``)."""

    def __init__(self, collect_inside: str) -> None:
        self.lock = threading.Lock()
        self.collect_inside = collect_inside

    def on_end(self, span: ReadableSpan) -> None:
        with self.lock:
            if span.name == self.collect_inside:
                gc.collect()


def provider_with(*processors: SpanProcessor) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    for processor in processors:
        provider.add_span_processor(processor)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def ended_spans(exporter: InMemorySpanExporter, names: set[str], within: float) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        ended = {span.name: span for span in exporter.get_finished_spans()}
        if names <= set(ended) or time.monotonic() > deadline:
            return ended
        time.sleep(0.005)


@pytest.fixture
def collections_where_the_test_says() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.usefixtures("collections_where_the_test_says")
def test_a_stream_collected_inside_a_processors_lock_ends_once_the_lock_is_released(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(collected_ends, "WAIT_FOR_ENDS_S", 0.2)
    monkeypatch.setattr(call_span, "_logged", set())  # the wait is logged once per process
    locking = LockingProcessor(collect_inside="model call")
    provider, exporter = provider_with(locking)
    tracing = Tracing(provider.get_tracer("convotel-test"))
    lost = lost_in_a_cycle(tracing, "a question")
    model = tracing.start("model call", "LLM")
    with caplog.at_level(logging.WARNING, logger="convotel"):
        assert finishes_within(5, model.end), "a span's end hung on a processor's lock"
    ended = ended_spans(exporter, {"lost stream", "model call"}, within=5)
    assert set(ended) == {"lost stream", "model call"}
    assert lost.ended
    assert ended["lost stream"].attributes[OUTCOME] == "abandoned"
    assert ended["model call"].end_time < ended["lost stream"].end_time  # after the lock
    assert "still ending after 0.2 s" in caplog.text
    provider.shutdown()


@pytest.mark.usefixtures("collections_where_the_test_says")
def test_a_stream_collected_while_the_store_exporter_writes_ends_once_the_write_is_done(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """convotel's own SQLite exporter under a SimpleSpanProcessor (as the web tests run it)
    writes under a plain lock; a collection starting inside that write used to hang."""
    monkeypatch.setattr(collected_ends, "WAIT_FOR_ENDS_S", 0.2)
    insert = store_exporter._insert
    collected: list[int] = []

    def insert_with_a_collection_inside(connection: Any, rows: Any) -> Any:
        if not collected:
            collected.append(gc.collect())
        return insert(connection, rows)

    monkeypatch.setattr(store_exporter, "_insert", insert_with_a_collection_inside)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(SQLiteSpanExporter(tmp_path / "s.sqlite3")))
    tracing = Tracing(provider.get_tracer("convotel-test"))
    lost = lost_in_a_cycle(tracing, "a question")
    model = tracing.start("model call", "LLM")
    assert finishes_within(5, model.end), "a span's end hung on the exporter's lock"
    deadline = time.monotonic() + 5
    while not lost.settled and time.monotonic() < deadline:
        time.sleep(0.005)
    assert collected
    with SpanStore(tmp_path / "s.sqlite3") as store:
        stored = {span.name: span for span in store.spans()}
    assert set(stored) == {"lost stream", "model call"}
    assert stored["lost stream"].attributes[OUTCOME] == "abandoned"
    provider.shutdown()


@pytest.mark.usefixtures("collections_where_the_test_says")
def test_a_collection_has_ended_the_span_when_it_returns() -> None:
    threads = EndingThreads()
    provider, exporter = provider_with(threads)
    tracing = Tracing(provider.get_tracer("convotel-test"))
    lost = lost_in_a_cycle(tracing, "a question")
    gc.collect()
    assert lost.settled  # ended, every processor has seen it
    ended = {span.name: span for span in exporter.get_finished_spans()}
    assert ended["lost stream"].attributes[OUTCOME] == "abandoned"
    assert threads.threads["lost stream"] == "convotel-collected-ends"
    provider.shutdown()


@pytest.mark.usefixtures("collections_where_the_test_says")
def test_a_stream_the_application_lets_go_of_ends_inline() -> None:
    threads = EndingThreads()
    provider, exporter = provider_with(threads)
    tracing = Tracing(provider.get_tracer("convotel-test"))
    call = tracing.start("dropped stream", "LLM")
    stream = StreamProxy(Chunks(), call, Texts())
    del stream
    assert call.settled
    assert threads.threads["dropped stream"] == threading.current_thread().name
    assert exporter.get_finished_spans()[0].attributes[OUTCOME] == "abandoned"
    provider.shutdown()


@pytest.mark.usefixtures("collections_where_the_test_says")
def test_a_collection_inside_convotels_own_lock_ends_inline_without_waiting() -> None:
    threads = EndingThreads()
    joiner = TraceJoiner()
    provider, exporter = provider_with(threads)
    tracing = Tracing(provider.get_tracer("convotel-test"))
    lost = lost_in_a_cycle(tracing, "a question")
    started = time.monotonic()
    with joiner._lock:  # its lock is re-entrant: the end is let in, no helper needed
        gc.collect()
        assert lost.settled
    assert time.monotonic() - started < collected_ends.WAIT_FOR_ENDS_S / 2
    assert threads.threads["lost stream"] == threading.current_thread().name
    assert exporter.get_finished_spans()[0].attributes[OUTCOME] == "abandoned"
    provider.shutdown()


def test_the_helper_collecting_queues_the_ends_it_finds_instead_of_waiting_for_itself() -> None:
    """A collection in the helper thread (possible once a collecting thread stopped waiting for
    it) queues its ends behind the one it runs; waiting for itself would stall it."""
    ran: list[str] = []
    done = threading.Event()

    def collection_in_the_helper() -> None:
        started = time.monotonic()
        collected_ends._on_collection("start", {})  # what gc does around a collection
        collected_ends.end_outside_collection(lambda: ran.append(threading.current_thread().name))
        collected_ends._on_collection("stop", {})
        ran.append(f"stopped after {time.monotonic() - started:.3f} s")

    helper_thread = collected_ends._ending_thread()
    assert helper_thread is not None
    helper_thread.queue.put(([collection_in_the_helper, done.set], None))
    assert done.wait(5)
    deadline = time.monotonic() + 5
    while len(ran) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    stopped, helper = ran
    assert float(stopped.split()[2]) < collected_ends.WAIT_FOR_ENDS_S / 2
    assert helper == "convotel-collected-ends"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.usefixtures("collections_where_the_test_says")
# Python >= 3.12 warns of any fork with threads; the helper thread is this test's point.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_ends_its_collected_streams_with_a_helper_of_its_own() -> None:
    threads = EndingThreads()
    provider, _ = provider_with(threads)
    tracing = Tracing(provider.get_tracer("convotel-test"))
    lost_in_a_cycle(tracing, "a question")
    gc.collect()  # the parent's helper thread is running now
    assert threads.threads["lost stream"] == "convotel-collected-ends"

    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        threads.threads.clear()
        lost = lost_in_a_cycle(tracing, "another question")
        gc.collect()
        helper = threads.threads.get("lost stream") == "convotel-collected-ends"
        os._exit(0 if lost.settled and helper else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    provider.shutdown()
