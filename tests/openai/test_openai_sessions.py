"""Session and user ids reach the right spans, also across concurrent tasks, threads and streams."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import openai
from openai_cassettes import replay
from openai_wire import API_KEY, CHAT_MODEL, PER_TASK_STREAMS, per_task_messages
from openinference.semconv.trace import MessageAttributes, SpanAttributes
from opentelemetry.sdk.trace import ReadableSpan

from convotel import using_attributes, using_session, using_user
from convotel.openai import OpenAIInstrumentor

Finished = Callable[[], list[ReadableSpan]]
OUTPUT_TEXT = f"{SpanAttributes.LLM_OUTPUT_MESSAGES}.0.{MessageAttributes.MESSAGE_CONTENT}"
INPUT_TEXT = f"{SpanAttributes.LLM_INPUT_MESSAGES}.0.{MessageAttributes.MESSAGE_CONTENT}"


def assert_each_task_in_its_own_session(spans: list[ReadableSpan]) -> None:
    """Task i's span carries session s-i, user u-i, its own prompt and its own answer."""
    assert len(spans) == PER_TASK_STREAMS
    by_session = {span.attributes[SpanAttributes.SESSION_ID]: span.attributes for span in spans}  # type: ignore[index]
    assert sorted(by_session) == sorted(f"s-{task}" for task in range(PER_TASK_STREAMS))
    for task in range(PER_TASK_STREAMS):
        attributes = by_session[f"s-{task}"]
        assert attributes[SpanAttributes.USER_ID] == f"u-{task}"
        assert attributes[INPUT_TEXT] == f"Echo task {task}."
        assert attributes[OUTPUT_TEXT] == f"echo task {task}"


async def test_concurrent_streaming_tasks_keep_their_own_session_ids(
    instrumented: OpenAIInstrumentor, finished: Finished
) -> None:
    client = openai.AsyncOpenAI(api_key=API_KEY)
    opened: list[int] = []
    all_opened = asyncio.Event()

    async def converse(task: int) -> str:
        with using_session(f"s-{task}"), using_user(f"u-{task}"):
            stream = await client.chat.completions.create(
                model=CHAT_MODEL, messages=per_task_messages(task), stream=True
            )
        opened.append(task)
        if len(opened) == PER_TASK_STREAMS:
            all_opened.set()
        await all_opened.wait()  # every stream is open before any is read: they interleave
        pieces = []
        async for chunk in stream:  # consumed outside the `with`: the span keeps its ids
            pieces.append(chunk.choices[0].delta.content or "")
            await asyncio.sleep(0)
        return "".join(pieces)

    with replay("chat_stream_per_task"):
        answers = await asyncio.gather(*(converse(task) for task in range(PER_TASK_STREAMS)))
    assert answers == [f"echo task {task}" for task in range(PER_TASK_STREAMS)]
    assert_each_task_in_its_own_session(finished())


def test_threads_keep_their_own_session_ids(
    instrumented: OpenAIInstrumentor, finished: Finished
) -> None:
    client = openai.OpenAI(api_key=API_KEY)

    def converse(task: int) -> str:
        with using_attributes(session_id=f"s-{task}", user_id=f"u-{task}"):
            stream = client.chat.completions.create(
                model=CHAT_MODEL, messages=per_task_messages(task), stream=True
            )
            return "".join(chunk.choices[0].delta.content or "" for chunk in stream)

    with replay("chat_stream_per_task"), ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(converse, range(PER_TASK_STREAMS)))
    assert answers == [f"echo task {task}" for task in range(PER_TASK_STREAMS)]
    assert_each_task_in_its_own_session(finished())


def test_a_call_outside_any_session_has_no_session_attributes(
    instrumented: OpenAIInstrumentor, finished: Finished
) -> None:
    client = openai.OpenAI(api_key=API_KEY)
    with replay("chat_stream_per_task", match_body=False):
        with using_session("s-inside"):
            list(
                client.chat.completions.create(
                    model=CHAT_MODEL, messages=per_task_messages(0), stream=True
                )
            )
        list(
            client.chat.completions.create(
                model=CHAT_MODEL, messages=per_task_messages(1), stream=True
            )
        )
    inside, outside = finished()
    assert inside.attributes is not None
    assert outside.attributes is not None
    assert inside.attributes[SpanAttributes.SESSION_ID] == "s-inside"
    assert SpanAttributes.SESSION_ID not in outside.attributes
