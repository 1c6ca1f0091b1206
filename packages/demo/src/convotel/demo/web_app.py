"""``convotel demo --serve``: the demo chatbot as a web service on 127.0.0.1.

A FastAPI app written as a chat service would be: ``POST /chat`` answers one turn in JSON,
``POST /chat/stream`` streams it as server-sent events (a ``message`` event per piece of text,
then ``done`` with the usage, or ``error``). The session and user come from the ``x-session-id`` /
``x-user-id`` headers through convotel's :class:`~convotel.web.SessionMiddleware`; OpenTelemetry's
FastAPI instrumentation makes the HTTP server span the root of each turn's trace, and
:class:`~convotel.propagation.SessionSpanProcessor` gives that root the session, the user and the
turn's input and output. The service keeps one bot (and so one history) per session.

Imported only in ``--serve`` mode: it needs fastapi, uvicorn and
opentelemetry-instrumentation-fastapi. uvicorn serves it in a thread
(:class:`~convotel.demo.served_app.ServedApp`, re-exported here).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import FastAPI, Header, HTTPException
from fastapi.sse import EventSourceResponse, ServerSentEvent
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.trace import TracerProvider
from pydantic import BaseModel, Field

from convotel.context import using_metadata, using_tags
from convotel.demo.bots import ChatBot, Reply, TextSink
from convotel.demo.script import Fault, Provider, ScriptedTurn
from convotel.demo.served_app import ServedApp
from convotel.web import SessionMiddleware

__all__ = ["ChatService", "ServedApp", "TurnReply", "TurnRequest", "create_app"]

SESSION_HEADER = "x-session-id"
USER_HEADER = "x-user-id"


class TurnRequest(BaseModel):
    """What the user says, to which bot, and (for the loopback server) what should go wrong."""

    provider: Provider
    message: str
    tools: bool = False
    fault: Fault | None = None


class TurnReply(BaseModel):
    """The bot's answer and what it took (a stream's ``done`` event carries all but the text)."""

    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model_calls: int = 0
    tool_calls: list[str] = Field(default_factory=list)
    recovered_errors: list[str] = Field(default_factory=list)

    @classmethod
    def of(cls, reply: Reply) -> TurnReply:
        return cls(**dataclasses.asdict(reply))


class ChatService:
    """The bots of the sessions the service has seen: one per session and provider.

    ``make_bot(provider)`` builds a bot; each turn runs under ``metadata`` and ``tags`` (plus the
    provider) as ``using_metadata`` / ``using_tags``.
    """

    def __init__(
        self,
        make_bot: Callable[[Provider], ChatBot],
        *,
        metadata: dict[str, str] | None = None,
        tags: tuple[str, ...] = (),
    ) -> None:
        self._make_bot = make_bot
        self._metadata = metadata or {}
        self._tags = tags
        self._bots: dict[tuple[str, Provider], ChatBot] = {}
        self._lock = threading.Lock()

    def answer(self, session_id: str, request: TurnRequest, on_text: TextSink | None) -> Reply:
        """One turn of ``session_id`` (blocking: run it off the event loop); streamed when
        ``on_text`` is given."""
        key = (session_id, request.provider)
        with self._lock:
            bot = self._bots.get(key)
        if bot is None:  # built outside the lock: a LlamaIndex bot imports for a second
            made = self._make_bot(request.provider)
            with self._lock:
                bot = self._bots.setdefault(key, made)
        turn = ScriptedTurn(
            request.message, stream=on_text is not None, tools=request.tools, fault=request.fault
        )
        with (
            using_metadata({**self._metadata, "provider": request.provider}),
            using_tags([*self._tags, request.provider]),
        ):
            return bot.reply(turn, on_text)


def _failure(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Collect a turn's outcome after its stream went away (no 'never retrieved' warning)."""
    if not task.cancelled():
        task.exception()


def create_app(service: ChatService, tracer_provider: TracerProvider) -> FastAPI:
    """The chat service: ids from the request headers, traced by OpenTelemetry's FastAPI
    instrumentation against ``tracer_provider`` (its per-message send/receive spans left out)."""
    app = FastAPI(title="convotel demo chat service")

    @app.post("/chat")
    async def chat(body: TurnRequest, x_session_id: Annotated[str, Header()]) -> TurnReply:
        try:  # asyncio.to_thread runs the turn in this request's context: its session, its trace
            reply = await asyncio.to_thread(service.answer, x_session_id, body, None)
        except Exception as error:
            raise HTTPException(status_code=502, detail=_failure(error)) from error
        return TurnReply.of(reply)

    @app.post("/chat/stream", response_class=EventSourceResponse)
    async def chat_stream(
        body: TurnRequest, x_session_id: Annotated[str, Header()]
    ) -> AsyncIterator[ServerSentEvent]:
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[str | None] = asyncio.Queue()

        def put(piece: str | None) -> None:
            with contextlib.suppress(RuntimeError):  # the server stopped: nobody is reading
                loop.call_soon_threadsafe(pieces.put_nowait, piece)

        def answer() -> Reply:
            try:
                return service.answer(x_session_id, body, put)
            finally:
                put(None)

        turn = asyncio.ensure_future(asyncio.to_thread(answer))
        try:
            while (piece := await pieces.get()) is not None:
                yield ServerSentEvent(data={"text": piece})
            try:
                reply = await turn
            except Exception as error:  # noqa: BLE001 - the client gets it as an error event
                yield ServerSentEvent(event="error", data={"error": _failure(error)})
                return
            yield ServerSentEvent(
                event="done", data=TurnReply.of(reply).model_dump(exclude={"text"})
            )
        finally:
            turn.add_done_callback(_retrieve)

    app.add_middleware(SessionMiddleware, session_header=SESSION_HEADER, user_header=USER_HEADER)
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=tracer_provider, exclude_spans=["receive", "send"]
    )
    return app
