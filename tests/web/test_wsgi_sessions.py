"""Sessions in a WSGI chat service: wsgiref on 127.0.0.1 under OpenTelemetry's WSGI
instrumentation, convotel's WSGISessionMiddleware, a streamed body produced after the
application returned, the OpenAI SDK against the loopback LLM server."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpx
import openai
import pytest
from live_servers import LiveWSGIServer, wait_for_spans
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from convotel import InvalidContextValueWarning
from convotel.demo.fake_server import FakeLLMServer
from convotel.web import WSGISessionMiddleware

pytestmark = pytest.mark.usefixtures("openai_instrumented")


def chat_app(openai_base_url: str) -> Callable[..., Iterable[bytes]]:
    client = openai.OpenAI(base_url=openai_base_url, api_key="test-key", max_retries=0)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = json.loads(environ["wsgi.input"].read(length))
        start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])

        def reply() -> Iterator[bytes]:  # runs after app() returned, while the server sends
            stream = client.chat.completions.create(
                model="gpt-4o-mini", messages=body["messages"], stream=True
            )
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content.encode()

        return reply()

    return app


def test_a_wsgi_request_and_its_streamed_body_are_in_the_session(
    web_provider: TracerProvider, span_exporter: InMemorySpanExporter, llm_server: FakeLLMServer
) -> None:
    app = OpenTelemetryMiddleware(
        WSGISessionMiddleware(chat_app(llm_server.openai_base_url)),
        tracer_provider=web_provider,
    )
    messages = [
        {"role": "user", "content": "Hello there"},
        {"role": "assistant", "content": "Hi! How can I help?"},
        {"role": "user", "content": "Recommend a book."},
    ]
    with LiveWSGIServer(app) as server:
        response = httpx.post(
            server.url,
            json={"messages": messages},
            headers={"x-session-id": "wsgi-1", "x-user-id": "dmitri"},
        )
    assert response.status_code == 200
    assert response.text
    spans = wait_for_spans(span_exporter, lambda found: any(s.parent is None for s in found))
    (root,) = [s for s in spans if s.parent is None]
    assert root.kind is SpanKind.SERVER
    (model,) = [s for s in spans if s.attributes.get("openinference.span.kind") == "LLM"]
    assert model.parent is not None
    assert model.parent.span_id == root.context.span_id
    assert {s.attributes.get("session.id") for s in spans} == {"wsgi-1"}
    assert {s.attributes.get("user.id") for s in spans} == {"dmitri"}
    assert root.attributes["input.value"] == "Recommend a book."
    assert root.attributes["output.value"] == response.text


def test_a_wsgi_request_without_ids_is_served_unchanged(
    web_provider: TracerProvider, span_exporter: InMemorySpanExporter, llm_server: FakeLLMServer
) -> None:
    app = OpenTelemetryMiddleware(
        WSGISessionMiddleware(chat_app(llm_server.openai_base_url)), tracer_provider=web_provider
    )
    with (
        LiveWSGIServer(app) as server,
        pytest.warns(InvalidContextValueWarning, match="session_id must be a non-empty string"),
    ):
        response = httpx.post(
            server.url,
            json={"messages": [{"role": "user", "content": "Hi"}]},
            headers={"x-session-id": ""},
        )
    assert response.status_code == 200
    assert response.text
    spans = wait_for_spans(span_exporter, lambda found: any(s.parent is None for s in found))
    assert {s.attributes.get("session.id") for s in spans} == {None}
