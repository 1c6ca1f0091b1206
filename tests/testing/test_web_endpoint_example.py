"""The README's web example: `convotel_spans` asserting sessions on an application's own FastAPI
endpoint through FastAPI's TestClient (SessionMiddleware, OpenTelemetry's FastAPI instrumentation,
the OpenAI SDK against a loopback model server), as Phoenix would show them."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import pytest

pytest.importorskip("fastapi.sse", reason="needs fastapi>=0.135")
pytest.importorskip("opentelemetry.instrumentation.fastapi")
pytest.importorskip("httpx_sse")
openai = pytest.importorskip("openai")
pytest.importorskip("convotel.openai")

from fastapi import FastAPI, Header  # noqa: E402
from fastapi.sse import EventSourceResponse, ServerSentEvent  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from httpx_sse import connect_sse  # noqa: E402
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from convotel.demo.fake_replies import content_text, plan_reply  # noqa: E402
from convotel.demo.fake_server import FakeLLMServer  # noqa: E402
from convotel.propagation import SessionSpanProcessor  # noqa: E402
from convotel.testing import CapturedSpans  # noqa: E402
from convotel.web import SessionMiddleware  # noqa: E402

MODEL = "gpt-4o-mini"


class Ask(BaseModel):
    message: str


def create_app(openai_client: Any) -> FastAPI:
    """The application under test: a chat endpoint (JSON, and server-sent events) that keeps each
    session's history; the session and user come from request headers."""
    app = FastAPI()
    histories: dict[str, list[dict[str, str]]] = defaultdict(list)

    @app.post("/chat")
    async def chat(body: Ask, x_session_id: Annotated[str, Header()]) -> dict[str, str]:
        history = histories[x_session_id]
        history.append({"role": "user", "content": body.message})
        completion = await openai_client.chat.completions.create(model=MODEL, messages=history)
        reply: str = completion.choices[0].message.content or ""
        history.append({"role": "assistant", "content": reply})
        return {"reply": reply}

    @app.post("/chat/stream", response_class=EventSourceResponse)
    async def chat_stream(
        body: Ask, x_session_id: Annotated[str, Header()]
    ) -> AsyncIterator[ServerSentEvent]:
        history = histories[x_session_id]
        history.append({"role": "user", "content": body.message})
        stream = await openai_client.chat.completions.create(
            model=MODEL, messages=history, stream=True, stream_options={"include_usage": True}
        )
        pieces = []
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
                yield ServerSentEvent(data=pieces[-1])
        history.append({"role": "assistant", "content": "".join(pieces)})

    app.add_middleware(SessionMiddleware, session_header="x-session-id", user_header="x-user-id")
    return app


@pytest.fixture
def convotel_span_processors() -> list[SessionSpanProcessor]:
    """As the service's own provider: the HTTP server span joins the session and gets the turn."""
    return [SessionSpanProcessor()]


@pytest.fixture
def llm_server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server


@pytest.fixture
def chat(convotel_spans: CapturedSpans, llm_server: FakeLLMServer) -> Iterator[TestClient]:
    openai_client = openai.AsyncOpenAI(
        base_url=llm_server.openai_base_url, api_key="sk-test", max_retries=0
    )
    app = create_app(openai_client)
    FastAPIInstrumentor.instrument_app(app, tracer_provider=convotel_spans.tracer_provider)
    with TestClient(app) as client:
        yield client


def streamed_reply(client: TestClient, message: str, headers: dict[str, str]) -> str:
    with connect_sse(
        client, "POST", "/chat/stream", json={"message": message}, headers=headers
    ) as events:
        return "".join(event.json() for event in events.iter_sse())


def billed_tokens(llm_server: FakeLLMServer, first_message: str) -> tuple[int, int, int]:
    """What the loopback server billed for the conversation that opened with ``first_message``."""
    prompt = completion = 0
    for request in llm_server.served:
        messages = request.body.get("messages") or []
        if request.status == 200 and content_text(messages[0].get("content")) == first_message:
            plan = plan_reply(request.body, max_tokens_key=("max_completion_tokens", "max_tokens"))
            prompt += plan.prompt_tokens
            completion += plan.completion_tokens
    return prompt, completion, prompt + completion


ALICE = {"x-session-id": "s-1", "x-user-id": "alice"}
BOB = {"x-session-id": "s-2", "x-user-id": "bob"}


def test_every_request_is_a_turn_of_its_session_rooted_in_the_http_server_span(
    convotel_spans: CapturedSpans, chat: TestClient, llm_server: FakeLLMServer
) -> None:
    first = chat.post("/chat", json={"message": "Plan three days in Lisbon."}, headers=ALICE)
    chat.post("/chat", json={"message": "Any vegetarian dinner ideas?"}, headers=BOB)
    streamed = streamed_reply(chat, "Which museum should I see first?", ALICE)

    convotel_spans.assert_every_span_in_a_session()
    convotel_spans.assert_sessions_isolated()
    session = convotel_spans.assert_session(
        "s-1",
        user="alice",
        turns=2,
        llm_calls=2,
        errors=0,
        inputs=["Plan three days in Lisbon.", "Which museum should I see first?"],
        tokens=billed_tokens(llm_server, "Plan three days in Lisbon."),
    )
    assert [turn.root.kind for turn in session.turns] == ["SERVER", "SERVER"]
    assert [turn.root.name for turn in session.turns] == ["POST /chat", "POST /chat/stream"]
    assert session.turns[0].root.attributes["output.value"] == first.json()["reply"]
    assert session.last_output == streamed
    convotel_spans.assert_session("s-2", user="bob", turns=1)


@pytest.mark.parametrize("convotel_span_processors", [[]], ids=["no-session-processor"])
def test_without_the_session_processor_the_http_root_is_named_as_outside_the_session(
    convotel_spans: CapturedSpans, chat: TestClient
) -> None:
    chat.post("/chat", json={"message": "Plan three days in Lisbon."}, headers=ALICE)
    with pytest.raises(
        pytest.fail.Exception, match=r"(?s)lack a session\.id:.*'POST /chat' \(SERVER"
    ):
        convotel_spans.assert_every_span_in_a_session()
    (turn,) = convotel_spans.session("s-1").turns
    assert "output.value" not in turn.root.attributes
