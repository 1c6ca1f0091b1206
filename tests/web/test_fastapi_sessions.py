"""Sessions in a real FastAPI chat service: uvicorn on 127.0.0.1, OpenTelemetry's FastAPI
instrumentation (the HTTP server span is each trace's root), the OpenAI SDK against the loopback
LLM server, convotel's OpenAI instrumentor and SessionSpanProcessor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
import pytest
from chat_service import chat_service, sse_text
from live_servers import LiveASGIServer, wait_for_spans
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from convotel.demo.fake_replies import ReplyPlan, plan_reply
from convotel.demo.fake_server import FakeLLMServer

pytestmark = pytest.mark.usefixtures("openai_instrumented")
OPENAI_TOKEN_CAPS = ("max_completion_tokens", "max_tokens")

HISTORY = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hi, I am planning a trip to Lisbon."},
    {"role": "assistant", "content": "Lovely! How can I help?"},
]


def ask(text: str) -> list[dict[str, str]]:
    return [*HISTORY, {"role": "user", "content": text}]


def billed_usage(llm_server: FakeLLMServer) -> ReplyPlan:
    """The usage the loopback LLM server billed for its latest chat request."""
    served = llm_server.served[-1]
    return plan_reply(served.body, max_tokens_key=OPENAI_TOKEN_CAPS)


def server_root(spans: Sequence[ReadableSpan]) -> ReadableSpan:
    roots = [s for s in spans if s.parent is None]
    assert len(roots) == 1, [s.name for s in roots]
    assert roots[0].kind is SpanKind.SERVER
    return roots[0]


def llm_spans(spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    return [s for s in spans if (s.attributes or {}).get("openinference.span.kind") == "LLM"]


def not_ended_before_the_handler(spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    """All spans but those that had ended before the handler entered ``using_session`` (reading
    the request body): an ended span can no longer be changed."""
    handler_start = min(s.start_time or 0 for s in llm_spans(spans))
    return [s for s in spans if (s.end_time or 0) > handler_start]


def one_trace(spans: Sequence[ReadableSpan]) -> bool:
    return any(s.parent is None for s in spans)


@pytest.mark.parametrize("middleware", [True, False], ids=["middleware", "using_session"])
def test_every_span_of_a_turn_joins_the_session_and_the_root_carries_the_turn(
    web_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    llm_server: FakeLLMServer,
    middleware: bool,
) -> None:
    app = chat_service(web_provider, llm_server.openai_base_url, middleware=middleware)
    headers = {"x-session-id": "sess-web-1", "x-user-id": "alice"}
    with LiveASGIServer(app) as server:
        response = httpx.post(
            f"{server.url}/chat",
            json={"messages": ask("What should I see there?")},
            headers=headers,
        )
    assert response.status_code == 200
    spans = wait_for_spans(span_exporter, one_trace)
    root = server_root(spans)
    joined = spans if middleware else not_ended_before_the_handler(spans)
    assert {s.attributes.get("session.id") for s in joined} == {"sess-web-1"}
    assert {s.attributes.get("user.id") for s in joined} == {"alice"}
    assert root.attributes["input.value"] == "What should I see there?"
    assert root.attributes["input.mime_type"] == "text/plain"
    assert root.attributes["output.value"] == response.json()["reply"]
    assert root.attributes["output.mime_type"] == "text/plain"


def test_a_streamed_reply_is_in_the_session_with_its_text_and_tokens(
    web_provider: TracerProvider, span_exporter: InMemorySpanExporter, llm_server: FakeLLMServer
) -> None:
    # using_session inside the handler only: the spans that send the body after the handler
    # returned are outside it, and still join the session.
    app = chat_service(web_provider, llm_server.openai_base_url, middleware=False)
    with LiveASGIServer(app) as server:
        response = httpx.post(
            f"{server.url}/chat/stream",
            json={"messages": ask("Tell me about the trams.")},
            headers={"x-session-id": "sess-stream-1", "x-user-id": "bob"},
        )
    streamed = sse_text(response.text)
    assert streamed
    spans = wait_for_spans(span_exporter, one_trace)
    root = server_root(spans)
    send_spans = [s for s in spans if s.name.endswith("http send")]
    assert send_spans, [s.name for s in spans]
    joined = not_ended_before_the_handler(spans)
    assert set(send_spans) <= set(joined)
    assert {s.attributes.get("session.id") for s in joined} == {"sess-stream-1"}
    assert {s.attributes.get("user.id") for s in joined} == {"bob"}
    assert root.attributes["input.value"] == "Tell me about the trams."
    assert root.attributes["output.value"] == streamed
    (llm,) = llm_spans(spans)
    billed = billed_usage(llm_server)
    assert llm.attributes["llm.token_count.prompt"] == billed.prompt_tokens
    assert llm.attributes["llm.token_count.completion"] == billed.completion_tokens


def test_a_tool_calling_turn_takes_its_input_from_the_first_call_and_its_output_from_the_last(
    web_provider: TracerProvider, span_exporter: InMemorySpanExporter, llm_server: FakeLLMServer
) -> None:
    app = chat_service(web_provider, llm_server.openai_base_url)
    with LiveASGIServer(app) as server:
        response = httpx.post(
            f"{server.url}/chat",
            json={"messages": ask("What is the weather in Lisbon right now?"), "tools": True},
            headers={"x-session-id": "sess-tools", "x-user-id": "chloe"},
        )
    spans = wait_for_spans(span_exporter, one_trace)
    calls = llm_spans(spans)
    assert len(calls) == 2  # the tool call, then the answer with the tool's result
    assert "llm.output_messages.0.message.tool_calls.0.tool_call.function.name" in (
        calls[0].attributes
    )
    root = server_root(spans)
    assert root.attributes["input.value"] == "What is the weather in Lisbon right now?"
    assert root.attributes["output.value"] == response.json()["reply"] != ""


def test_values_the_application_set_on_the_root_are_kept(
    web_provider: TracerProvider, span_exporter: InMemorySpanExporter, llm_server: FakeLLMServer
) -> None:
    app = chat_service(web_provider, llm_server.openai_base_url)
    with LiveASGIServer(app) as server:
        response = httpx.post(
            f"{server.url}/chat",
            json={"messages": ask("Any museums?"), "root_input": "set by the app"},
            headers={"x-session-id": "sess-own-input"},
        )
    spans = wait_for_spans(span_exporter, one_trace)
    root = server_root(spans)
    assert root.attributes["input.value"] == "set by the app"
    assert root.attributes["output.value"] == response.json()["reply"]


@pytest.mark.parametrize(
    ("options", "headers", "cookies", "expected"),
    [
        ({}, {"x-session-id": "s-h", "x-user-id": "u-h"}, {}, ("s-h", "u-h")),
        (
            {"session_cookie": "chat_session", "user_cookie": "uid"},
            {},
            {"chat_session": "s-c", "uid": "u-c"},
            ("s-c", "u-c"),
        ),
        (  # the header wins over the cookie
            {"session_cookie": "chat_session"},
            {"x-session-id": "s-h"},
            {"chat_session": "s-c"},
            ("s-h", None),
        ),
        (
            {"ids": lambda scope: (scope["path"].rsplit("/", 1)[-1], "u-fn")},
            {"x-session-id": "ignored"},
            {},
            ("stream", "u-fn"),
        ),
        (
            {"session_header": "X-Conversation"},
            {"x-conversation": "s-custom"},
            {},
            ("s-custom", None),
        ),
    ],
    ids=["headers", "cookies", "header-over-cookie", "callable", "custom-header"],
)
def test_the_middleware_takes_the_ids_from_headers_cookies_or_a_callable(
    web_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    llm_server: FakeLLMServer,
    options: dict[str, Any],
    headers: dict[str, str],
    cookies: dict[str, str],
    expected: tuple[str | None, str | None],
) -> None:
    app = chat_service(web_provider, llm_server.openai_base_url, middleware_options=options)
    with LiveASGIServer(app) as server, httpx.Client(cookies=cookies) as client:
        response = client.post(
            f"{server.url}/chat/stream", json={"messages": ask("Hello!")}, headers=headers
        )
    assert response.status_code == 200
    spans = wait_for_spans(span_exporter, one_trace)
    assert {s.attributes.get("session.id") for s in spans} == {expected[0]}
    assert {s.attributes.get("user.id") for s in spans} == {expected[1]}


@pytest.mark.parametrize(
    ("headers", "options"),
    [
        ({"x-session-id": "", "x-user-id": ""}, {}),
        ({}, {"ids": lambda scope: 1 / 0}),
        ({"cookie": 'chat_session="unterminated'}, {"session_cookie": "chat_session"}),
    ],
    ids=["blank-ids", "callable-raises", "bad-cookie"],
)
def test_bad_or_missing_ids_never_fail_the_request(
    web_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    llm_server: FakeLLMServer,
    headers: dict[str, str],
    options: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONVOTEL_STRICT", "true")  # even when bad ids raise in the app's code
    app = chat_service(web_provider, llm_server.openai_base_url, middleware_options=options)
    with LiveASGIServer(app) as server:
        response = httpx.post(f"{server.url}/chat", json={"messages": ask("Hi")}, headers=headers)
    assert response.status_code == 200
    assert response.json()["reply"]
    spans = wait_for_spans(span_exporter, one_trace)
    assert {s.attributes.get("session.id") for s in spans} == {None}
    assert {s.attributes.get("user.id") for s in spans} == {None}
    assert server_root(spans).attributes["output.value"] == response.json()["reply"]


def test_a_bad_session_id_keeps_the_good_user_id_and_utf8_ids_arrive_whole(
    web_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    llm_server: FakeLLMServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONVOTEL_STRICT", "true")
    app = chat_service(web_provider, llm_server.openai_base_url)
    with LiveASGIServer(app) as server:
        bad_session = httpx.post(
            f"{server.url}/chat",
            json={"messages": ask("Hi")},
            headers={"x-session-id": "", "x-user-id": "élodie".encode()},
        )
        utf8_session = httpx.post(
            f"{server.url}/chat",
            json={"messages": ask("Hi again")},
            headers={"x-session-id": "séance-1".encode()},
        )
    assert bad_session.status_code == utf8_session.status_code == 200
    spans = wait_for_spans(
        span_exporter, lambda found: len([s for s in found if s.parent is None]) == 2
    )
    ids = {
        (s.attributes.get("session.id"), s.attributes.get("user.id"))
        for s in spans
        if s.parent is None
    }
    assert ids == {(None, "élodie"), ("séance-1", None)}
