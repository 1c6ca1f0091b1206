"""Failed Mistral calls: the span fails with status, HTTP status and model; the caller gets the
very exception the SDK raised; a cancelled task ends its span and leaks nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import pydantic
import pytest
from mistral_cassettes import cassette, replay
from mistral_spans import CHAT_MODEL, HELLO, attributes, only_span
from mistralai.client import Mistral, basesdk, errors
from openinference.semconv.trace import SpanAttributes
from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE
from opentelemetry.trace import StatusCode

from convotel import get_attributes_from_context, using_session
from convotel.mistralai import MistralAIInstrumentor

http: Any = vars(basesdk)[
    "httpx"
]  # the HTTP library this SDK release sends with (httpx2 in 3.x, httpx in 2.x)


@pytest.mark.parametrize(
    ("name", "status", "error_type"),
    [
        ("error_401_unauthorized", 401, errors.SDKError),
        ("error_400_invalid_model", 400, errors.SDKError),
        ("error_422_validation", 422, errors.HTTPValidationError),
        ("error_500_server", 500, errors.SDKError),
        ("error_503_html", 503, errors.SDKError),
    ],
)
def test_http_error_fails_the_span_with_status_and_model(
    client: Mistral,
    span_exporter: InMemorySpanExporter,
    name: str,
    status: int,
    error_type: type[errors.MistralError],
) -> None:
    with replay.use_cassette(cassette(name)), pytest.raises(error_type) as caught:
        client.chat.complete(model=CHAT_MODEL, messages=HELLO)

    assert caught.value.status_code == status
    span = only_span(span_exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert attributes(span)[HTTP_RESPONSE_STATUS_CODE] == status
    assert attributes(span)[SpanAttributes.LLM_MODEL_NAME] == CHAT_MODEL
    [event] = span.events
    assert event.name == "exception"
    assert event.attributes is not None
    assert str(event.attributes["exception.type"]).endswith(error_type.__name__)
    assert SpanAttributes.OUTPUT_VALUE not in attributes(span)


def test_malformed_response_body_fails_the_span(
    client: Mistral, span_exporter: InMemorySpanExporter
) -> None:
    with (
        replay.use_cassette(cassette("malformed_json_body")),
        pytest.raises(errors.ResponseValidationError),
    ):
        client.chat.complete(model=CHAT_MODEL, messages=HELLO)

    assert only_span(span_exporter).status.status_code is StatusCode.ERROR


def test_invalid_request_rejected_by_the_sdk_fails_the_span(
    client: Mistral, span_exporter: InMemorySpanExporter
) -> None:
    invalid: Any = [{"role": "narrator", "content": 3}]
    with replay.use_cassette(cassette("chat_complete")), pytest.raises(pydantic.ValidationError):
        client.chat.complete(model=CHAT_MODEL, messages=invalid)

    span = only_span(span_exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert HTTP_RESPONSE_STATUS_CODE not in attributes(span)


def client_answering_with(handler: Any, *, is_async: bool = False) -> Mistral:
    """A client whose transport calls ``handler`` (no cassette: for timeouts and hangs)."""
    transport = http.MockTransport(handler)
    if is_async:
        return Mistral(api_key="test-key", async_client=http.AsyncClient(transport=transport))
    return Mistral(api_key="test-key", client=http.Client(transport=transport))


def test_timeout_reaches_the_caller_as_the_same_exception_object(
    instrumentor: MistralAIInstrumentor, span_exporter: InMemorySpanExporter
) -> None:
    timeout = http.ReadTimeout("timed out")

    def time_out(request: Any) -> Any:
        raise timeout

    with pytest.raises(http.ReadTimeout) as caught:
        client_answering_with(time_out).chat.complete(model=CHAT_MODEL, messages=HELLO)

    assert caught.value is timeout
    span = only_span(span_exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert attributes(span)[SpanAttributes.LLM_MODEL_NAME] == CHAT_MODEL


async def test_cancelled_complete_async_ends_its_span_and_leaks_no_context(
    instrumentor: MistralAIInstrumentor, span_exporter: InMemorySpanExporter
) -> None:
    request_sent = asyncio.Event()

    async def hang(request: Any) -> Any:
        request_sent.set()
        await asyncio.sleep(3600)

    client = client_answering_with(hang, is_async=True)

    async def ask() -> object:
        with using_session("s-cancelled"):
            return await client.chat.complete_async(model=CHAT_MODEL, messages=HELLO)

    task = asyncio.create_task(ask())
    await asyncio.wait_for(request_sent.wait(), timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    span = only_span(span_exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert "cancel" in (span.status.description or "").lower()
    assert attributes(span)[SpanAttributes.SESSION_ID] == "s-cancelled"
    assert dict(get_attributes_from_context()) == {}
    assert trace_api.get_current_span() is trace_api.INVALID_SPAN
    assert context_api.get_value(SpanAttributes.SESSION_ID) is None
    pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert pending == []
