"""Load: 1,000 concurrent asyncio sessions and 32 threads through all four instrumented SDKs.

Setup: the OpenAI, Mistral, LlamaIndex and DSPy instrumentors on one tracer provider. OpenAI,
Mistral and LlamaIndex (whose model, the demo's ``OpenAIClientLLM``, calls the OpenAI
clients) talk to :class:`~convotel.demo.fake_server.FakeLLMServer`; DSPy's default engine talks to
the DSPy tests' loopback server. Listen backlogs and the OpenAI/Mistral client pools admit 1,000
connections (DSPy's engine keeps its own pool of 100, which ``dspy.LM`` does not expose).

Load, all at once: 1,000 asyncio sessions (250 per adapter, async clients: ``AsyncOpenAI``,
``*_async``, ``achat``/``astream_chat``, ``acall`` and async ``streamify``) released together by
one event, and 128 sync sessions (32 per adapter) on a ``ThreadPoolExecutor(32)``. Each session
runs in ``using_session(f"s-{n}")`` + ``using_user(f"u-{n}")`` and makes two calls: a plain one,
then a streamed one consumed to the end (even ``n``) or closed after its first chunk (odd ``n``).
DSPy's async ``streamify`` generator cannot be closed early (DSPy leaves its inner generator to
the event loop's finalizer, which fails in anyio), so async DSPy sessions always consume it.
Every message names its session (``... from s-<n> ...``).

Checks: every span started has ended (a span processor tracks each one); the model calls really
overlapped (at least 750 LLM spans open at once); every finished span carries the session and
user of the session its message names; each session has exactly the spans its two calls make
when run alone (same names, kinds, stream outcomes and statuses), so none was lost, doubled or
moved to another session; the servers saw exactly one request per call (no hidden retry).
Run time: about 25 s on two busy cores.
"""

from __future__ import annotations

import asyncio
import re
import sys
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import dspy
import httpx2
import openai
import pytest
from fault_drivers import SpanLifecycle, all_instrumented
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from mistralai.client import Mistral
from openinference.semconv.trace import OpenInferenceSpanKindValues, SpanAttributes
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from convotel import using_session, using_user
from convotel.demo.fake_server import FakeLLMServer
from convotel.demo.llama_index_llm import OpenAIClientLLM
from convotel.spans import STREAM_OUTCOME

sys.path.insert(0, str(Path(__file__).parents[1] / "dspy"))  # the DSPy tests' loopback server
from dspy_loopback import LoopbackServer

Adapter = Literal["openai", "mistral", "llama_index", "dspy"]
Call = Literal["plain", "stream", "stream_closed_early"]

ADAPTERS: tuple[Adapter, ...] = ("openai", "mistral", "llama_index", "dspy")
CALLS: tuple[Call, ...] = ("plain", "stream", "stream_closed_early")
ASYNC_SESSIONS = 1_000
THREAD_SESSIONS = 128
THREADS = 32
DSPY_STREAM_WORKERS = 4 * THREADS  # early-closed sync streams finish on DSPy's own threads
CONNECTIONS = 1_000
OPENAI_MODEL = "gpt-4o-mini"
MISTRAL_MODEL = "mistral-small-latest"
MAX_TOKENS = 16
CALIBRATION_BASE = 100_000  # session numbers of the calls run alone, apart from the load
TIMEOUT = 120.0

LLM = OpenInferenceSpanKindValues.LLM.value
KIND = SpanAttributes.OPENINFERENCE_SPAN_KIND
SESSION = SpanAttributes.SESSION_ID
USER = SpanAttributes.USER_ID
_ASKED_FROM = re.compile(r"\bfrom (s-\d+)\b")
_INPUT_KEYS = (SpanAttributes.INPUT_VALUE, SpanAttributes.LLM_INPUT_MESSAGES)

Shape = tuple[str, str, str, str]  # span name, kind, stream outcome, status


@dataclass(frozen=True)
class SessionPlan:
    number: int
    adapter: Adapter
    asynchronous: bool

    @property
    def session(self) -> str:
        return f"s-{self.number}"

    @property
    def calls(self) -> tuple[Call, Call]:
        early = self.number % 2 == 1 and not (self.adapter == "dspy" and self.asynchronous)
        return "plain", "stream_closed_early" if early else "stream"


def message(number: int) -> str:
    return f"Plan a weekend in Lisbon for the traveller from s-{number}, please."


def peak_overlap(spans: Sequence[ReadableSpan]) -> int:
    """The largest number of these spans open at the same instant."""
    edges = sorted(
        edge for span in spans for edge in ((span.start_time or 0, 1), (span.end_time or 0, -1))
    )
    open_now = peak = 0
    for _, step in edges:
        open_now += step
        peak = max(peak, open_now)
    return peak


# --- the SDKs under test ----------------------------------------------------------------------


@dataclass
class Sdks:
    sync_openai: openai.OpenAI
    async_openai: openai.AsyncOpenAI
    mistral: Mistral
    llama_index: OpenAIClientLLM
    lm: dspy.LM
    predict: dspy.Predict


@pytest.fixture(scope="module")
def llm_server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server


@pytest.fixture(scope="module")
def dspy_server() -> Iterator[LoopbackServer]:
    server = LoopbackServer().start()
    yield server
    server.stop()


@pytest.fixture
def instrumented(tracer_provider: TracerProvider) -> Iterator[None]:
    with all_instrumented(tracer_provider):
        yield


@pytest.fixture
async def sdks(
    instrumented: None, llm_server: FakeLLMServer, dspy_server: LoopbackServer
) -> AsyncIterator[Sdks]:
    """The clients, with pools as large as the load (httpx's default is 100 connections)."""
    limits = httpx2.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    timeout = httpx2.Timeout(60.0)
    http, async_http = httpx2.Client(limits=limits), httpx2.AsyncClient(limits=limits)
    sync_openai = openai.OpenAI(
        base_url=llm_server.openai_base_url,
        api_key="sk-load",
        max_retries=0,
        timeout=timeout,
        http_client=http,
    )
    async_openai = openai.AsyncOpenAI(
        base_url=llm_server.openai_base_url,
        api_key="sk-load",
        max_retries=0,
        timeout=timeout,
        http_client=async_http,
    )
    mistral = Mistral(
        api_key="load",
        server_url=llm_server.mistral_server_url,
        client=http,
        async_client=async_http,
        timeout_ms=60_000,
    )
    lm = dspy.LM(
        "openai/gpt-4o-mini",
        api_base=dspy_server.base_url,
        api_key="sk-load",
        cache=False,
        num_retries=0,
        max_tokens=MAX_TOKENS,
    )
    llm = OpenAIClientLLM(
        sync_openai, async_client=async_openai, model=OPENAI_MODEL, max_tokens=MAX_TOKENS
    )
    yield Sdks(sync_openai, async_openai, mistral, llm, lm, dspy.Predict("question -> answer"))
    http.close()
    await async_http.aclose()


# --- one call per adapter, sync and async ------------------------------------------------------


def mistral_text(answer: Any) -> str:
    message = answer.choices[0].message
    return str(message.content) if message is not None else ""


def call_sync(sdks: Sdks, adapter: Adapter, call: Call, number: int) -> str:
    """Make one call; return the text received (empty when the stream was closed early)."""
    text = message(number)
    early = call == "stream_closed_early"
    if adapter == "openai":
        messages: Any = [{"role": "user", "content": text}]
        if call == "plain":
            reply = sdks.sync_openai.chat.completions.create(
                model=OPENAI_MODEL, messages=messages, max_tokens=MAX_TOKENS
            )
            return reply.choices[0].message.content or ""
        stream = sdks.sync_openai.chat.completions.create(
            model=OPENAI_MODEL, messages=messages, max_tokens=MAX_TOKENS, stream=True
        )
        if early:
            next(iter(stream))
            stream.close()
            return ""
        with stream:
            return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    if adapter == "mistral":
        messages = [{"role": "user", "content": text}]
        if call == "plain":
            answer = sdks.mistral.chat.complete(
                model=MISTRAL_MODEL, messages=messages, max_tokens=MAX_TOKENS
            )
            return mistral_text(answer)
        with sdks.mistral.chat.stream(
            model=MISTRAL_MODEL, messages=messages, max_tokens=MAX_TOKENS
        ) as events:
            if early:
                next(iter(events))
                return ""
            return "".join(str(e.data.choices[0].delta.content or "") for e in events)
    if adapter == "llama_index":
        chat = [ChatMessage(role=MessageRole.USER, content=text)]
        if call == "plain":
            return sdks.llama_index.chat(chat).message.content or ""
        responses = sdks.llama_index.stream_chat(chat)
        if early:
            next(responses)
            responses.close()
            return ""
        return "".join(response.delta or "" for response in responses)
    question = f"question from s-{number}"
    # DSPy shares one anyio CapacityLimiter (async_max_workers, default 8) among the event loops
    # of all sync streamify calls; a caller waiting for it from another loop is never woken, so
    # more concurrent sync streams than its size deadlock DSPy itself. Size it above the load.
    with dspy.context(lm=sdks.lm, async_max_workers=DSPY_STREAM_WORKERS):
        if call == "plain":
            return str(sdks.predict(question=question).answer)
        values = dspy.streamify(sdks.predict, async_streaming=False)(question=question)
        if early:
            next(values)
            values.close()
            return ""
        return str(next(v for v in values if isinstance(v, dspy.Prediction)).answer)


async def call_async(sdks: Sdks, adapter: Adapter, call: Call, number: int) -> str:
    """The async twin of :func:`call_sync`; streams yield to the loop between chunks."""
    text = message(number)
    early = call == "stream_closed_early"
    if adapter == "openai":
        messages: Any = [{"role": "user", "content": text}]
        if call == "plain":
            reply = await sdks.async_openai.chat.completions.create(
                model=OPENAI_MODEL, messages=messages, max_tokens=MAX_TOKENS
            )
            return reply.choices[0].message.content or ""
        stream = await sdks.async_openai.chat.completions.create(
            model=OPENAI_MODEL, messages=messages, max_tokens=MAX_TOKENS, stream=True
        )
        if early:
            await anext(aiter(stream))
            await stream.close()
            return ""
        parts = []
        async with stream:
            async for chunk in stream:
                parts += [chunk.choices[0].delta.content or ""] if chunk.choices else []
                await asyncio.sleep(0)
        return "".join(parts)
    if adapter == "mistral":
        messages = [{"role": "user", "content": text}]
        if call == "plain":
            answer = await sdks.mistral.chat.complete_async(
                model=MISTRAL_MODEL, messages=messages, max_tokens=MAX_TOKENS
            )
            return mistral_text(answer)
        events = await sdks.mistral.chat.stream_async(
            model=MISTRAL_MODEL, messages=messages, max_tokens=MAX_TOKENS
        )
        parts = []
        async with events:
            async for event in events:
                if early:
                    return ""
                parts.append(str(event.data.choices[0].delta.content or ""))
                await asyncio.sleep(0)
        return "".join(parts)
    if adapter == "llama_index":
        chat = [ChatMessage(role=MessageRole.USER, content=text)]
        if call == "plain":
            return (await sdks.llama_index.achat(chat)).message.content or ""
        responses = await sdks.llama_index.astream_chat(chat)
        if early:
            await anext(responses)
            await responses.aclose()
            return ""
        parts = []
        async for response in responses:
            parts.append(response.delta or "")
            await asyncio.sleep(0)
        return "".join(parts)
    question = f"question from s-{number}"
    with dspy.context(lm=sdks.lm):
        if call == "plain":
            return str((await sdks.predict.acall(question=question)).answer)
        assert not early, "DSPy's async streamify cannot be closed early"
        prediction = None
        async for value in dspy.streamify(sdks.predict, is_async_program=True)(question=question):
            if isinstance(value, dspy.Prediction):
                prediction = value
        return str(prediction.answer) if prediction is not None else ""


def expected_reply(plan: SessionPlan, call: Call, reply: str) -> bool:
    if call == "stream_closed_early":
        return reply == ""
    if plan.adapter == "dspy":  # the DSPy server echoes the question: proves no crossed replies
        return reply == f"answer to question from {plan.session}"
    return bool(reply)


# --- reading the spans --------------------------------------------------------------------------


def shape(span: ReadableSpan) -> Shape:
    attributes = span.attributes or {}
    return (
        span.name,
        str(attributes.get(KIND)),
        str(attributes.get(STREAM_OUTCOME, "-")),
        span.status.status_code.name,
    )


def spans_by_session(finished: Sequence[ReadableSpan]) -> dict[str, list[ReadableSpan]]:
    """Group spans by the session their input names, failing on any span whose ids differ."""
    grouped: dict[str, list[ReadableSpan]] = {}
    for span in finished:
        attributes = span.attributes or {}
        named = {
            session
            for key, value in attributes.items()
            if key.startswith(_INPUT_KEYS)
            for session in _ASKED_FROM.findall(str(value))
        }
        assert len(named) == 1, f"{span.name} input names sessions {named}"
        (session,) = named
        ids = (attributes.get(SESSION), attributes.get(USER))
        assert ids == (session, session.replace("s-", "u-")), f"{span.name} of {session}: {ids}"
        grouped.setdefault(session, []).append(span)
    return grouped


async def calibrate(
    sdks: Sdks, exporter: InMemorySpanExporter, lifecycle: SpanLifecycle
) -> dict[tuple[Adapter, bool, Call], list[Shape]]:
    """The spans of each kind of call, made alone (in its own session, nothing else running)."""
    variants: list[tuple[Adapter, bool, Call]] = [
        (adapter, asynchronous, call)
        for adapter in ADAPTERS
        for asynchronous in (False, True)
        for call in CALLS
        if not (adapter == "dspy" and asynchronous and call == "stream_closed_early")
    ]
    for index, (adapter, asynchronous, call) in enumerate(variants):
        number = CALIBRATION_BASE + index
        with using_session(f"s-{number}"), using_user(f"u-{number}"):
            if asynchronous:
                await call_async(sdks, adapter, call, number)
            else:
                await asyncio.to_thread(call_sync, sdks, adapter, call, number)
    assert lifecycle.wait_all_ended(TIMEOUT) == [], "spans left open by calls made alone"
    grouped = spans_by_session(exporter.get_finished_spans())
    shapes = {
        variant: sorted(shape(span) for span in grouped[f"s-{CALIBRATION_BASE + index}"])
        for index, variant in enumerate(variants)
    }
    for (adapter, _, call), spans in shapes.items():
        llm_spans = [s for s in spans if s[1] == LLM]
        assert len(llm_spans) == 1, f"{adapter} {call}: one model call, one LLM span: {spans}"
        assert all(s[3] == "OK" for s in spans), spans
        if call != "plain" and adapter != "dspy":  # DSPy streams are internal to the program
            outcome = "completed" if call == "stream" else "closed_early"
            assert llm_spans[0][2] == outcome, f"{adapter} {call}: {spans}"
    exporter.clear()
    return shapes


# --- the test ---------------------------------------------------------------------------------


async def test_thousand_async_sessions_and_32_threads_keep_every_span_in_its_session(
    sdks: Sdks,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    llm_server: FakeLLMServer,
    dspy_server: LoopbackServer,
) -> None:
    lifecycle = SpanLifecycle()
    tracer_provider.add_span_processor(lifecycle)
    shapes = await calibrate(sdks, span_exporter, lifecycle)
    served_before = len(llm_server.served), len(dspy_server.requests)

    async_plans = [SessionPlan(n, ADAPTERS[n % 4], True) for n in range(ASYNC_SESSIONS)]
    thread_plans = [
        SessionPlan(ASYNC_SESSIONS + n, ADAPTERS[n % 4], False) for n in range(THREAD_SESSIONS)
    ]
    release_tasks, release_threads = asyncio.Event(), threading.Event()
    arrived = 0

    async def async_session(plan: SessionPlan) -> list[str]:
        nonlocal arrived
        with using_session(plan.session), using_user(f"u-{plan.number}"):
            arrived += 1
            if arrived == ASYNC_SESSIONS:  # every task is inside its session: go, all at once
                release_threads.set()
                release_tasks.set()
            await release_tasks.wait()
            return [await call_async(sdks, plan.adapter, c, plan.number) for c in plan.calls]

    def thread_session(plan: SessionPlan) -> list[str]:
        if not release_threads.wait(TIMEOUT):
            raise TimeoutError("the asyncio sessions never all started")
        with using_session(plan.session), using_user(f"u-{plan.number}"):
            return [call_sync(sdks, plan.adapter, c, plan.number) for c in plan.calls]

    with ThreadPoolExecutor(THREADS) as pool:
        try:
            futures = [pool.submit(thread_session, plan) for plan in thread_plans]
            replies = await asyncio.wait_for(
                asyncio.gather(
                    *(async_session(plan) for plan in async_plans),
                    *(asyncio.wrap_future(future) for future in futures),
                ),
                TIMEOUT,
            )
        finally:
            release_threads.set()

    plans = [*async_plans, *thread_plans]
    wrong = [
        (plan, reply)
        for plan, session_replies in zip(plans, replies, strict=True)
        for call, reply in zip(plan.calls, session_replies, strict=True)
        if not expected_reply(plan, call, reply)
    ]
    assert not wrong, wrong[:5]

    # Every span started has ended (early-closed DSPy streams end on DSPy's producer threads).
    assert lifecycle.wait_all_ended(TIMEOUT) == []
    finished = span_exporter.get_finished_spans()
    llm_spans = [span for span in finished if (span.attributes or {}).get(KIND) == LLM]
    assert peak_overlap(llm_spans) >= ASYNC_SESSIONS * 3 // 4, "the model calls did not overlap"

    # Every span in the session (and of the user) its message names, and each session has
    # exactly the spans its calls make when run alone.
    grouped = spans_by_session(finished)
    assert set(grouped) == {plan.session for plan in plans}
    mismatched = {}
    for plan in plans:
        expected = sorted(
            s for call in plan.calls for s in shapes[plan.adapter, plan.asynchronous, call]
        )
        actual = sorted(shape(span) for span in grouped[plan.session])
        if actual != expected:
            mismatched[plan] = (
                Counter(actual) - Counter(expected),
                Counter(expected) - Counter(actual),
            )
    assert not mismatched, f"{len(mismatched)} sessions differ (extra, missing): {mismatched}"

    # One request per call reached the servers: nothing was retried behind the spans' backs.
    per_adapter = Counter(plan.adapter for plan in plans)
    fake_server_calls = 2 * (
        per_adapter["openai"] + per_adapter["mistral"] + per_adapter["llama_index"]
    )
    assert len(llm_server.served) - served_before[0] == fake_server_calls
    assert len(dspy_server.requests) - served_before[1] == 2 * per_adapter["dspy"]
