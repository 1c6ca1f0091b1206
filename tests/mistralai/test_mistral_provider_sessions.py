"""Mistral conversations become sessions (#19): the ``conversation_id`` of the request, or of
``start``'s response (streamed or not), when no session is in force; sync and async, replayed
through the real SDK from the Conversations API cassettes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from mistral_cassettes import cassette, replay
from mistral_spans import CONVERSATION_ID
from mistralai.client import Mistral
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from convotel import TraceConfig, using_session
from convotel.call_span import Tracing
from convotel.endpoints import sync_wrapper
from convotel.mistralai import MistralAIInstrumentor
from convotel.mistralai.endpoints import ENDPOINTS

SOURCE = "convotel.session.source"
STREAMED_CONVERSATION = "conv_0198d2c6f3b27e8a9c4d1f0b2a3e5c7d"
QUESTION = "Who wrote Les Misérables?"
FOLLOW_UP = "When was it published?"
MODEL = "mistral-medium-latest"
HELLO = [{"role": "user", "content": "Say hello in French."}]


def sessions_of(spans: list[ReadableSpan]) -> list[tuple[Any, Any]]:
    return [(span.attributes.get("session.id"), span.attributes.get(SOURCE)) for span in spans]


def conversation_turns(client: Mistral, mode: str) -> None:
    """start, append (by conversation_id), start_stream: sync or async."""
    conversations = client.beta.conversations
    if mode == "sync":
        with replay.use_cassette(cassette("conversations_start")):
            conversations.start(inputs=QUESTION, model=MODEL, store=True)
        with replay.use_cassette(cassette("conversations_append")):
            conversations.append(conversation_id=CONVERSATION_ID, inputs=FOLLOW_UP)
        with replay.use_cassette(cassette("conversations_start_stream")):
            for _ in conversations.start_stream(inputs=QUESTION, model=MODEL):
                pass
        return

    async def main() -> None:
        with replay.use_cassette(cassette("conversations_start")):
            await conversations.start_async(inputs=QUESTION, model=MODEL, store=True)
        with replay.use_cassette(cassette("conversations_append")):
            await conversations.append_async(conversation_id=CONVERSATION_ID, inputs=FOLLOW_UP)
        with replay.use_cassette(cassette("conversations_start_stream")):
            async for _ in await conversations.start_stream_async(inputs=QUESTION, model=MODEL):
                pass

    asyncio.run(main())


@pytest.fixture
def configured(tracer_provider: TracerProvider) -> Iterator[Any]:
    instrumentor = MistralAIInstrumentor()

    def start(config: TraceConfig) -> Mistral:
        instrumentor.instrument(tracer_provider=tracer_provider, config=config)
        return Mistral(api_key="test-key")

    yield start
    instrumentor.uninstrument()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_conversation_id_is_the_session(
    client: Mistral, span_exporter: InMemorySpanExporter, mode: str
) -> None:
    conversation_turns(client, mode)
    spans = list(span_exporter.get_finished_spans())
    assert [span.name for span in spans] == [
        "mistralai.conversations.start",
        "mistralai.conversations.append",
        "mistralai.conversations.start_stream",
    ]
    assert sessions_of(spans) == [
        (CONVERSATION_ID, "mistral.conversation"),
        (CONVERSATION_ID, "mistral.conversation"),
        (STREAMED_CONVERSATION, "mistral.conversation"),
    ]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_explicit_session_overrides_the_conversation_id(
    client: Mistral, span_exporter: InMemorySpanExporter, mode: str
) -> None:
    with using_session("app-conv-1"):
        conversation_turns(client, mode)
    assert sessions_of(list(span_exporter.get_finished_spans())) == [("app-conv-1", "context")] * 3


def test_genai_conversation_id_follows_the_session(
    configured: Any, span_exporter: InMemorySpanExporter
) -> None:
    client = configured(TraceConfig(enable_genai_semconv=True))
    with using_session("app-conv-2"):
        conversation_turns(client, "sync")
    conversation_turns(client, "sync")
    ids = [
        span.attributes.get("gen_ai.conversation.id") for span in span_exporter.get_finished_spans()
    ]
    assert ids == ["app-conv-2"] * 3 + [CONVERSATION_ID, CONVERSATION_ID, STREAMED_CONVERSATION]


def test_provider_sessions_switched_off(
    configured: Any, span_exporter: InMemorySpanExporter
) -> None:
    conversation_turns(configured(TraceConfig(provider_sessions=False)), "sync")
    assert sessions_of(list(span_exporter.get_finished_spans())) == [(None, None)] * 3


def test_chat_calls_get_no_provider_session(
    client: Mistral, span_exporter: InMemorySpanExporter
) -> None:
    with replay.use_cassette(cassette("chat_complete")):
        client.chat.complete(
            model="mistral-small-latest", messages=HELLO, temperature=0.2, max_tokens=64
        )
    assert sessions_of(list(span_exporter.get_finished_spans())) == [(None, None)]


def test_each_binding_learns_the_session_by_its_own_config(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    """``start`` learns its session from the response by the config of the instrumentor that
    wrapped it, even while a call wrapped under another config runs inside it (the endpoint
    remembered the last call's config: the inner call switched the outer one's session off)."""
    (row,) = [w for w in ENDPOINTS if w.endpoint.span_name == "mistralai.conversations.start"]
    tracer = tracer_provider.get_tracer("test")
    on, off = TraceConfig(provider_sessions=True), TraceConfig(provider_sessions=False)
    inner = sync_wrapper(lambda: Tracing(tracer, off), row.endpoint.reading(lambda: off))
    outer = sync_wrapper(lambda: Tracing(tracer, on), row.endpoint.reading(lambda: on))

    def sdk_start(conversation: str) -> dict[str, Any]:
        if conversation == "conv_outer":
            inner(sdk_start, None, ("conv_inner",), {})
        return {"conversation_id": conversation, "outputs": []}

    outer(sdk_start, None, ("conv_outer",), {})
    assert sessions_of(list(span_exporter.get_finished_spans())) == [
        (None, None),  # inner: provider sessions off
        ("conv_outer", "mistral.conversation"),
    ]


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("explicit", [None, "app-conv-3"])
def test_append_stream_is_in_the_requested_conversation(
    client: Mistral, span_exporter: InMemorySpanExporter, mode: str, explicit: str | None
) -> None:
    conversations = client.beta.conversations

    async def append_async() -> str:
        stream = await conversations.append_stream_async(
            conversation_id=CONVERSATION_ID, inputs=FOLLOW_UP
        )
        return "".join([e.data.content async for e in stream if e.event == "message.output.delta"])

    session = using_session(explicit) if explicit else contextlib.nullcontext()
    with replay.use_cassette(cassette("conversations_append_stream")), session:
        if mode == "sync":
            stream = conversations.append_stream(conversation_id=CONVERSATION_ID, inputs=FOLLOW_UP)
            text = "".join(e.data.content for e in stream if e.event == "message.output.delta")
        else:
            text = asyncio.run(append_async())
    assert text == "It was published in 1862."
    (span,) = span_exporter.get_finished_spans()
    assert span.name == "mistralai.conversations.append_stream"
    assert span.attributes["output.value"] == text
    if explicit:
        assert sessions_of([span]) == [(explicit, "context")]
    else:
        assert sessions_of([span]) == [(CONVERSATION_ID, "mistral.conversation")]
