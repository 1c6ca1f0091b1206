"""OpenAI's own conversations as sessions (the rules: :mod:`convotel.provider_sessions`).

When no session is in force, a call's ``session.id`` is:

* the Responses API's ``conversation=`` (``"conv_…"`` or ``{"id": "conv_…"}``), or the
  ``conversation_id`` of a Conversations API call (items, and the id ``conversations.create``
  returns): source ``openai.conversation``;
* for ``previous_response_id=resp_B``: the session of ``resp_B``'s chain, i.e. of its first
  response (its conversation, the explicit session in force then, or else its own id), resolved
  in :data:`RESPONSE_CHAINS`; a ``resp_B`` this process never saw (another process, a restart,
  or forgotten by the bounded map) starts the session at ``resp_B`` itself:
  source ``openai.previous_response``;
* for a stored response that starts nothing of the above: its own id, learnt from the response
  (so the span gets it when it ends): source ``openai.response``. ``store=False`` responses cannot
  be continued and get no session.

With ``TraceConfig(provider_user_ids=True)`` and no user in force, ``safety_identifier`` (else the
older ``user``) of any request becomes ``user.id``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from opentelemetry import context as context_api
from opentelemetry.context import Context

from convotel.attributes import Pair
from convotel.config import TraceConfig
from convotel.context import SESSION_ID, USER_ID
from convotel.json_encoding import safe_json_dumps
from convotel.payloads import field
from convotel.provider_sessions import (
    OPENAI_CONVERSATION,
    OPENAI_PREVIOUS_RESPONSE,
    OPENAI_RESPONSE,
    ProviderSession,
    ResponseChains,
    ResponseSession,
    provider_id,
    session_pairs,
    with_provider_session,
    with_provider_user,
)

__all__ = [
    "RESPONSE_CHAINS",
    "RequestSession",
    "ResponseSession",
    "call_context",
    "conversation_created_session",
    "conversation_id",
    "items_request_attributes",
    "items_session",
    "response_created",
    "responses_request_session",
    "responses_session",
]

#: A request's session: from the call's positional and keyword arguments.
RequestSession = Callable[[tuple[Any, ...], Mapping[str, Any]], ProviderSession | None]

#: The ``previous_response_id`` chains this process has seen (bounded, see ResponseChains).
RESPONSE_CHAINS = ResponseChains()


def conversation_id(value: Any) -> str | None:
    """The id of a ``conversation`` parameter or field: ``"conv_…"``, ``{"id": …}`` or an
    object with an ``id``."""
    if type(value) is str:
        return provider_id(value)
    if isinstance(value, Mapping):
        return provider_id(value.get("id"))
    return provider_id(getattr(value, "id", None)) if value is not None else None


def call_context(
    read_session: RequestSession | None,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    config: TraceConfig,
) -> Context | None:
    """The context a call starts in: the current one with the provider's session (and, if
    opted in, its user id) when none is in force; ``None`` when nothing is added."""
    sessions = read_session is not None and config.provider_sessions
    users = config.provider_user_ids
    if not sessions and not users:
        return None
    context = context_api.get_current()
    session = None
    if sessions and read_session is not None and not context.get(SESSION_ID):
        session = read_session(args, kwargs)
    user = None
    if users and not context.get(USER_ID):
        user = provider_id(kwargs.get("safety_identifier")) or provider_id(kwargs.get("user"))
    if session is None and user is None:
        return None
    if session is not None:
        context = with_provider_session(context, session)
    return with_provider_user(context, user) if user is not None else context


# --- Responses ------------------------------------------------------------------------------


def responses_request_session(
    args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> ProviderSession | None:
    """A Responses request's session: its conversation, else its ``previous_response_id``
    chain's (``None`` for a first response: its own id is known only from the response)."""
    conversation = kwargs.get("conversation")
    if conversation is not None:
        found = conversation_id(conversation)
        if found is not None:
            return ProviderSession(found, OPENAI_CONVERSATION)
    previous = provider_id(kwargs.get("previous_response_id"))
    if previous is None:
        return None
    return ProviderSession(
        RESPONSE_CHAINS.session_of(previous) or previous, OPENAI_PREVIOUS_RESPONSE
    )


def responses_session(response: Any, context_session: str | None) -> Iterator[Pair]:
    """Remember a response's chain session; a first response (no session in force, no
    conversation, no previous response, stored) is its own session, recorded now."""
    response_id = provider_id(field(response, "id"))
    if response_id is None:
        return
    if context_session is not None:  # explicit (or a framework's): the span has it already
        RESPONSE_CHAINS.remember(response_id, context_session)
        return
    conversation = conversation_id(field(response, "conversation"))
    if conversation is not None:
        RESPONSE_CHAINS.remember(response_id, conversation)
        return
    previous = provider_id(field(response, "previous_response_id"))
    if previous is not None:
        RESPONSE_CHAINS.remember(response_id, RESPONSE_CHAINS.session_of(previous) or previous)
        return
    if _stored(response) is False:
        return  # cannot be continued: not the start of a chain
    RESPONSE_CHAINS.remember(response_id, response_id)
    yield from session_pairs(ProviderSession(response_id, OPENAI_RESPONSE))


def _stored(response: Any) -> object:
    """The response's ``store`` flag (an extra field to the SDK's model: not in its fields)."""
    stored = field(response, "store")
    return stored if stored is not None else getattr(response, "store", None)


def response_created(event: Any) -> Any:
    """The response of a Responses stream's ``response.created`` event (the first; it says the
    response's session whatever happens after), else ``None``."""
    return field(event, "response") if field(event, "type") == "response.created" else None


# --- Conversations API ------------------------------------------------------------------------


def items_session(first_argument: bool) -> RequestSession:
    """The session of an items call: its ``conversation_id`` (the first positional argument
    of ``create`` and ``list``, a keyword of ``retrieve`` and ``delete``)."""

    def read(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> ProviderSession | None:
        found = kwargs.get("conversation_id")
        if found is None and first_argument and args:
            found = args[0]
        conversation = provider_id(found)
        return None if conversation is None else ProviderSession(conversation, OPENAI_CONVERSATION)

    return read


def conversation_created_session(response: Any, context_session: str | None) -> Iterator[Pair]:
    """``conversations.create``: the new conversation is the session (unless one is in force)."""
    if context_session is None:
        created = provider_id(field(response, "id"))
        if created is not None:
            yield from session_pairs(ProviderSession(created, OPENAI_CONVERSATION))


def items_request_attributes(kwargs: Mapping[str, Any]) -> Iterator[Pair]:
    """The items a Conversations API call adds, as ``input.value`` (JSON)."""
    items = kwargs.get("items")
    if isinstance(items, (list, tuple)) and items:
        yield "input.value", safe_json_dumps(items)
        yield "input.mime_type", "application/json"


def no_attributes(_: Any) -> Iterator[Pair]:
    return iter(())
