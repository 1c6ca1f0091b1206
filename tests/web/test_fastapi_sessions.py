"""Sessions in a real FastAPI chat service: uvicorn on 127.0.0.1, OpenTelemetry's FastAPI
instrumentation (the HTTP server span is each trace's root), the OpenAI SDK against the loopback
LLM server, convotel's OpenAI instrumentor and SessionSpanProcessor."""

from __future__ import annotations

from collections.abc import Sequence

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
