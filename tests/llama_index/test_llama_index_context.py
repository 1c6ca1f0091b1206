"""A LlamaIndex call never leaves its context current in the caller, streaming or not, consumed
or not; a stream's lazy model request still runs under (and is claimed by) its LLM span.

``LazyProviderLLM`` makes its "model request" the way llama-index-llms-openai does: inside the
generator it returns, so only when the caller iterates. The request opens a provider-style LLM
span through the core (as convotel-openai would), so these tests see where a provider span made
during iteration lands without needing an HTTP cassette.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.base.llms.base import BaseLLM
from llama_index.core.base.llms.types import (
    ChatMessage,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.llms import CustomLLM, MockLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index_spans import KIND, FinishedSpans, attributes, token_stream
from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.trace import StatusCode
from pydantic import PrivateAttr

from convotel import get_attributes_from_context, using_session, using_user
from convotel.llama_index import LlamaIndexInstrumentor
from convotel.spans import DEFERRED_TO_PROVIDER, STREAM_OUTCOME, Tracing

QUESTION = "What is the capital of France?"
WORDS = ("Paris", " is", " the", " capital.")


class LazyProviderLLM(CustomLLM):
    """Streams ``WORDS``; its provider request (an LLM span) starts at the first iteration."""

    _provider: Tracing = PrivateAttr()

    def __init__(self, provider: Tracing) -> None:
        super().__init__()
        self._provider = provider

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="lazy-model")

    def _request(self) -> Iterator[CompletionResponse]:
        request = self._provider.start("Provider.create", "LLM")
        try:
            text = ""
            for word in WORDS:
                text += word
                yield CompletionResponse(text=text, delta=word)
            request.set("llm.token_count.total", 7)
        finally:
            request.end()

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text="".join(WORDS))

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        return self._request()

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        async def chunks() -> AsyncIterator[CompletionResponse]:
            for chunk in self._request():
                await asyncio.sleep(0)
                yield chunk

        return chunks()


@pytest.fixture
def lazy_llm(tracer_provider: TracerProvider) -> LazyProviderLLM:
    return LazyProviderLLM(Tracing(tracer_provider.get_tracer("provider")))


class CallerContext:
    """The caller's context at one moment, to compare with later moments."""

    def __init__(self) -> None:
        self.context = context_api.get_current()
        self.span = trace_api.get_current_span()
        self.attributes = dict(get_attributes_from_context())

    def assert_unchanged(self, when: str) -> None:
        assert context_api.get_current() is self.context, f"context changed {when}"
        assert trace_api.get_current_span() is self.span, f"span left current {when}"
        assert dict(get_attributes_from_context()) == self.attributes, f"ids changed {when}"


def provider_below(spans: FinishedSpans, framework_name: str) -> ReadableSpan:
    """The provider span made while iterating, nested under (and claimed by) the LLM span."""
    (provider,) = spans.named("Provider.create")
    framework = spans.one(framework_name)
    assert spans.parent(provider) is framework
    assert attributes(framework)[DEFERRED_TO_PROVIDER] is True
    assert attributes(framework)[KIND] == "CHAIN"
    assert [span.name for span in spans.of_kind("LLM")] == ["Provider.create"]
    return provider


def prompt() -> list[ChatMessage]:
    return [ChatMessage(role="user", content=QUESTION)]


# --- sync LLM streams --------------------------------------------------------------------------


def test_stream_chat_outside_a_session_leaves_the_caller_context_alone(
    spans: FinishedSpans, lazy_llm: LazyProviderLLM
) -> None:
    caller = CallerContext()
    assert caller.span is trace_api.INVALID_SPAN
    stream = lazy_llm.stream_chat(prompt())
    caller.assert_unchanged("after stream_chat returned")
    chunks = list(stream)
    caller.assert_unchanged("after the stream was consumed")

    assert chunks[-1].message.content == "".join(WORDS)
    provider = provider_below(spans, "LazyProviderLLM.stream_chat")
    assert "session.id" not in attributes(provider)
    assert attributes(spans.one("LazyProviderLLM.stream_chat"))[STREAM_OUTCOME] == "completed"


def test_stream_chat_in_a_session_consumed_after_the_block_keeps_its_session(
    spans: FinishedSpans, lazy_llm: LazyProviderLLM
) -> None:
    outside = CallerContext()
    with using_session("lazy-1"), using_user("u-1"):
        inside = CallerContext()
        stream = lazy_llm.stream_chat(prompt())
        inside.assert_unchanged("after stream_chat returned")
        first = next(stream)
        inside.assert_unchanged("after the first chunk")
    outside.assert_unchanged("after the session block")
    rest = list(stream)  # after the block: each step still runs in the call's own context
    outside.assert_unchanged("after the stream was consumed")

    assert first.delta == "Paris"
    assert len(rest) == len(WORDS) - 1
    provider = provider_below(spans, "LazyProviderLLM.stream_chat")
    assert attributes(provider)["session.id"] == "lazy-1"
    assert attributes(provider)["user.id"] == "u-1"
    spans.captured().assert_session("lazy-1", user="u-1", llm_calls=1, tokens=(0, 0, 7))


def test_stream_started_outside_its_session_block_runs_in_its_call_session(
    spans: FinishedSpans, lazy_llm: LazyProviderLLM
) -> None:
    with using_session("call-session"):
        stream = lazy_llm.stream_complete(QUESTION)
    with using_session("iterating-session"):
        inside = CallerContext()
        list(stream)
        inside.assert_unchanged("after the stream was consumed in another session")

    provider = provider_below(spans, "LazyProviderLLM.stream_complete")
    assert attributes(provider)["session.id"] == "call-session"


def test_abandoned_and_closed_streams_leave_the_caller_context_alone(
    spans: FinishedSpans, lazy_llm: LazyProviderLLM
) -> None:
    with using_session("abandon"):
        caller = CallerContext()
        stream = lazy_llm.stream_chat(prompt())
        next(stream)
        del stream
        gc.collect()
        caller.assert_unchanged("after the stream was abandoned")
        closed = lazy_llm.stream_complete(QUESTION)
        next(closed)
        closed.close()
        caller.assert_unchanged("after the stream was closed")
        lazy_llm.stream_complete(QUESTION)  # never iterated
        gc.collect()
        caller.assert_unchanged("after an unstarted stream was dropped")

    outcomes = sorted(attributes(span)[STREAM_OUTCOME] for span in spans.of_kind("CHAIN"))
    assert outcomes == ["abandoned", "closed_early"]
    (unstarted,) = spans.named("LazyProviderLLM.stream_complete")[1:]
    assert attributes(unstarted)[STREAM_OUTCOME] == "abandoned"
    assert len(spans.named("Provider.create")) == 2, "the unstarted stream made no request"


def test_error_thrown_into_a_stream_leaves_the_caller_context_alone(
    spans: FinishedSpans, lazy_llm: LazyProviderLLM
) -> None:
    error = ConnectionResetError("connection lost")
    caller = CallerContext()
    stream = lazy_llm.stream_complete(QUESTION)
    next(stream)
    with pytest.raises(ConnectionResetError) as raised:
        stream.throw(error)
    caller.assert_unchanged("after the stream raised")

    assert raised.value is error
    framework = spans.one("LazyProviderLLM.stream_complete")
    assert attributes(framework)[STREAM_OUTCOME] == "error"
    assert framework.status.status_code is StatusCode.ERROR


def test_interleaved_streams_make_their_requests_under_their_own_calls(
    spans: FinishedSpans, lazy_llm: LazyProviderLLM
) -> None:
    with using_session("first"):
        first = lazy_llm.stream_complete(QUESTION)
    with using_session("second"):
        second = lazy_llm.stream_complete(QUESTION)
    caller = CallerContext()
    for _ in zip(second, first, strict=True):
        caller.assert_unchanged("between the steps of two streams")

    for provider in spans.named("Provider.create"):
        parent = spans.parent(provider)
        assert parent is not None
        assert attributes(parent)["session.id"] == attributes(provider)["session.id"]
    captured = spans.captured()
    captured.assert_sessions_isolated()
    captured.assert_session("first", llm_calls=1)
    captured.assert_session("second", llm_calls=1)


# --- query and chat engines ----------------------------------------------------------------------


@pytest.mark.parametrize("session", [None, "rag-lazy"])
def test_streaming_query_leaves_the_caller_context_alone(
    spans: FinishedSpans,
    index: VectorStoreIndex,
    lazy_llm: LazyProviderLLM,
    session: str | None,
) -> None:
    engine = index.as_query_engine(llm=lazy_llm, streaming=True)
    with using_session(session) if session else contextlib.nullcontext():
        caller = CallerContext()
        response = engine.query(QUESTION)
        caller.assert_unchanged("after query returned")
        text = "".join(token_stream(response))
        caller.assert_unchanged("after the response stream was consumed")

    assert text == "".join(WORDS)
    provider_below(spans, "LazyProviderLLM.stream_complete")
    query = spans.one("RetrieverQueryEngine.query")
    assert attributes(query)["output.value"] == text
    assert spans.one("Provider.create").context.trace_id == query.context.trace_id
    if session:
        spans.captured().assert_every_span_in_a_session()


def test_abandoned_streaming_query_leaves_the_caller_context_alone(
    spans: FinishedSpans, index: VectorStoreIndex, lazy_llm: LazyProviderLLM
) -> None:
    caller = CallerContext()
    response = index.as_query_engine(llm=lazy_llm, streaming=True).query(QUESTION)
    next(token_stream(response))
    caller.assert_unchanged("after the first token")
    del response
    gc.collect()
    caller.assert_unchanged("after the response was abandoned")

    assert attributes(spans.one("RetrieverQueryEngine.query"))[STREAM_OUTCOME] == "abandoned"


def test_streamed_chat_engine_reply_consumed_by_its_writer_thread(
    spans: FinishedSpans, lazy_llm: LazyProviderLLM
) -> None:
    engine = SimpleChatEngine.from_defaults(llm=lazy_llm)
    with using_session("writer"), using_user("u-2"):
        caller = CallerContext()
        reply = engine.stream_chat("Hello there")
        caller.assert_unchanged("after stream_chat returned")
        text = "".join(reply.response_gen)
        caller.assert_unchanged("after the reply was consumed (its writer joined)")

    assert text == "".join(WORDS)
    chat = spans.one("SimpleChatEngine.stream_chat")
    writer = spans.one("StreamingAgentChatResponse.write_response_to_history")
    assert spans.parent(writer) is chat, "the writer thread runs in the engine call's context"
    provider_below(spans, "LazyProviderLLM.stream_chat")
    captured = spans.captured()
    captured.assert_every_span_in_a_session()
    captured.assert_session("writer", user="u-2", turns=1, llm_calls=1, tokens=(0, 0, 7))


# --- async ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("session", [None, "async-lazy"])
async def test_astream_chat_leaves_the_caller_context_alone(
    spans: FinishedSpans, lazy_llm: LazyProviderLLM, session: str | None
) -> None:
    # Checked inside the test: a leak in the test's task would not reach a sync fixture.
    outside = CallerContext()
    with using_session(session) if session else contextlib.nullcontext():
        caller = CallerContext()
        stream = await lazy_llm.astream_chat(prompt())
        caller.assert_unchanged("after astream_chat returned")
        chunks = [chunk async for chunk in stream]
        caller.assert_unchanged("after the stream was consumed")
    outside.assert_unchanged("after the block")

    assert chunks[-1].message.content == "".join(WORDS)
    provider = provider_below(spans, "LazyProviderLLM.astream_chat")
    assert attributes(provider).get("session.id") == session


async def test_abandoned_and_closed_async_streams_leave_the_caller_context_alone(
    spans: FinishedSpans, lazy_llm: LazyProviderLLM
) -> None:
    caller = CallerContext()
    stream = await lazy_llm.astream_complete(QUESTION)
    await anext(stream)
    await stream.aclose()
    caller.assert_unchanged("after the stream was closed")
    dropped = await lazy_llm.astream_complete(QUESTION)
    await anext(dropped)
    del dropped
    gc.collect()
    await asyncio.sleep(0)  # asyncio closes an abandoned async generator in a task of its own
    caller.assert_unchanged("after the stream was abandoned")

    outcomes = [attributes(span)[STREAM_OUTCOME] for span in spans.of_kind("CHAIN")]
    assert outcomes == ["closed_early", "abandoned"]


async def test_concurrent_async_streams_keep_their_calls_apart(
    spans: FinishedSpans, lazy_llm: LazyProviderLLM
) -> None:
    async def ask(session: str) -> str:
        with using_session(session):
            stream = await lazy_llm.astream_complete(QUESTION)
        caller = CallerContext()
        text = ""
        async for chunk in stream:
            caller.assert_unchanged("between steps")
            text = chunk.text
        return text

    texts = await asyncio.gather(*(ask(f"task-{n}") for n in range(3)))

    assert texts == ["".join(WORDS)] * 3
    for provider in spans.named("Provider.create"):
        parent = spans.parent(provider)
        assert parent is not None
        assert attributes(parent)["session.id"] == attributes(provider)["session.id"]
    spans.captured().assert_sessions_isolated()


async def test_async_streamed_chat_engine_reply_leaves_the_caller_context_alone(
    spans: FinishedSpans, lazy_llm: LazyProviderLLM
) -> None:
    engine = SimpleChatEngine.from_defaults(llm=lazy_llm)
    with using_session("awriter"):
        caller = CallerContext()
        reply = await engine.astream_chat("Hello there")
        caller.assert_unchanged("after astream_chat returned")
        text = "".join([piece async for piece in reply.async_response_gen()])
        caller.assert_unchanged("after the reply was consumed")

    assert text == "".join(WORDS)
    provider_below(spans, "LazyProviderLLM.astream_chat")
    spans.captured().assert_session("awriter", turns=1, llm_calls=1, tokens=(0, 0, 7))


# --- the stream methods' wrapping ------------------------------------------------------------


def test_llm_class_defined_after_instrument_steps_its_stream_under_the_call(
    spans: FinishedSpans, tracer_provider: TracerProvider
) -> None:
    class LaterLLM(LazyProviderLLM):
        @llm_completion_callback()
        def stream_complete(
            self, prompt: str, formatted: bool = False, **kwargs: Any
        ) -> CompletionResponseGen:
            return self._request()

    llm = LaterLLM(Tracing(tracer_provider.get_tracer("provider")))
    caller = CallerContext()
    list(llm.stream_complete(QUESTION))
    caller.assert_unchanged("after the stream was consumed")

    provider_below(spans, "LaterLLM.stream_complete")


def test_uninstrument_restores_the_stream_methods_exactly(
    tracer_provider: TracerProvider,
) -> None:
    def stream_methods() -> dict[tuple[type, str], Any]:
        found: dict[tuple[type, str], Any] = {}
        pending: list[type] = [BaseLLM]
        while pending:
            cls = pending.pop()
            pending.extend(cls.__subclasses__())
            for name in ("stream_chat", "stream_complete", "astream_chat", "astream_complete"):
                if name in vars(cls):
                    found[cls, name] = vars(cls)[name]
        return found

    before = stream_methods()
    instrumentor = LlamaIndexInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    try:
        wrapped = stream_methods()
        assert wrapped[MockLLM, "stream_complete"] is not before[MockLLM, "stream_complete"]
        assert "__init_subclass__" in vars(BaseLLM)

        class DefinedWhileInstrumented(MockLLM):
            def stream_complete(self, *args: Any, **kwargs: Any) -> Any:
                return super().stream_complete(*args, **kwargs)

        defined_while_instrumented = vars(DefinedWhileInstrumented)["stream_complete"]
    finally:
        instrumentor.uninstrument()

    after = stream_methods()
    assert all(after[key] is method for key, method in before.items())
    assert "__init_subclass__" not in vars(BaseLLM)
    restored = vars(DefinedWhileInstrumented)["stream_complete"]
    assert restored is not defined_while_instrumented
    assert restored is defined_while_instrumented.__wrapped__
    deltas = [chunk.delta for chunk in MockLLM(max_tokens=2).stream_complete("Hi")]
    assert [delta.strip() for delta in deltas if delta] == ["text", "text"]
