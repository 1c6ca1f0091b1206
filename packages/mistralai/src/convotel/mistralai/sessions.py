"""Mistral conversations as sessions (the rules: :mod:`convotel.provider_sessions`).

When no session is in force, a Conversations API call's ``session.id`` is its
``conversation_id``: from the request (``append``, ``restart`` and their streams), or for
``start`` from the response (the ``conversation_id`` of the reply, or of a stream's
``conversation.response.started`` event), recorded when the span ends. Source:
``mistral.conversation``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import context as context_api
from opentelemetry.context import Context

from convotel.attributes import Pair
from convotel.config import TraceConfig
from convotel.context import SESSION_ID
from convotel.payloads import field
from convotel.provider_sessions import (
    MISTRAL_CONVERSATION,
    ProviderSession,
    provider_id,
    session_pairs,
    with_provider_session,
)

__all__ = ["call_context", "response_session", "started_conversation"]


def call_context(config: TraceConfig, kwargs: Mapping[str, Any]) -> Context | None:
    """The current context with the request's conversation as its session, when none is in
    force (``None``: nothing to add)."""
    if not config.provider_sessions:
        return None
    context = context_api.get_current()
    if context.get(SESSION_ID):
        return None
    conversation = provider_id(kwargs.get("conversation_id"))
    if conversation is None:
        return None
    return with_provider_session(context, ProviderSession(conversation, MISTRAL_CONVERSATION))


def response_session(conversation: Any, context_session: str | None) -> Iterator[Pair]:
    """A started conversation's id as the session, unless one was in force."""
    found = provider_id(conversation) if context_session is None else None
    if found is not None:
        yield from session_pairs(ProviderSession(found, MISTRAL_CONVERSATION))


def started_conversation(chunk: Any) -> Any:
    """The conversation id of a stream's ``conversation.response.started`` event, else ``None``."""
    data = field(chunk, "data")
    if field(data, "type") == "conversation.response.started":
        return field(data, "conversation_id")
    return None
