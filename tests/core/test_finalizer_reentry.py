"""A stream the garbage collector finds while convotel holds one of its own locks.

CPython runs finalizers in whichever thread triggers a collection, at whatever allocation
triggers it. A stream proxy left in a reference cycle (a cancelled request's traceback holds
its frame) ends its span from its finalizer, so that span's end can run *inside* convotel's
handling of another span's end, in the same thread. The locks on that path must let it in:
with a plain lock the thread (a web server's event loop) would hang for good."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from convotel import turns, using_session
from convotel.propagation import SessionSpanProcessor
from convotel.provider_sessions import ResponseChains
from convotel.spans import CallSpan, Pair, StreamProxy, Tracing


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
