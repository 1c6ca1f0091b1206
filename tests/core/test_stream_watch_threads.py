"""A web request's streams end before its root does, even when another thread is ending one.

The garbage collector runs a lost stream's finalizer in whichever thread it happens to run (in a
test: the client's thread). When that thread is still ending the stream's span while the request
closes its open streams, :meth:`StreamWatch.close_open` must not return early: the root, which
ends right after it, would end without the turn's text (seen once in CI: a disconnected request's
root without ``input.value``)."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from convotel import using_session
from convotel.finish import end_call
from convotel.propagation import SessionSpanProcessor
from convotel.spans import CallSpan, Pair, StreamProxy, StreamWatch, Tracing

CLIENT_GONE = {"convotel.test.client_gone": True}


class SlowToEnd(SpanProcessor):
    """Holds up the end of the model span (in whichever thread ends it) for ``delay`` s."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.ending = threading.Event()
        self.order: list[str] = []

    def on_end(self, span: ReadableSpan) -> None:
        if span.name == "model call":
            self.ending.set()
            time.sleep(self.delay)
            self.order.append("model span ended")


class Chunks:
    def __iter__(self) -> Iterator[str]:
        yield from ("Hel", "lo", "!")

    def close(self) -> None:
        return None


class Texts:
    def __init__(self) -> None:
        self.texts: list[str] = []

    def process(self, chunk: Any) -> None:
        self.texts.append(chunk)

    def attributes(self) -> Iterator[Pair]:
        yield "llm.output_messages.0.message.role", "assistant"
        yield "llm.output_messages.0.message.content", "".join(self.texts)


@pytest.mark.parametrize("ending", ["closed", "garbage-collected"])
def test_close_open_returns_only_after_a_stream_another_thread_is_ending(ending: str) -> None:
    slow = SlowToEnd(delay=0.2)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(slow)  # first: the turn text is written only after it
    provider.add_span_processor(SessionSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("web")
    tracing = Tracing(provider.get_tracer("convotel-test"))

    watch = StreamWatch()
    root = tracer.start_span("POST /chat/stream", kind=trace_api.SpanKind.SERVER)
    token = context_api.attach(watch.install(trace_api.set_span_in_context(root)))
    try:
        with using_session("s-1"):
            call: CallSpan = tracing.start("model call", "LLM")
            call.set("llm.input_messages.0.message.role", "user")
            call.set("llm.input_messages.0.message.content", "Tell me a story")
            stream = StreamProxy(Chunks(), call, Texts())
    finally:
        context_api.detach(token)
    next(iter(stream))
    watch.reader_gone(CLIENT_GONE)

    if ending == "closed":
        ender = threading.Thread(target=stream.close)
    else:  # the stream is lost in a reference cycle, which that thread's collection finds
        cycle: list[Any] = [stream]
        cycle.append(cycle)
        del stream, cycle
        ender = threading.Thread(target=gc.collect)
    gc.disable()  # only the other thread collects
    try:
        ender.start()
        assert slow.ending.wait(5)
        watch.close_open()  # the request closes its streams while that thread still ends one
        slow.order.append("close_open returned")
        root.end()
        ender.join(5)
    finally:
        gc.enable()

    assert slow.order == ["model span ended", "close_open returned"]
    (finished_root,) = [s for s in exporter.get_finished_spans() if s.parent is None]
    assert finished_root.attributes is not None
    assert finished_root.attributes["input.value"] == "Tell me a story"
    assert finished_root.attributes["output.value"] == "Hel"
    assert finished_root.attributes["session.id"] == "s-1"
    assert not watch._streams
    provider.shutdown()


def test_close_open_waits_at_most_a_second_for_a_span_that_never_settles(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    provider = TracerProvider()
    tracing = Tracing(provider.get_tracer("convotel-test"))
    watch = StreamWatch()
    token = context_api.attach(watch.install(context_api.get_current()))
    try:
        call = tracing.start("model call", "LLM")
        stream = StreamProxy(Chunks(), call, Texts())
    finally:
        context_api.detach(token)
    monkeypatch.setattr("convotel.finish._SETTLE_TIMEOUT_S", 0.05)
    monkeypatch.setattr("convotel.call_span._logged", set())
    call._ended = True  # another thread claimed the end and never finishes it
    started = time.monotonic()
    assert watch.close_open() == 0
    assert 0.05 <= time.monotonic() - started < 1.0
    assert not call.settled
    assert "a watched stream was still ending after 0.05 s" in caplog.text
    del stream


@pytest.mark.parametrize(
    "ending", ["exhausted", "closed", "garbage-collected", "closed by the watch"]
)
def test_a_watched_stream_leaves_its_watch_once_its_span_has_ended(ending: str) -> None:
    """The watch holds its streams only until they end: a long request's watch stays small."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(provider.get_tracer("convotel-test"))
    watch = StreamWatch()
    token = context_api.attach(watch.install(context_api.get_current()))
    try:
        stream = StreamProxy(Chunks(), tracing.start("model call", "LLM"), Texts())
    finally:
        context_api.detach(token)
    assert len(watch._streams) == 1
    if ending == "exhausted":
        list(stream)
    elif ending == "closed":
        stream.close()
    elif ending == "garbage-collected":
        del stream
        gc.collect()
    else:
        watch.reader_gone(CLIENT_GONE)
        assert watch.close_open() == 1
    assert not watch._streams
    assert len(exporter.get_finished_spans()) == 1
    provider.shutdown()


def test_a_long_lived_watch_stays_as_small_as_its_open_streams() -> None:
    """Streams whose spans ended without their CallFinish (an adapter's own ending path) are
    dropped when the watch grows, so a WebSocket's watch does not keep every reply it saw."""
    provider = TracerProvider()
    tracing = Tracing(provider.get_tracer("convotel-test"))
    watch = StreamWatch()
    token = context_api.attach(watch.install(context_api.get_current()))
    kept = []
    try:
        for number in range(100):
            call = tracing.start("model call", "LLM")
            kept.append(StreamProxy(Chunks(), call, Texts()))
            if number != 0:  # all but the first end outside their CallFinish
                end_call(call)
    finally:
        context_api.detach(token)
    assert len(watch._streams) <= 9
    watch.reader_gone(CLIENT_GONE)
    assert watch.close_open() == 1  # the one still open is still watched
