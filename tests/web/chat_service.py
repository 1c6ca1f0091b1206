"""A small FastAPI chat service as applications write one: the tests' subject."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import openai
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from opentelemetry import trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from pydantic import BaseModel

from convotel import using_session, using_user
from convotel.web import SessionMiddleware

MODEL = "gpt-4o-mini"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


class ChatRequest(BaseModel):
    messages: list[dict[str, Any]]
    tools: bool = False
    root_input: str | None = None  # set by the app itself on the root span


def chat_service(
    provider: TracerProvider,
    openai_base_url: str,
    *,
    middleware: bool = True,
    chunk_delay: float = 0.0,
    middleware_options: dict[str, Any] | None = None,
) -> FastAPI:
    """``POST /chat`` answers in JSON, ``POST /chat/stream`` in server-sent events.

    With ``middleware`` the ids come from the request through ``SessionMiddleware``; without it
    the handlers enter ``using_session`` / ``using_user`` themselves from the same headers.
    """
    app = FastAPI()
    client = openai.AsyncOpenAI(base_url=openai_base_url, api_key="test-key", max_retries=0)

    def ids_scope(request: Request) -> contextlib.AbstractContextManager[Any]:
        scope = contextlib.ExitStack()
        if not middleware:
            scope.enter_context(using_session(request.headers.get("x-session-id")))
            scope.enter_context(using_user(request.headers.get("x-user-id")))
        return scope

    async def complete(body: ChatRequest) -> str:
        messages = list(body.messages)
        tools = [WEATHER_TOOL] if body.tools else openai.NOT_GIVEN
        completion = await client.chat.completions.create(
            model=MODEL, messages=messages, tools=tools
        )
        message = completion.choices[0].message
        if message.tool_calls:  # run the tool, then ask again with its result
            messages.append(message.model_dump(exclude_none=True))
            for call in message.tool_calls:
                messages.append(
                    {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21}'}
                )
            completion = await client.chat.completions.create(
                model=MODEL, messages=messages, tools=tools
            )
            message = completion.choices[0].message
        return message.content or ""

    @app.post("/chat")
    async def chat(body: ChatRequest, request: Request) -> dict[str, str]:
        if body.root_input is not None:
            trace.get_current_span().set_attribute("input.value", body.root_input)
        with ids_scope(request):
            return {"reply": await complete(body)}

    @app.post("/chat/stream")
    async def chat_stream(body: ChatRequest, request: Request) -> StreamingResponse:
        with ids_scope(request):
            stream = await client.chat.completions.create(
                model=MODEL, messages=body.messages, stream=True
            )

        async def events() -> AsyncIterator[str]:
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield f"data: {json.dumps({'text': chunk.choices[0].delta.content})}\n\n"
                    if chunk_delay:
                        await asyncio.sleep(chunk_delay)
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    if middleware:
        app.add_middleware(SessionMiddleware, **(middleware_options or {}))
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    return app


def sse_text(body: str) -> str:
    """The reply text carried by the service's server-sent events."""
    pieces = []
    for line in body.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            pieces.append(json.loads(line[len("data: ") :])["text"])
    return "".join(pieces)
