"""The stream proxies end their span exactly once, however the stream ends."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.trace import StatusCode

from convotel import using_session
from convotel.spans import (
    STREAM_OUTCOME,
    TIME_TO_FIRST_TOKEN_MS,
    AsyncStreamProxy,
    CallSpan,
    Pair,
    StreamError,
    StreamProxy,
    Tracing,
)


class StreamBroke(Exception):
    pass


class FakeStream:
    """Shaped like an SDK stream: iterator, context manager, close(), a helper attribute."""

    def __init__(self, chunks: list[str], fail_after: int | None = None) -> None:
        self._chunks = chunks
        self._fail_after = fail_after
        self.closed = False
        self.response = "raw-response"

    def __iter__(self) -> Iterator[str]:
        for index, chunk in enumerate(self._chunks):
            if index == self._fail_after:
                raise StreamBroke("connection reset")
            yield chunk

    def __enter__(self) -> FakeStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.closed = True


class AsyncFakeStream:
    def __init__(self, chunks: list[str], fail_after: int | None = None) -> None:
        self._chunks = chunks
        self._fail_after = fail_after
        self.closed = False

    async def _iterate(self) -> AsyncIterator[str]:
        for index, chunk in enumerate(self._chunks):
            if index == self._fail_after:
                raise StreamBroke("connection reset")
            yield chunk

    def __aiter__(self) -> AsyncIterator[str]:
        return self._iterate()

    async def __aenter__(self) -> AsyncFakeStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self.closed = True


class CountingAccumulator:
    def __init__(self, hide: str | None = None) -> None:
        self.chunks: list[str] = []
        self.hide = hide

    def process(self, chunk: Any) -> bool:
        self.chunks.append(chunk)
        return chunk != self.hide

    def attributes(self) -> Iterable[Pair]:
        yield "output.value", "".join(c for c in self.chunks if c != self.hide)


QUOTA_ERROR = StreamError(description="You exceeded your quota.", type="insufficient_quota")


class ErrorReportingAccumulator(CountingAccumulator):
    """Reports the provider error an ``"ERR"`` chunk stands for, once that chunk was seen."""

    def error(self) -> StreamError | None:
        return QUOTA_ERROR if "ERR" in self.chunks else None


@pytest.fixture
def tracing(tracer_provider: TracerProvider) -> Tracing:
    return Tracing(tracer_provider.get_tracer("test"))


def start(tracing: Tracing) -> CallSpan:
    return tracing.start("stream", "LLM")


def finished(exporter: InMemorySpanExporter) -> ReadableSpan:
    spans = exporter.get_finished_spans()
    assert len(spans) == 1, f"expected exactly one ended span, got {len(spans)}"
    return spans[0]


def outcome(span: ReadableSpan) -> Any:
    return (span.attributes or {}).get(STREAM_OUTCOME)


CHUNKS = ["Hel", "lo", "!"]


def test_exhausted_stream_ends_ok_with_output_and_time_to_first_token(
    tracing: Tracing, span_exporter: InMemorySpanExporter
) -> None:
    proxy = StreamProxy(FakeStream(CHUNKS), start(tracing), CountingAccumulator())
    assert list(proxy) == CHUNKS
    span = finished(span_exporter)
    assert outcome(span) == "completed"
    assert span.status.status_code is StatusCode.OK
    assert (span.attributes or {})["output.value"] == "Hello!"
    first_token_ms = (span.attributes or {})[TIME_TO_FIRST_TOKEN_MS]
    assert isinstance(first_token_ms, float)
    assert 0 <= first_token_ms <= (span.end_time - span.start_time) / 1e6


def test_closed_stream_ends_once_as_closed_early(
    tracing: Tracing, span_exporter: InMemorySpanExporter
) -> None:
    stream = FakeStream(CHUNKS)
    proxy = StreamProxy(stream, start(tracing), CountingAccumulator())
    assert next(proxy) == "Hel"
    proxy.close()
    proxy.close()
    assert stream.closed
    assert outcome(finished(span_exporter)) == "closed_early"


def test_with_block_exit_ends_the_span(
    tracing: Tracing, span_exporter: InMemorySpanExporter
) -> None:
    stream = FakeStream(CHUNKS)
    with StreamProxy(stream, start(tracing), CountingAccumulator()) as proxy:
        assert isinstance(proxy, StreamProxy)
        assert next(iter(proxy)) == "Hel"
    assert stream.closed
    assert outcome(finished(span_exporter)) == "closed_early"


def test_with_block_after_exhaustion_is_completed(
    tracing: Tracing, span_exporter: InMemorySpanExporter
) -> None:
    with StreamProxy(FakeStream(CHUNKS), start(tracing), CountingAccumulator()) as proxy:
        assert list(proxy) == CHUNKS
    assert outcome(finished(span_exporter)) == "completed"


def test_break_out_of_a_for_loop_then_drop_the_stream_ends_it_abandoned(
    tracing: Tracing, span_exporter: InMemorySpanExporter
) -> None:
    proxy = StreamProxy(FakeStream(CHUNKS), start(tracing), CountingAccumulator())
    for chunk in proxy:
        if chunk == "Hel":
            break
    assert span_exporter.get_finished_spans() == ()
    del proxy
    gc.collect()
    span = finished(span_exporter)
    assert outcome(span) == "abandoned"
    assert span.status.status_code is StatusCode.UNSET


def test_stream_that_raises_ends_with_error_and_the_same_exception(
    tracing: Tracing, span_exporter: InMemorySpanExporter
) -> None:
    proxy = StreamProxy(FakeStream(CHUNKS, fail_after=1), start(tracing), CountingAccumulator())
    with pytest.raises(StreamBroke) as caught:
        list(proxy)
    span = finished(span_exporter)
    assert outcome(span) == "error"
    assert span.status.status_code is StatusCode.ERROR
    assert span.events[0].attributes is not None
    assert span.events[0].attributes["exception.message"] == str(caught.value)


def test_garbage_collected_unread_stream_is_abandoned(
    tracing: Tracing, span_exporter: InMemorySpanExporter
) -> None:
    StreamProxy(FakeStream(CHUNKS), start(tracing), CountingAccumulator())
    gc.collect()
    assert outcome(finished(span_exporter)) == "abandoned"


def test_proxy_forwards_attributes_and_hides_chunks_on_request(
    tracing: Tracing, span_exporter: InMemorySpanExporter
) -> None:
    proxy = StreamProxy(
        FakeStream(["a", "usage", "b"]), start(tracing), CountingAccumulator("usage")
    )
    assert proxy.response == "raw-response"
    assert isinstance(proxy, FakeStream)
    assert list(proxy) == ["a", "b"]
    assert (finished(span_exporter).attributes or {})["output.value"] == "ab"


def test_accumulator_that_raises_does_not_break_the_stream(
    tracing: Tracing, span_exporter: InMemorySpanExporter
) -> None:
    class Broken:
        def process(self, chunk: Any) -> None:
            raise ValueError("bad chunk")

        def attributes(self) -> Iterable[Pair]:
            raise ValueError("bad end")

    assert list(StreamProxy(FakeStream(CHUNKS), start(tracing), Broken())) == CHUNKS
    assert outcome(finished(span_exporter)) == "completed"


def test_session_recorded_at_call_time_not_iteration_time(
    tracing: Tracing, span_exporter: InMemorySpanExporter
) -> None:
    with using_session("caller"):
        proxy = StreamProxy(FakeStream(CHUNKS), start(tracing), CountingAccumulator())
    with using_session("someone-else"):
        list(proxy)
    assert (finished(span_exporter).attributes or {})["session.id"] == "caller"


async def test_async_exhausted(tracing: Tracing, span_exporter: InMemorySpanExporter) -> None:
    proxy = AsyncStreamProxy(AsyncFakeStream(CHUNKS), start(tracing), CountingAccumulator())
    assert [chunk async for chunk in proxy] == CHUNKS
    assert outcome(finished(span_exporter)) == "completed"


async def test_async_closed_early(tracing: Tracing, span_exporter: InMemorySpanExporter) -> None:
    stream = AsyncFakeStream(CHUNKS)
    proxy = AsyncStreamProxy(stream, start(tracing), CountingAccumulator())
    assert await proxy.__anext__() == "Hel"
    await proxy.close()
    assert stream.closed
    assert outcome(finished(span_exporter)) == "closed_early"


async def test_async_with_exit(tracing: Tracing, span_exporter: InMemorySpanExporter) -> None:
    stream = AsyncFakeStream(CHUNKS)
    async with AsyncStreamProxy(stream, start(tracing), CountingAccumulator()) as proxy:
        async for _ in proxy:
            break
    assert stream.closed
    assert outcome(finished(span_exporter)) == "closed_early"


async def test_async_error(tracing: Tracing, span_exporter: InMemorySpanExporter) -> None:
    proxy = AsyncStreamProxy(
        AsyncFakeStream(CHUNKS, fail_after=2), start(tracing), CountingAccumulator()
    )
    with pytest.raises(StreamBroke):
        async for _ in proxy:
            pass
    assert outcome(finished(span_exporter)) == "error"


async def test_async_garbage_collected(
    tracing: Tracing, span_exporter: InMemorySpanExporter
) -> None:
    proxy = AsyncStreamProxy(AsyncFakeStream(CHUNKS), start(tracing), CountingAccumulator())
    await proxy.__anext__()
    del proxy
    gc.collect()
    assert outcome(finished(span_exporter)) == "abandoned"


def test_proxy_does_not_invent_missing_methods(tracing: Tracing) -> None:
    proxy = AsyncStreamProxy(AsyncFakeStream(CHUNKS), start(tracing), CountingAccumulator())
    assert not hasattr(proxy, "aclose")
    assert hasattr(proxy, "close")
    proxy.close  # noqa: B018 - attribute access alone must not end the span
    assert not proxy._self_state.call.ended


# --- errors the provider reports inside a stream (the HTTP status was a success) ---------------

REPORTED = ["Hel", "lo", "ERR", "!"]


def assert_failed_by_quota_error(span: ReadableSpan) -> None:
    attributes = span.attributes or {}
    assert outcome(span) == "error"
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "You exceeded your quota."
    assert attributes[ERROR_TYPE] == "insufficient_quota"
    assert attributes["output.value"] == "".join(REPORTED)
    assert span.events == ()  # no exception was raised, so none is recorded


def test_error_reported_in_a_stream_fails_the_span_and_every_chunk_is_delivered(
    tracing: Tracing, span_exporter: InMemorySpanExporter
) -> None:
    proxy = StreamProxy(FakeStream(REPORTED), start(tracing), ErrorReportingAccumulator())
    assert list(proxy) == REPORTED
    assert_failed_by_quota_error(finished(span_exporter))


async def test_async_error_reported_in_a_stream_fails_the_span(
    tracing: Tracing, span_exporter: InMemorySpanExporter
) -> None:
    stream = AsyncFakeStream(REPORTED)
    async with AsyncStreamProxy(stream, start(tracing), ErrorReportingAccumulator()) as proxy:
        assert [chunk async for chunk in proxy] == REPORTED
    assert_failed_by_quota_error(finished(span_exporter))


def test_error_reported_before_an_early_close_still_fails_the_span(
    tracing: Tracing, span_exporter: InMemorySpanExporter
) -> None:
    proxy = StreamProxy(FakeStream(REPORTED), start(tracing), ErrorReportingAccumulator())
    assert [next(proxy) for _ in range(3)] == REPORTED[:3]
    proxy.close()
    span = finished(span_exporter)
    assert outcome(span) == "error"
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})[ERROR_TYPE] == "insufficient_quota"


def test_stream_exception_after_a_reported_error_is_recorded_as_the_failure(
    tracing: Tracing, span_exporter: InMemorySpanExporter
) -> None:
    stream = FakeStream(REPORTED, fail_after=3)
    proxy = StreamProxy(stream, start(tracing), ErrorReportingAccumulator())
    with pytest.raises(StreamBroke):
        list(proxy)
    span = finished(span_exporter)
    assert outcome(span) == "error"
    assert (span.attributes or {})[ERROR_TYPE] == "StreamBroke"
    assert span.status.description == "StreamBroke: connection reset"


def test_no_error_reported_or_a_broken_error_report_leaves_the_span_ok(
    tracing: Tracing, span_exporter: InMemorySpanExporter
) -> None:
    class BrokenReport(CountingAccumulator):
        def error(self) -> StreamError | None:
            raise ValueError("bad report")

    assert list(StreamProxy(FakeStream(CHUNKS), start(tracing), BrokenReport())) == CHUNKS
    assert list(StreamProxy(FakeStream(CHUNKS), start(tracing), ErrorReportingAccumulator())) == (
        CHUNKS
    )
    spans = span_exporter.get_finished_spans()
    assert [outcome(span) for span in spans] == ["completed", "completed"]
    assert [span.status.status_code for span in spans] == [StatusCode.OK, StatusCode.OK]
    assert [ERROR_TYPE in (span.attributes or {}) for span in spans] == [False, False]
