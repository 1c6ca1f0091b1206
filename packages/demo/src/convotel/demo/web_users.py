"""The demo's users over HTTP (``convotel demo --serve``): each conversation is one httpx client
that sends every turn to the chat service of :mod:`convotel.demo.web_app` as a real request,
streamed turns as server-sent events. The users know nothing of tracing: their session and user
ids travel as plain request headers.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from httpx_sse import connect_sse

from convotel.demo.bots import Reply
from convotel.demo.conversations import Outcome, Progress
from convotel.demo.script import Conversation, ScriptedTurn
from convotel.demo.web_app import SESSION_HEADER, USER_HEADER, TurnReply, TurnRequest

__all__ = ["ChatServiceError", "hold_conversation_over_http", "send_turn"]

#: Seconds a turn may take (the LlamaIndex import on a session's first turn is the slowest).
TURN_TIMEOUT_S = 120.0


class ChatServiceError(Exception):
    """The chat service could not answer a turn (its HTTP error or its ``error`` event)."""


def _request(conversation: Conversation, turn: ScriptedTurn) -> dict[str, Any]:
    return TurnRequest(
        provider=conversation.provider, message=turn.text, tools=turn.tools, fault=turn.fault
    ).model_dump(exclude_none=True)


def _error_detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    return f"HTTP {response.status_code}: {detail or response.text[:200]}"


def send_turn(client: httpx.Client, conversation: Conversation, turn: ScriptedTurn) -> Reply:
    """Say ``turn`` to the chat service; a streamed turn's text is what the events carried."""
    body = _request(conversation, turn)
    if not turn.stream:
        response = client.post("/chat", json=body)
        if response.status_code != 200:
            raise ChatServiceError(_error_detail(response))
        return Reply(**TurnReply.model_validate(response.json()).model_dump())
    pieces: list[str] = []
    with connect_sse(client, "POST", "/chat/stream", json=body) as events:
        if events.response.status_code != 200:
            events.response.read()
            raise ChatServiceError(_error_detail(events.response))
        for event in events.iter_sse():
            if event.event == "message":
                pieces.append(event.json()["text"])
            elif event.event == "error":
                raise ChatServiceError(event.json()["error"])
            elif event.event == "done":
                done = TurnReply.model_validate(event.json()).model_dump(exclude={"text"})
                return Reply(text="".join(pieces), **done)
    raise ChatServiceError("the event stream ended without a done event")


def hold_conversation_over_http(
    conversation: Conversation,
    session_id: str,
    base_url: str,
    progress: Progress,
    outcome: Outcome,
) -> None:
    """Play one conversation against the chat service; every turn is one HTTP request."""
    headers = {SESSION_HEADER: session_id, USER_HEADER: conversation.user_id}
    with httpx.Client(base_url=base_url, headers=headers, timeout=TURN_TIMEOUT_S) as client:
        for number, turn in enumerate(conversation.turns, start=1):
            started = time.perf_counter()
            reply: Reply | None = None
            error: Exception | None = None
            try:
                reply = send_turn(client, conversation, turn)
            except (ChatServiceError, httpx.HTTPError) as failure:
                error = failure
            with outcome.lock:
                outcome.turns += 1
                outcome.failed_turns += error is not None
            progress.turn(conversation, number, turn, reply, time.perf_counter() - started, error)
