"""A stream found by the garbage collector ends its span outside the collection.

CPython runs a collection in whichever thread allocates at the wrong moment, maybe while it holds
a lock the span's end needs (``BatchSpanProcessor`` waking its worker, an exporter writing).
Ended inline, the span would wait for that lock for good. Here a span processor takes a plain
lock on every end and collects inside it: before convotel.collected_ends the thread hung."""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from convotel import collected_ends
from convotel.spans import CallSpan, Pair, StreamProxy, Tracing
from convotel.turns import TraceJoiner

OUTCOME = "convotel.stream.outcome"


class Chunks:
    def __iter__(self) -> Iterator[str]:
        yield from ("Hel", "lo")


class NoText:
    def process(self, chunk: Any) -> None:
        return None

    def attributes(self) -> Iterator[Pair]:
        return iter(())


def lose_in_a_cycle(tracing: Tracing, name: str) -> CallSpan:
    """A started model stream nobody holds any more but a reference cycle."""
    call = tracing.start(name, "LLM")
    cycle: list[Any] = [StreamProxy(Chunks(), call, NoText())]
    cycle.append(cycle)
    return call


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


def finishes_within(seconds: float, work: Any) -> bool:
    done = threading.Event()

    def run() -> None:
        work()
        done.set()

    threading.Thread(target=run, daemon=True).start()  # a hung thread must not hang the tests
    return done.wait(seconds)


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
    locking = LockingProcessor(collect_inside="model call")
    provider, exporter = provider_with(locking)
    tracing = Tracing(provider.get_tracer("convotel-test"))
    lost = lose_in_a_cycle(tracing, "lost stream")
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
def test_a_collection_has_ended_the_span_when_it_returns() -> None:
    threads = EndingThreads()
    provider, exporter = provider_with(threads)
    tracing = Tracing(provider.get_tracer("convotel-test"))
    lost = lose_in_a_cycle(tracing, "lost stream")
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
    stream = StreamProxy(Chunks(), call, NoText())
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
    lost = lose_in_a_cycle(tracing, "lost stream")
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
