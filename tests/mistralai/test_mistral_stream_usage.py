"""Mistral streams report usage in their last chunk without being asked; convotel records it.

Mistral's API puts ``usage`` in the final chunk of every streamed chat, agent and FIM completion
(there is no ``stream_options`` to set), so convotel leaves the request alone and takes the
counts from that chunk: a streamed turn's tokens are what the server billed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from mistral_cassettes import cassette, replay
from mistral_spans import AGENT_ID, CHAT_MODEL, HELLO, attributes, only_span
from mistralai.client import Mistral
from openinference.semconv.trace import SpanAttributes
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from convotel import using_session
from convotel.mistralai import MistralAIInstrumentor
from convotel.sessions import TokenCounts, group_by_session

FIM_PROMPT = "def add(a, b):\n"

#: name -> (cassette, sync call, async call)
STREAMS: dict[str, tuple[str, Callable[[Mistral], Any], Callable[[Mistral], Any]]] = {
    "chat": (
        "chat_stream",
        lambda c: c.chat.stream(model=CHAT_MODEL, messages=HELLO),
        lambda c: c.chat.stream_async(model=CHAT_MODEL, messages=HELLO),
    ),
    "agents": (
        "agents_stream",
        lambda c: c.agents.stream(agent_id=AGENT_ID, messages=HELLO),
        lambda c: c.agents.stream_async(agent_id=AGENT_ID, messages=HELLO),
    ),
    "fim": (
        "fim_stream",
        lambda c: c.fim.stream(model="codestral-latest", prompt=FIM_PROMPT),
        lambda c: c.fim.stream_async(model="codestral-latest", prompt=FIM_PROMPT),
    ),
}


def span_tokens(span: Any) -> tuple[object, ...]:
    found = attributes(span)
    return (
        found.get(SpanAttributes.LLM_TOKEN_COUNT_PROMPT),
        found.get(SpanAttributes.LLM_TOKEN_COUNT_COMPLETION),
        found.get(SpanAttributes.LLM_TOKEN_COUNT_TOTAL),
    )


def sent_bodies(played: Any) -> list[dict[str, Any]]:
    return [json.loads(request.body) for request in played.requests]


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_stream_records_the_usage_of_its_last_chunk_with_the_request_unchanged(
    name: str,
    instrumentor: MistralAIInstrumentor,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
) -> None:
    cassette_name, call, _ = STREAMS[name]
    instrumentor.uninstrument()
    with replay.use_cassette(cassette(cassette_name)) as played:
        own_events = [event.model_dump() for event in call(Mistral(api_key="test-key"))]
        own_bodies = sent_bodies(played)
    instrumentor.instrument(tracer_provider=tracer_provider)

    with replay.use_cassette(cassette(cassette_name)) as played, using_session(f"m-{name}"):
        events = [event.model_dump() for event in call(Mistral(api_key="test-key"))]

    assert sent_bodies(played) == own_bodies  # no stream_options or anything else added
    assert "stream_options" not in own_bodies[0]
    assert events == own_events  # every chunk, the usage-carrying last one included
    usage = events[-1]["data"]["usage"]
    billed = (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"])
    assert span_tokens(only_span(span_exporter)) == billed
    session = group_by_session(span_exporter.get_finished_spans()).get(f"m-{name}")
    assert session is not None
    assert session.tokens == TokenCounts(*billed)


@pytest.mark.parametrize("name", sorted(STREAMS))
async def test_async_stream_records_the_usage_of_its_last_chunk(
    name: str, client: Mistral, span_exporter: InMemorySpanExporter
) -> None:
    cassette_name, _, call = STREAMS[name]
    with replay.use_cassette(cassette(cassette_name)):
        stream = await call(client)
        events = [event async for event in stream]

    usage = events[-1].data.usage
    assert usage is not None
    assert span_tokens(only_span(span_exporter)) == (
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.total_tokens,
    )
