"""Decorators on the four kinds of function, generators across tasks, and concurrency."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from convotel import get_attributes_from_context, using_attributes, using_session, using_user


def session() -> Any:
    return dict(get_attributes_from_context()).get("session.id")


def test_decorator_on_a_plain_function() -> None:
    @using_session("plain")
    def work(x: int) -> tuple[int, Any]:
        return x + 1, session()

    assert work(1) == (2, "plain")
    assert session() is None
    assert work.__name__ == "work"


async def test_decorator_on_a_coroutine_function() -> None:
    @using_user("u-async")
    async def work() -> Any:
        await asyncio.sleep(0)
        return dict(get_attributes_from_context()).get("user.id")

    assert await work() == "u-async"
    assert dict(get_attributes_from_context()) == {}


def test_decorator_on_a_generator_does_not_leak_between_next_calls() -> None:
    @using_session("gen")
    def numbers() -> Iterator[Any]:
        for i in range(3):
            yield i, session()

    iterator = numbers()
    assert session() is None  # nothing happens before the first next()
    first = next(iterator)
    assert first == (0, "gen")
    assert session() is None  # not leaked to the caller between next() calls
    with using_session("caller"):
        assert next(iterator) == (1, "gen")
        assert session() == "caller"
    assert list(iterator) == [(2, "gen")]


def test_decorated_generator_returns_its_value_and_receives_sent_values() -> None:
    @using_session("gen")
    def echo() -> Iterator[Any]:
        received = yield "ready"
        yield (received, session())
        return "done"

    generator = echo()
    assert next(generator) == "ready"
    assert generator.send("hello") == ("hello", "gen")
    with pytest.raises(StopIteration) as stop:
        next(generator)
    assert stop.value.value == "done"


def test_decorated_generator_gets_thrown_exceptions_and_closes() -> None:
    closed = []

    @using_session("gen")
    def guarded() -> Iterator[Any]:
        try:
            while True:
                try:
                    yield session()
                except KeyError:
                    yield "handled"
        finally:
            closed.append(session())

    generator = guarded()
    assert next(generator) == "gen"
    assert generator.throw(KeyError("x")) == "handled"
    generator.close()
    assert closed == ["gen"]
    assert session() is None


async def test_decorator_on_an_async_generator() -> None:
    @using_session("agen")
    async def numbers() -> AsyncIterator[Any]:
        for i in range(2):
            await asyncio.sleep(0)
            yield i, session()

    seen = []
    async for item in numbers():
        seen.append(item)
        assert session() is None
    assert seen == [(0, "agen"), (1, "agen")]


async def test_decorated_async_generator_forwards_asend_athrow_and_aclose() -> None:
    events: list[Any] = []

    @using_session("agen")
    async def guarded() -> AsyncIterator[Any]:
        try:
            received = yield "ready"
            while True:
                try:
                    received = yield (received, session())
                except KeyError:
                    received = yield "handled"
        finally:
            events.append(("body closed", session()))

    generator = guarded()
    assert await generator.asend(None) == "ready"
    assert await generator.asend("hello") == ("hello", "agen")
    assert await generator.athrow(KeyError("x")) == "handled"
    await generator.aclose()  # the body's finally runs now, not when the generator is collected
    events.append(("after aclose", session()))
    assert events == [("body closed", "agen"), ("after aclose", None)]


async def test_decorated_async_generator_raises_what_its_body_raises() -> None:
    failure = ValueError("from the body")

    @using_session("agen")
    async def failing() -> AsyncIterator[int]:
        yield 1
        raise failure

    generator = failing()
    assert await anext(generator) == 1
    with pytest.raises(ValueError, match="from the body") as raised:
        await anext(generator)
    assert raised.value is failure
    with pytest.raises(StopAsyncIteration):
        await anext(generator)


async def test_generator_resumed_from_another_task_has_no_leak_and_no_detach_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    @using_session("shared-gen")
    async def ticks() -> AsyncIterator[Any]:
        while True:
            await asyncio.sleep(0)
            yield session()

    @using_session("sync-gen")
    def sync_ticks() -> Iterator[Any]:
        while True:
            yield session()

    agen = ticks()
    gen = sync_ticks()

    async def consume(own: str) -> list[Any]:
        with using_session(own):
            values = [await agen.__anext__(), next(gen), session()]
        return [*values, session()]

    with caplog.at_level(logging.ERROR):
        first = await asyncio.create_task(consume("task-1"))
        second = await asyncio.create_task(consume("task-2"))
        await agen.aclose()
    assert first == ["shared-gen", "sync-gen", "task-1", None]
    assert second == ["shared-gen", "sync-gen", "task-2", None]
    assert "Failed to detach context" not in caplog.text


async def test_200_concurrent_tasks_each_read_only_their_own_session() -> None:
    async def conversation(index: int) -> list[Any]:
        seen = []
        with using_attributes(session_id=f"s-{index}", user_id=f"u-{index % 7}"):
            for _ in range(5):
                await asyncio.sleep(0)
                attributes = dict(get_attributes_from_context())
                seen.append((attributes["session.id"], attributes["user.id"]))
        return seen

    results = await asyncio.gather(*(conversation(i) for i in range(200)))
    for index, seen in enumerate(results):
        assert seen == [(f"s-{index}", f"u-{index % 7}")] * 5
    assert session() is None


def test_threads_each_read_only_their_own_session() -> None:
    barrier = threading.Barrier(16)
    results: dict[int, list[Any]] = {}

    def worker(index: int) -> None:
        with using_session(f"t-{index}"):
            barrier.wait()
            results[index] = [session() for _ in range(100)]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {i: [f"t-{i}"] * 100 for i in range(16)}


def test_context_manager_used_as_async_context_manager() -> None:
    async def main() -> Any:
        async with using_session("awith"):
            return session()

    assert asyncio.run(main()) == "awith"
