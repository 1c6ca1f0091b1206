"""Session and user ids never leak between concurrent LlamaIndex calls, tasks, threads, streams."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from llama_index.core import VectorStoreIndex
from llama_index.core.async_utils import run_async_tasks, run_jobs
from llama_index.core.llms import MockLLM
from llama_index_spans import FinishedSpans, attributes, token_stream

from convotel import using_session, using_user
from convotel.propagation import ContextPropagatingExecutor, propagate

QUESTIONS = ["What is the capital of France?", "What is the capital of Germany?"]


async def test_concurrent_async_queries_keep_their_own_sessions(
    spans: FinishedSpans, index: VectorStoreIndex, mock_llm: MockLLM
) -> None:
    engine = index.as_query_engine(llm=mock_llm)

    async def ask(session: str, user: str, question: str) -> Any:
        with using_session(session), using_user(user):
            await asyncio.sleep(0)
            return await engine.aquery(question)

    await asyncio.gather(
        *(ask(f"s-{n}", f"u-{n}", QUESTIONS[n % 2]) for n in range(4)),
    )

    captured = spans.captured()
    captured.assert_every_span_in_a_session()
    captured.assert_sessions_isolated()
    for n in range(4):
        captured.assert_session(f"s-{n}", user=f"u-{n}", turns=1, llm_calls=1)


def test_llama_index_async_fan_out_from_sync_code_keeps_the_session(
    spans: FinishedSpans, index: VectorStoreIndex, mock_llm: MockLLM
) -> None:
    engine = index.as_query_engine(llm=mock_llm)
    with using_session("fan-out"), using_user("u-1"):
        run_async_tasks([engine.aquery(question) for question in QUESTIONS])

    captured = spans.captured()
    captured.assert_every_span_in_a_session()
    captured.assert_session("fan-out", user="u-1", turns=2, llm_calls=2)


async def test_llama_index_jobs_and_nested_event_loop_keep_the_session(
    spans: FinishedSpans, index: VectorStoreIndex, mock_llm: MockLLM
) -> None:
    engine = index.as_query_engine(llm=mock_llm)
    with using_session("jobs"):
        await run_jobs([engine.aquery(question) for question in QUESTIONS], workers=2)
        # Inside a running loop, LlamaIndex runs this on a helper thread with a copied context.
        run_async_tasks([engine.aquery(QUESTIONS[0])])

    captured = spans.captured()
    captured.assert_every_span_in_a_session()
    assert len(spans.named("RetrieverQueryEngine.aquery")) == 3


def test_threads_with_their_own_sessions_do_not_mix(
    spans: FinishedSpans, index: VectorStoreIndex, mock_llm: MockLLM
) -> None:
    engine = index.as_query_engine(llm=mock_llm)
    barrier = threading.Barrier(4)

    def ask(n: int) -> None:
        with using_session(f"thread-{n}"), using_user(f"user-{n}"):
            barrier.wait()
            engine.query(QUESTIONS[n % 2])

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    captured = spans.captured()
    captured.assert_every_span_in_a_session()
    captured.assert_sessions_isolated()
    for n in range(4):
        captured.assert_session(f"thread-{n}", user=f"user-{n}", turns=1)


def test_thread_pool_work_carries_the_session_when_submitted_with_its_context(
    spans: FinishedSpans, index: VectorStoreIndex, mock_llm: MockLLM
) -> None:
    engine = index.as_query_engine(llm=mock_llm)
    with ThreadPoolExecutor(max_workers=2) as pool, using_session("pooled"):
        pool.submit(propagate(engine.query), QUESTIONS[0]).result()
        pool.submit(contextvars.copy_context().run, engine.query, QUESTIONS[1]).result()
        pool.submit(engine.query, QUESTIONS[0]).result()  # a bare submit: no context
    with ContextPropagatingExecutor(max_workers=2) as pool, using_session("executor"):
        pool.submit(engine.query, QUESTIONS[1]).result()

    queries = spans.named("RetrieverQueryEngine.query")
    sessions = [attributes(span).get("session.id") for span in queries]
    assert sessions == ["pooled", "pooled", None, "executor"], "never a wrong id, at worst none"


def test_interleaved_streams_stay_in_their_own_sessions(
    spans: FinishedSpans, index: VectorStoreIndex, mock_llm: MockLLM
) -> None:
    engine = index.as_query_engine(llm=mock_llm, streaming=True)
    with using_session("stream-a"):
        first = token_stream(engine.query(QUESTIONS[0]))
    with using_session("stream-b"):
        second = token_stream(engine.query(QUESTIONS[1]))
    for _ in zip(first, second, strict=False):
        pass
    list(first)
    list(second)

    captured = spans.captured()
    captured.assert_every_span_in_a_session()
    captured.assert_sessions_isolated()
    captured.assert_session("stream-a", turns=1, llm_calls=1)
    captured.assert_session("stream-b", turns=1, llm_calls=1)
