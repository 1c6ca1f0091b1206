"""Session and user ids never cross between concurrent tasks, threads and streams."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from mistral_cassettes import cassette, replay
from mistral_spans import CHAT_MODEL, HELLO, attributes
from mistralai.client import Mistral
from openinference.semconv.trace import SpanAttributes
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from convotel import using_session, using_user
from convotel.spans import STREAM_OUTCOME

TASKS = 24


def ids_per_span(exporter: InMemorySpanExporter) -> list[tuple[str, str]]:
    pairs = []
    for span in exporter.get_finished_spans():
        found = attributes(span)
        assert found[STREAM_OUTCOME] == "completed"
        assert found[SpanAttributes.LLM_TOKEN_COUNT_TOTAL] == 13
        pairs.append((str(found[SpanAttributes.SESSION_ID]), str(found[SpanAttributes.USER_ID])))
    return pairs


async def test_concurrent_streaming_tasks_keep_their_own_session(
    client: Mistral, span_exporter: InMemorySpanExporter
) -> None:
    async def conversation(number: int) -> str:
        with using_session(f"s-{number}"), using_user(f"u-{number}"):
            stream = await client.chat.stream_async(model=CHAT_MODEL, messages=HELLO)
        # Iterated outside the ``with``: the span belongs to the context the call started in.
        text = []
        async with stream:
            async for event in stream:
                text.append(str(event.data.choices[0].delta.content))
                await asyncio.sleep(0)  # interleave the streams chunk by chunk
        return "".join(text)

    with replay.use_cassette(cassette("chat_stream"), allow_playback_repeats=True):
        replies = await asyncio.gather(*(conversation(number) for number in range(TASKS)))

    assert replies == ["Bonjour !"] * TASKS
    pairs = ids_per_span(span_exporter)
    assert sorted(pairs) == sorted((f"s-{n}", f"u-{n}") for n in range(TASKS))


def test_threads_streaming_at_once_keep_their_own_session(
    client: Mistral, span_exporter: InMemorySpanExporter
) -> None:
    def conversation(number: int) -> str:
        with (
            using_session(f"s-{number}"),
            using_user(f"u-{number}"),
            client.chat.stream(model=CHAT_MODEL, messages=HELLO) as stream,
        ):
            return "".join(str(event.data.choices[0].delta.content) for event in stream)

    with (
        replay.use_cassette(cassette("chat_stream"), allow_playback_repeats=True),
        ThreadPoolExecutor(max_workers=6) as pool,
    ):
        replies = list(pool.map(conversation, range(TASKS)))

    assert replies == ["Bonjour !"] * TASKS
    assert sorted(ids_per_span(span_exporter)) == sorted((f"s-{n}", f"u-{n}") for n in range(TASKS))
