"""Failed calls, retries, cancellation and broken extraction never change what the app sees."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import openai
import openai._base_client
import pytest
from openai_cassettes import replay
from openai_wire import API_KEY, BASIC_MESSAGES, CHAT_MODEL, CHAT_TEXT
from openinference.semconv.trace import SpanAttributes
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.http_attributes import (
    HTTP_REQUEST_RESEND_COUNT,
    HTTP_RESPONSE_STATUS_CODE,
)
from opentelemetry.trace import StatusCode

from convotel.openai import OpenAIInstrumentor, extraction
from convotel.openai.retries import RETRY_EVENT

OnlySpan = Callable[[], ReadableSpan]

# openai >= 3 sends through httpx2, openai 2.x through httpx: use the one the SDK uses.
httpx2: Any = getattr(openai._base_client, "httpx2", None) or openai._base_client.httpx


def attributes_of(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def ask(client: openai.OpenAI, **kwargs: Any) -> Any:
    return client.chat.completions.create(model=CHAT_MODEL, messages=BASIC_MESSAGES, **kwargs)


def assert_failed_call(span: ReadableSpan, exc: BaseException, status: int | None) -> None:
    attributes = attributes_of(span)
    assert span.status.status_code is StatusCode.ERROR
    assert attributes[SpanAttributes.LLM_REQUEST_MODEL_NAME] == CHAT_MODEL
    assert attributes[ERROR_TYPE] == type(exc).__qualname__
    assert attributes.get(HTTP_RESPONSE_STATUS_CODE) == status
    exceptions = [event for event in span.events if event.name == "exception"]
    assert len(exceptions) == 1
    assert exceptions[0].attributes is not None
    assert exceptions[0].attributes["exception.type"].endswith(type(exc).__name__)
    assert exceptions[0].attributes["exception.message"] == str(exc)


def test_bad_request_fails_the_span_with_status_and_model(
    client: openai.OpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with replay("chat_400"), pytest.raises(openai.BadRequestError) as raised:
        ask(client, temperature=7)
    assert raised.value.status_code == 400
    assert raised.value.code == "invalid_value"
    span = only_span()
    assert_failed_call(span, raised.value, 400)
    assert HTTP_REQUEST_RESEND_COUNT not in attributes_of(span)  # 400 is not retried


async def test_async_bad_request_fails_the_span(
    async_client: openai.AsyncOpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with replay("chat_400"), pytest.raises(openai.BadRequestError) as raised:
        await async_client.chat.completions.create(
            model=CHAT_MODEL, messages=BASIC_MESSAGES, temperature=7
        )
    assert_failed_call(only_span(), raised.value, 400)


def test_server_error_without_retries_fails_the_span(
    instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    client = openai.OpenAI(api_key=API_KEY, max_retries=0)
    with replay("chat_500"), pytest.raises(openai.InternalServerError) as raised:
        ask(client)
    assert_failed_call(only_span(), raised.value, 500)


def test_rate_limited_call_retried_once_is_one_span_with_a_retry_event(
    client: openai.OpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with replay("chat_retry_429") as cassette:
        completion = ask(client)
    assert cassette.play_count == 2
    assert completion.choices[0].message.content == CHAT_TEXT
    span = only_span()
    assert span.status.status_code is StatusCode.OK
    assert attributes_of(span)[HTTP_REQUEST_RESEND_COUNT] == 1
    (retry,) = (event for event in span.events if event.name == RETRY_EVENT)
    assert dict(retry.attributes or {}) == {
        HTTP_REQUEST_RESEND_COUNT: 1,
        HTTP_RESPONSE_STATUS_CODE: 429,
    }


async def test_async_retries_are_recorded(
    async_client: openai.AsyncOpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with replay("chat_retry_429"):
        await async_client.chat.completions.create(model=CHAT_MODEL, messages=BASIC_MESSAGES)
    assert attributes_of(only_span())[HTTP_REQUEST_RESEND_COUNT] == 1


def test_exhausted_retries_fail_the_span_with_every_attempt_recorded(
    client: openai.OpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with replay("chat_500_retries_exhausted"), pytest.raises(openai.InternalServerError) as raised:
        ask(client)
    span = only_span()
    assert_failed_call(span, raised.value, 500)
    assert attributes_of(span)[HTTP_REQUEST_RESEND_COUNT] == 2
    retries = [dict(event.attributes or {}) for event in span.events if event.name == RETRY_EVENT]
    assert retries == [
        {HTTP_REQUEST_RESEND_COUNT: 1, HTTP_RESPONSE_STATUS_CODE: 500},
        {HTTP_REQUEST_RESEND_COUNT: 2, HTTP_RESPONSE_STATUS_CODE: 500},
    ]


def test_connection_error_reaches_the_app_unchanged_and_fails_the_span(
    instrumented: OpenAIInstrumentor, only_span: OnlySpan, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("openai._base_client.INITIAL_RETRY_DELAY", 0.001)
    refused = httpx2.ConnectError("connection refused")

    def refuse(request: httpx2.Request) -> httpx2.Response:
        raise refused

    transport = httpx2.MockTransport(refuse)
    client = openai.OpenAI(
        api_key=API_KEY, max_retries=1, http_client=httpx2.Client(transport=transport)
    )
    with pytest.raises(openai.APIConnectionError) as raised:
        ask(client)
    assert raised.value.__cause__ is refused
    span = only_span()
    assert_failed_call(span, raised.value, None)
    (retry,) = (event for event in span.events if event.name == RETRY_EVENT)
    assert dict(retry.attributes or {}) == {HTTP_REQUEST_RESEND_COUNT: 1}


def test_malformed_json_body_error_reaches_the_app_and_fails_the_span(
    client: openai.OpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with replay("chat_malformed_json"), pytest.raises(json.JSONDecodeError) as raised:
        ask(client)
    assert_failed_call(only_span(), raised.value, None)


async def test_cancelled_call_ends_its_span_as_cancelled(
    instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    started = asyncio.Event()

    async def never_answer(request: httpx2.Request) -> httpx2.Response:
        started.set()
        await asyncio.sleep(60)
        raise AssertionError("unreachable")

    transport = httpx2.MockTransport(never_answer)
    client = openai.AsyncOpenAI(
        api_key=API_KEY, http_client=httpx2.AsyncClient(transport=transport)
    )
    task = asyncio.create_task(
        client.chat.completions.create(model=CHAT_MODEL, messages=BASIC_MESSAGES)
    )
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    span = only_span()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description is not None
    assert "cancelled" in span.status.description
    assert attributes_of(span)[SpanAttributes.LLM_REQUEST_MODEL_NAME] == CHAT_MODEL


def test_failing_extraction_never_reaches_the_app(
    client: openai.OpenAI,
    instrumented: OpenAIInstrumentor,
    only_span: OnlySpan,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(completion: Any) -> Any:
        raise RuntimeError("extractor bug")

    monkeypatch.setattr(extraction, "chat_response_attributes", broken)
    with replay("chat_basic", match_body=False):
        completion = ask(client)
    assert completion.choices[0].message.content == CHAT_TEXT
    span = only_span()
    assert span.status.status_code is StatusCode.OK
    assert attributes_of(span)[SpanAttributes.LLM_REQUEST_MODEL_NAME] == CHAT_MODEL
