"""Memory: 100,000 instrumented calls, streams closed early and abandoned, leave nothing behind.

The four instrumentors are on; spans go to an exporter that only tallies them. Every call enters
the real, instrumented SDK method; below it, the cheapest answer that still gives each call
fresh response objects built from the recorded cassettes:

* OpenAI, 93,870 calls (93,060 + 810 traced), sync and async: plain; streamed to the end,
  closed after one chunk or abandoned after one chunk; one call in nine failing with HTTP 500.
  ``chat.completions.create`` runs in full; the client's ``request()`` returns a copy of the
  recorded completion, a real ``Stream``/``AsyncStream`` over copies of the recorded chunks, or
  raises a fresh ``InternalServerError`` (the SDK's HTTP send and parsing cost ~2 ms a call).
* LlamaIndex, 2,928 (2,880 + 48), the plain and streamed shapes (``chat``, ``stream_chat``,
  ``achat``, ``astream_chat``) of the demo's ``OpenAIClientLLM`` over those clients.
* DSPy, 3,030 (3,000 + 30): ``Predict`` called and ``acall``-ed on DSPy's ``DummyLM``, with
  DSPy's own history and trace off (DSPy keeps the last 10,000 of each by design).
* Mistral, 172 (160 + 12): plain, closed early, streamed and abandoned, over an httpx2
  ``MockTransport``; the SDK builds pydantic models for every call (~10 ms), hence the share.

Ten batches of 9,910 calls, then three of 300 under ``tracemalloc`` (which slows every
allocation about tenfold). After each batch, once the event loop has finalized dropped async
generators and a full collection ran: no span, OpenTelemetry context, call, stream proxy,
context-step generator, response, chunk, stream, error or prediction object is alive; every
started span has ended; the batch finished exactly the spans (names, stream outcomes, statuses)
its calls finish when made alone; the interpreter's allocated blocks do not grow from batch 2
on. Traced memory does not grow between the first and the last traced batch. Run time: ~45 s on
two busy cores.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import tracemalloc
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import dspy
import httpx2
import mistralai.client.models as mistral_models
import openai
import pytest
from dspy.utils.dummies import DummyLM
from fault_drivers import SpanLifecycle, all_instrumented
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, MessageRole
from mistralai.client import Mistral
from mistralai.client.utils.eventstreaming import EventStream, EventStreamAsync
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from reliability_adapters import cassette_answers

from convotel import using_session, using_user
from convotel.demo.llama_index_llm import OpenAIClientLLM
from convotel.llama_index.handlers import OpenCall
from convotel.llama_index.streaming import AsyncContextStepGenerator, ContextStepGenerator
from convotel.spans import STREAM_OUTCOME, AsyncStreamProxy, CallSpan, StreamProxy

OPENAI_MODEL = "gpt-4o-mini"
FAILING_MODEL = "gpt-answers-http-500"
MISTRAL_MODEL = "mistral-small-latest"
MESSAGES: Any = [{"role": "user", "content": "Say hello."}]
CHAT = [ChatMessage(role=MessageRole.USER, content="Say hello.")]
QUESTION = "What is the capital of France?"

#: Objects a call creates that nothing may keep once it is over.
PER_CALL_TYPES: tuple[type, ...] = (
    ReadableSpan,
    Context,
    CallSpan,
    StreamProxy,
    AsyncStreamProxy,
    ContextStepGenerator,
    AsyncContextStepGenerator,
    OpenCall,
    ChatCompletion,
    ChatCompletionChunk,
    openai.Stream,
    openai.AsyncStream,
    openai.APIStatusError,
    httpx2.Response,
    mistral_models.ChatCompletionResponse,
    mistral_models.CompletionEvent,
    EventStream,
    EventStreamAsync,
    ChatResponse,
    dspy.Prediction,
)
#: The stream outcome or status a span of a call shape (named in its function name) must show.
SHAPE_MARKS = {"abandoned": "abandoned", "closed": "closed_early", "error": "ERROR"}
#: Blocks the interpreter may gain between batch 2 and the last batch (a leak of one object a
#: call would add ~9,910 a batch).
BLOCK_GROWTH_LIMIT = 2_000
#: Bytes traced memory may gain between the first and the last traced batch (300 calls each).
TRACED_GROWTH_LIMIT = 32 * 1024


# --- answers ----------------------------------------------------------------------------------


def recorded(name: str) -> httpx2.Response:
    status, headers, body = cassette_answers(name)[0]
    request = httpx2.Request("POST", "https://api.example/v1/chat/completions")
    return httpx2.Response(status, headers=headers, content=body, request=request)


def recorded_events(name: str) -> list[dict[str, Any]]:
    """The JSON events of a recorded ``text/event-stream`` body."""
    body = cassette_answers(name)[0][2].decode()
    lines = (line.removeprefix("data: ") for line in body.splitlines())
    return [json.loads(line) for line in lines if line.startswith("{")]


#: Parsed once by the SDK's own model construction; every call gets fresh copies.
COMPLETION = ChatCompletion.construct(**json.loads(cassette_answers("openai/chat_basic")[0][2]))
CHUNKS = [ChatCompletionChunk.construct(**e) for e in recorded_events("openai/chat_stream_usage")]
STREAM_RESPONSE = recorded("openai/chat_stream_usage")
TEMPLATES = {id(COMPLETION), *map(id, CHUNKS), id(STREAM_RESPONSE)}


class AnsweredStream(openai.Stream[ChatCompletionChunk]):
    """A real ``openai.Stream`` over fresh copies of the recorded chunks."""

    def __init__(self, client: openai.OpenAI) -> None:
        super().__init__(cast_to=ChatCompletionChunk, response=STREAM_RESPONSE, client=client)
        self._iterator = iter([chunk.model_copy() for chunk in CHUNKS])


class AnsweredAsyncStream(openai.AsyncStream[ChatCompletionChunk]):
    def __init__(self, client: openai.AsyncOpenAI) -> None:
        super().__init__(cast_to=ChatCompletionChunk, response=STREAM_RESPONSE, client=client)
        self._iterator = self._chunks([chunk.model_copy() for chunk in CHUNKS])

    @staticmethod
    async def _chunks(chunks: list[ChatCompletionChunk]) -> AsyncIterator[ChatCompletionChunk]:
        for chunk in chunks:
            yield chunk


def raise_for_failing_model(options: Any) -> None:
    if options.json_data.get("model") == FAILING_MODEL:
        response = httpx2.Response(500, request=STREAM_RESPONSE.request)
        raise openai.InternalServerError("The server had an error", response=response, body=None)


class AnsweredOpenAI(openai.OpenAI):
    """Answers ``request()`` (below the instrumented ``create``) with fresh recorded objects,
    or with a fresh HTTP 500 error for :data:`FAILING_MODEL`."""

    def request(
        self, cast_to: Any, options: Any, *, stream: bool = False, stream_cls: Any = None
    ) -> Any:
        raise_for_failing_model(options)
        return AnsweredStream(self) if stream else COMPLETION.model_copy()


class AnsweredAsyncOpenAI(openai.AsyncOpenAI):
    async def request(
        self, cast_to: Any, options: Any, *, stream: bool = False, stream_cls: Any = None
    ) -> Any:
        raise_for_failing_model(options)
        return AnsweredAsyncStream(self) if stream else COMPLETION.model_copy()


def mistral_answer(request: httpx2.Request) -> httpx2.Response:
    streamed = b'"stream":true' in request.content
    return recorded("mistralai/chat_stream" if streamed else "mistralai/chat_complete")


Tallied = tuple[str, str, str]  # span name, stream outcome, status


class TallyExporter(SpanExporter):
    """Counts exported spans by (name, stream outcome, status) and keeps nothing else."""

    def __init__(self) -> None:
        self.tally: Counter[Tallied] = Counter()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            outcome = str((span.attributes or {}).get(STREAM_OUTCOME, "-"))
            self.tally[span.name, outcome, span.status.status_code.name] += 1
        return SpanExportResult.SUCCESS


# --- the calls --------------------------------------------------------------------------------


@dataclass
class Clients:
    openai: AnsweredOpenAI
    async_openai: AnsweredAsyncOpenAI
    mistral: Mistral
    llama_index: OpenAIClientLLM
    lm: DummyLM
    predict: dspy.Predict


Call = Callable[[Clients], Awaitable[None]]


def chat_shapes(
    plain: Callable[[Clients], object],
    plain_async: Callable[[Clients], Awaitable[object]],
    stream: Callable[[Clients], Any],
    stream_async: Callable[[Clients], Awaitable[Any]],
    close_async: str = "close",
) -> list[Call]:
    """A chat API's eight call shapes: plain, and streamed to the end, closed after one chunk or
    abandoned after one chunk (dropped on return), each sync and async."""

    async def call_plain(c: Clients) -> None:
        plain(c)

    async def call_plain_async(c: Clients) -> None:
        await plain_async(c)

    def streamed(shape: str) -> Call:
        async def call(c: Clients) -> None:
            chunks = stream(c)
            if shape == "full":
                for _ in chunks:
                    pass
                return
            next(iter(chunks))
            if shape == "closed":
                chunks.close()

        call.__name__ = f"stream_{shape}"
        return call

    def streamed_async(shape: str) -> Call:
        async def call(c: Clients) -> None:
            chunks = await stream_async(c)
            if shape == "full":
                async for _ in chunks:
                    pass
                return
            await anext(aiter(chunks))
            if shape == "closed":
                await getattr(chunks, close_async)()

        call.__name__ = f"stream_{shape}_async"
        return call

    shapes = ("full", "closed", "abandoned")
    return [
        call_plain,
        call_plain_async,
        *(streamed(shape) for shape in shapes),
        *(streamed_async(shape) for shape in shapes),
    ]


def openai_calls() -> list[Call]:
    def create(client: Any, model: str = OPENAI_MODEL, **stream: bool) -> Any:
        return client.chat.completions.create(model=model, messages=MESSAGES, **stream)

    async def error(c: Clients) -> None:
        with pytest.raises(openai.InternalServerError):
            create(c.openai, FAILING_MODEL)

    async def error_async(c: Clients) -> None:
        with pytest.raises(openai.InternalServerError):
            await create(c.async_openai, FAILING_MODEL)

    shapes = chat_shapes(
        lambda c: create(c.openai),
        lambda c: create(c.async_openai),
        lambda c: create(c.openai, stream=True),
        lambda c: create(c.async_openai, stream=True),
    )
    return [*shapes, *shapes, error, error_async]  # one call in nine fails


def llama_index_calls() -> list[Call]:
    return chat_shapes(
        lambda c: c.llama_index.chat(CHAT),
        lambda c: c.llama_index.achat(CHAT),
        lambda c: c.llama_index.stream_chat(CHAT),
        lambda c: c.llama_index.astream_chat(CHAT),
        close_async="aclose",
    )


def dspy_calls() -> list[Call]:
    async def predict(c: Clients) -> None:
        with dspy.context(lm=c.lm, disable_history=True, trace=None):
            assert c.predict(question=QUESTION).answer == "Paris"

    async def predict_async(c: Clients) -> None:
        with dspy.context(lm=c.lm, disable_history=True, trace=None):
            assert (await c.predict.acall(question=QUESTION)).answer == "Paris"

    return [predict, predict_async]


def mistral_calls() -> list[Call]:
    async def plain(c: Clients) -> None:
        c.mistral.chat.complete(model=MISTRAL_MODEL, messages=MESSAGES)

    async def stream_closed(c: Clients) -> None:
        with c.mistral.chat.stream(model=MISTRAL_MODEL, messages=MESSAGES) as events:
            next(iter(events))

    async def stream_full_async(c: Clients) -> None:
        events = await c.mistral.chat.stream_async(model=MISTRAL_MODEL, messages=MESSAGES)
        async for _ in events:
            pass

    async def stream_abandoned_async(c: Clients) -> None:
        events = await c.mistral.chat.stream_async(model=MISTRAL_MODEL, messages=MESSAGES)
        await anext(aiter(events))

    return [plain, stream_closed, stream_full_async, stream_abandoned_async]


CALLS = {
    "openai": openai_calls(),
    "llama_index": llama_index_calls(),
    "dspy": dspy_calls(),
    "mistral": mistral_calls(),
}


def batch(openai: int, llama_index: int, dspy: int, mistral: int) -> list[Call]:
    """``n`` calls per adapter, cycling through its call shapes (``n`` a multiple of them)."""
    calls: list[Call] = []
    for adapter, count in (
        ("openai", openai),
        ("llama_index", llama_index),
        ("dspy", dspy),
        ("mistral", mistral),
    ):
        shapes = CALLS[adapter]
        assert count % len(shapes) == 0, f"{adapter}: {count} calls, {len(shapes)} shapes"
        calls += shapes * (count // len(shapes))
    return calls


MAIN_BATCH = batch(openai=9_306, llama_index=288, dspy=300, mistral=16)
MAIN_BATCHES = 10
TRACED_BATCH = batch(openai=270, llama_index=16, dspy=10, mistral=4)
TRACED_BATCHES = 3


# --- measuring ----------------------------------------------------------------------------------


#: How long the event loop waits, releasing the GIL, for worker threads to finish their work item.
WORKER_GRACE_S = 0.02


async def settle() -> None:
    """Collect all garbage, and let the event loop finish closing the async generators it
    finalizes (each collection may schedule more) until nothing is left to run.

    SDKs hand work to ``asyncio.to_thread`` (Mistral's async client runs its hooks there with
    the response and a copy of the context, so the call's span): a pool thread drops its work
    item only after it has handed back the result, so the loop waits a moment, releasing the
    GIL, before collecting. A worker that kept its item for good would still fail the test.
    """
    for _ in range(20):
        await asyncio.sleep(WORKER_GRACE_S)  # idle in the selector: pool threads get the GIL
        while gc.collect():  # a finalizer may free more (a collection is not always enough)
            pass
        await asyncio.sleep(0)  # the collection's finalizer callbacks create their tasks
        pending = asyncio.all_tasks() - {asyncio.current_task()}
        if not pending:
            return
        await asyncio.gather(*pending)
    raise AssertionError(f"the event loop keeps running tasks: {pending}")


def live_per_call_objects() -> dict[str, int]:
    counts: Counter[str] = Counter()
    for obj in gc.get_objects():
        kind = type(obj)  # not isinstance: a proxy would pass for what it wraps
        if issubclass(kind, PER_CALL_TYPES) and id(obj) not in TEMPLATES:
            counts[f"{kind.__module__}.{kind.__qualname__}"] += 1
    return dict(counts)


@dataclass
class BatchRecord:
    live: dict[str, int]
    blocks: int
    open_spans: list[str]
    tally: Counter[Tallied]


# --- fixtures and the test -----------------------------------------------------------------------


@pytest.fixture
def exporter() -> TallyExporter:
    return TallyExporter()


@pytest.fixture
def provider(exporter: TallyExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


@pytest.fixture
def clients(provider: TracerProvider) -> Iterator[Clients]:
    with all_instrumented(provider):
        yield _clients()


def _clients() -> Clients:
    sync_openai = AnsweredOpenAI(api_key="sk-memory", max_retries=0)
    async_openai = AnsweredAsyncOpenAI(api_key="sk-memory", max_retries=0)
    mistral = Mistral(
        api_key="memory",
        client=httpx2.Client(transport=httpx2.MockTransport(mistral_answer)),
        async_client=httpx2.AsyncClient(transport=httpx2.MockTransport(mistral_answer)),
    )
    return Clients(
        sync_openai,
        async_openai,
        mistral,
        OpenAIClientLLM(sync_openai, async_client=async_openai, model=OPENAI_MODEL, max_tokens=32),
        DummyLM({QUESTION: {"answer": "Paris"}}),
        dspy.Predict("question -> answer"),
    )


@pytest.fixture
def frozen_heap(clients: Clients) -> Iterator[None]:
    """Move every object alive now out of the collector's sight: full collections stay fast,
    and ``gc.get_objects()`` lists only what the calls create."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("frozen_heap")
async def test_100k_calls_with_closed_and_abandoned_streams_keep_memory_flat(
    clients: Clients, provider: TracerProvider, exporter: TallyExporter
) -> None:
    lifecycle = SpanLifecycle()
    provider.add_span_processor(lifecycle)

    # What each call shape finishes when made alone: the spans every batch must add up to.
    alone: dict[Call, Counter[Tallied]] = {}
    with using_session("s-memory"), using_user("u-memory"):
        for call in dict.fromkeys(call for calls in CALLS.values() for call in calls):
            before = Counter(exporter.tally)
            await call(clients)
            await settle()
            alone[call] = exporter.tally - before
            assert alone[call], f"{call.__qualname__} finished no span"
            marks = {mark for _, *marks in alone[call] for mark in marks}
            for shape, mark in SHAPE_MARKS.items():
                assert shape not in call.__name__ or mark in marks, (call, alone[call])

    async def run(calls: list[Call]) -> BatchRecord:
        before = Counter(exporter.tally)
        with using_session("s-memory"), using_user("u-memory"):
            for call in calls:
                await call(clients)
        await settle()
        return BatchRecord(
            live_per_call_objects(),
            sys.getallocatedblocks(),
            lifecycle.wait_all_ended(0),
            exporter.tally - before,
        )

    def expected_tally(calls: list[Call]) -> Counter[Tallied]:
        total: Counter[Tallied] = Counter()
        for call in calls:
            total.update(alone[call])
        return total

    main = [await run(MAIN_BATCH) for _ in range(MAIN_BATCHES)]

    tracemalloc.start()
    try:
        traced = [await run(TRACED_BATCH)]
        first_traced, first_snapshot = (
            tracemalloc.get_traced_memory()[0],
            tracemalloc.take_snapshot(),
        )
        traced += [await run(TRACED_BATCH) for _ in range(TRACED_BATCHES - 1)]
        traced_growth = tracemalloc.get_traced_memory()[0] - first_traced
        top = tracemalloc.take_snapshot().compare_to(first_snapshot, "lineno")[:8]
    finally:
        tracemalloc.stop()

    assert len(MAIN_BATCH) * MAIN_BATCHES + len(TRACED_BATCH) * TRACED_BATCHES == 100_000
    for number, record in enumerate([*main, *traced], start=1):
        calls = MAIN_BATCH if number <= MAIN_BATCHES else TRACED_BATCH
        assert record.open_spans == [], f"batch {number} left spans open"
        assert record.live == {}, f"batch {number} left objects alive"
        assert record.tally == expected_tally(calls), f"batch {number} finished other spans"
    block_growth = max(record.blocks for record in main[1:]) - main[1].blocks
    assert block_growth < BLOCK_GROWTH_LIMIT, [record.blocks for record in main]
    assert traced_growth < TRACED_GROWTH_LIMIT, "\n".join(str(stat) for stat in top)
