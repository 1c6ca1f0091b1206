"""One rule for how a streamed call's span ends, whichever path the stream took.

Every way a stream can end (read to its end, closed, ``with`` exit, broken out of and dropped, an
error, a cancelled reader, garbage collection, a provider error inside the stream, the web client
gone) gives the same outcome and status through the core's stream proxy, OpenAI's deferred
response (``.with_streaming_response``) and a LlamaIndex model stream: the rule of
:mod:`convotel.finish`, written once.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from opentelemetry import context as context_api
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from convotel.spans import (
    STREAM_OUTCOME,
    CallSpan,
    Pair,
    StreamError,
    StreamProxy,
    StreamWatch,
    Tracing,
)

#: How each ending ends the span: (outcome, status). The rule, stated once for every path.
RULE: dict[str, tuple[str, StatusCode]] = {
    "exhausted": ("completed", StatusCode.OK),
    "closed": ("closed_early", StatusCode.OK),
    "closed before reading": ("closed_early", StatusCode.OK),
    "with exit": ("closed_early", StatusCode.OK),
    "break, then dropped": ("abandoned", StatusCode.UNSET),
    "error": ("error", StatusCode.ERROR),
    "cancelled": ("closed_early", StatusCode.OK),
    "garbage-collected unread": ("abandoned", StatusCode.UNSET),
    "provider error in the stream": ("error", StatusCode.ERROR),
    "web client gone": ("closed_early", StatusCode.OK),
}
CLIENT_GONE = {"convotel.test.client_gone": True}


class StreamBroke(Exception):
    pass


class Opened:
    """One streamed call as its path hands it to the application."""

    def __init__(
        self,
        stream: Any,
        close: Callable[[], Any],
        keep: Iterable[Any] = (),
        with_block: bool = True,
    ) -> None:
        self.stream = stream  # what the application iterates
        self.close = close  # how the application closes it
        self.keep = list(keep)  # what else the application holds (dropped with the stream)
        self.with_block = with_block  # whether ``with stream:`` applies


#: ``open(failure, provider_error) -> Opened``; ``failure`` is raised after the first chunk.
Opener = Callable[[BaseException | None, bool], Opened]


# --- the core's stream proxy ---------------------------------------------------------------


class FakeStream:
    def __init__(self, failure: BaseException | None) -> None:
        self.failure = failure

    def __iter__(self) -> Iterator[str]:
        yield "Hel"
        if self.failure is not None:
            raise self.failure
        yield "lo"

    def __enter__(self) -> FakeStream:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def close(self) -> None:
        return None


class TextAccumulator:
    def __init__(self, provider_error: bool) -> None:
        self.texts: list[str] = []
        self.provider_error = provider_error

    def process(self, chunk: Any) -> None:
        self.texts.append(chunk)

    def attributes(self) -> Iterable[Pair]:
        yield "output.value", "".join(self.texts)

    def error(self) -> StreamError | None:
        return StreamError("quota", "insufficient_quota") if self.provider_error else None


def open_core(tracer_provider: TracerProvider) -> Iterator[Opener]:
    tracing = Tracing(tracer_provider.get_tracer("test"))

    def open_stream(failure: BaseException | None, provider_error: bool) -> Opened:
        call: CallSpan = tracing.start("stream", "LLM")
        proxy = StreamProxy(FakeStream(failure), call, TextAccumulator(provider_error))
        return Opened(proxy, proxy.close)

    yield open_stream


# --- OpenAI: a deferred response (.with_streaming_response) parsed into a stream ---------------


def _event(data: Any) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


def _chunk(text: str) -> dict[str, Any]:
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }


def _openai_http_module(openai: Any) -> Any:
    """The HTTP library this openai sends through: httpx (openai 2.x) or httpx2 (3.x)."""
    for base in openai.DefaultHttpxClient.__mro__:
        if base.__name__ == "Client" and base.__module__.startswith("httpx"):
            return importlib.import_module(base.__module__.split(".")[0])
    pytest.skip("cannot tell which HTTP library this openai uses")


def open_openai(tracer_provider: TracerProvider) -> Iterator[Opener]:
    openai = pytest.importorskip("openai")
    http = _openai_http_module(openai)
    from convotel.openai import OpenAIInstrumentor

    def opener(failure: BaseException | None, provider_error: bool) -> Opened:
        def body() -> Iterator[bytes]:
            yield _event(_chunk("Hel"))
            if failure is not None:
                raise failure
            if provider_error:
                yield _event({"error": {"message": "quota", "type": "insufficient_quota"}})
            yield _event(_chunk("lo"))
            yield b"data: [DONE]\n\n"

        def respond(request: Any) -> Any:
            return http.Response(200, headers={"content-type": "text/event-stream"}, content=body())

        client = openai.OpenAI(
            api_key="sk-test",
            http_client=http.Client(transport=http.MockTransport(respond)),
            max_retries=0,
        )
        manager = client.chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}], stream=True
        )
        response = manager.__enter__()

        class Parsed:  # parse() on first use, as an application reading the stream does
            def __iter__(self) -> Iterator[Any]:
                return iter(response.parse())

            def __enter__(self) -> Parsed:
                return self

            def __exit__(self, *exc: Any) -> None:
                manager.__exit__(*exc)

        return Opened(Parsed(), response.close, keep=[manager, response])

    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    try:
        yield opener
    finally:
        instrumentor.uninstrument()


# --- LlamaIndex: an LLM's model stream, ended by the framework's callbacks ---------------------


def open_llama_index(tracer_provider: TracerProvider) -> Iterator[Opener]:
    pytest.importorskip("llama_index.core")
    from llama_index.core.base.llms.types import CompletionResponse, LLMMetadata
    from llama_index.core.llms import CustomLLM
    from llama_index.core.llms.callbacks import llm_completion_callback

    from convotel.llama_index import LlamaIndexInstrumentor

    class ScriptedLLM(CustomLLM):
        failure: Any = None

        @property
        def metadata(self) -> LLMMetadata:
            return LLMMetadata(model_name="scripted")

        @llm_completion_callback()
        def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
            return CompletionResponse(text="Hello")

        @llm_completion_callback()
        def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
            failure = self.failure

            def chunks() -> Iterator[CompletionResponse]:
                yield CompletionResponse(text="Hel", delta="Hel")
                if failure is not None:
                    raise failure
                yield CompletionResponse(text="Hello", delta="lo")

            return chunks()

    def opener(failure: BaseException | None, provider_error: bool) -> Opened:
        if provider_error:
            pytest.skip("a LlamaIndex model stream reports provider errors by raising")
        stream = ScriptedLLM(failure=failure).stream_complete("Hi")
        return Opened(stream, stream.close, with_block=False)  # a generator

    instrumentor = LlamaIndexInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    try:
        yield opener
    finally:
        instrumentor.uninstrument()


PATHS: dict[str, Callable[[TracerProvider], Iterator[Opener]]] = {
    "core stream proxy": open_core,
    "OpenAI deferred response": open_openai,
    "LlamaIndex model stream": open_llama_index,
}


@pytest.fixture(params=sorted(PATHS))
def open_stream(
    request: pytest.FixtureRequest, tracer_provider: TracerProvider
) -> Iterator[Opener]:
    yield from PATHS[request.param](tracer_provider)


def end_the_stream(ending: str, open_stream: Opener) -> None:
    """Do what an application does for ``ending``; the application's exceptions are expected."""
    if ending == "exhausted":
        list(open_stream(None, False).stream)
    elif ending == "closed":
        opened = open_stream(None, False)
        next(iter(opened.stream))
        opened.close()
    elif ending == "closed before reading":
        open_stream(None, False).close()
    elif ending == "with exit":
        opened = open_stream(None, False)
        if not opened.with_block:
            pytest.skip("this stream is not a context manager")
        with opened.stream as stream:
            next(iter(stream))
    elif ending == "break, then dropped":
        opened = open_stream(None, False)
        for _ in opened.stream:
            break
        del opened
    elif ending == "error":
        with pytest.raises(Exception, match="connection reset"):
            list(open_stream(StreamBroke("connection reset"), False).stream)
    elif ending == "cancelled":
        with pytest.raises(asyncio.CancelledError):
            list(open_stream(asyncio.CancelledError(), False).stream)
    elif ending == "garbage-collected unread":
        open_stream(None, False)
    elif ending == "provider error in the stream":
        with contextlib.suppress(Exception):  # a path may raise it, or deliver every chunk
            list(open_stream(None, True).stream)
    elif ending == "web client gone":
        watch = StreamWatch()
        token = context_api.attach(watch.install(context_api.get_current()))
        try:
            opened = open_stream(None, False)
        finally:
            context_api.detach(token)
        next(iter(opened.stream))
        watch.reader_gone(CLIENT_GONE)
        del opened
    gc.collect()


def the_streamed_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    spans = [s for s in exporter.get_finished_spans() if STREAM_OUTCOME in (s.attributes or {})]
    assert len(spans) == 1, f"one streamed call, one ended span: {[s.name for s in spans]}"
    return spans[0]


@pytest.mark.parametrize("ending", list(RULE))
def test_every_path_ends_a_stream_by_the_one_rule(
    ending: str, open_stream: Opener, span_exporter: InMemorySpanExporter
) -> None:
    end_the_stream(ending, open_stream)

    span = the_streamed_span(span_exporter)
    attributes = dict(span.attributes or {})
    assert (attributes[STREAM_OUTCOME], span.status.status_code) == RULE[ending]
    if ending == "web client gone":
        assert attributes["convotel.test.client_gone"] is True
    if RULE[ending][1] is StatusCode.ERROR:
        assert span.status.description
