"""Sessions the provider already keeps: a provider's conversation id becomes ``session.id``.

An application that lets the provider keep the conversation (OpenAI's ``conversation=`` and
``previous_response_id=``, Mistral's Conversations API) already has a conversation id; the
adapters read it from the request (or, for a conversation's first call, from the response) and
the span joins that session. The rules, the same for every adapter:

* **An explicit session always wins.** When the context carries a ``session.id``
  (``using_session``, :func:`~convotel.context.set_session`, restored baggage, or a framework
  span's provider session above the call) the adapters look at nothing else: one ``dict.get``.
* A session known before the call is put into the call's context
  (:func:`with_provider_session`), so the span starts in it and
  :class:`~convotel.propagation.SessionSpanProcessor` stamps its children and open ancestors
  (a web request's HTTP root span) as for ``using_session``. A session learnt from the response
  is recorded when the span ends; the processor then stamps the ancestors still open.
* Every span carrying a session records where it came from in :data:`SESSION_SOURCE`:
  :data:`CONTEXT` for an explicit session, else the provider's source (:data:`SOURCES`).

:class:`ResponseChains` resolves OpenAI ``previous_response_id`` chains in memory: a bounded,
thread-safe LRU map from a response id to its chain's session.
:class:`SessionStreamAccumulator` records the session a stream names (the adapters say where).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from opentelemetry import context as context_api
from opentelemetry.context import Context

from convotel.attributes import Pair
from convotel.collected_ends import register_own_lock
from convotel.context import MAX_ID_LENGTH, SESSION_ID, USER_ID
from convotel.pseudonyms import recorded_user_id

if TYPE_CHECKING:  # convotel.finish imports this module (through convotel.call_span)
    from convotel.finish import StreamAccumulator, StreamError

__all__ = [
    "CONTEXT",
    "LLAMA_INDEX_CHAT_STORE",
    "MAX_CHAINED_RESPONSES",
    "MISTRAL_CONVERSATION",
    "OPENAI_CONVERSATION",
    "OPENAI_PREVIOUS_RESPONSE",
    "OPENAI_RESPONSE",
    "SESSION_SOURCE",
    "SOURCES",
    "ProviderSession",
    "ResponseChains",
    "ResponseSession",
    "SessionStreamAccumulator",
    "provider_id",
    "session_in_force",
    "session_pairs",
    "session_source",
    "with_provider_session",
    "with_provider_user",
]

#: Span attribute (and context key): where the span's ``session.id`` came from.
SESSION_SOURCE = "convotel.session.source"
#: The session was set by the application (``using_session``, a setter, baggage).
CONTEXT = "context"
#: OpenAI Responses ``conversation=`` or a Conversations API items call.
OPENAI_CONVERSATION = "openai.conversation"
#: An OpenAI ``previous_response_id`` chain: the session of the chain's first response.
OPENAI_PREVIOUS_RESPONSE = "openai.previous_response"
#: The first response of a possible chain: its own id (nothing chained it yet).
OPENAI_RESPONSE = "openai.response"
#: Mistral's Conversations API ``conversation_id``.
MISTRAL_CONVERSATION = "mistral.conversation"
#: A LlamaIndex chat engine's or agent's memory, by its chat store key.
LLAMA_INDEX_CHAT_STORE = "llama_index.chat_store_key"
#: Every value :data:`SESSION_SOURCE` takes.
SOURCES = (
    CONTEXT,
    OPENAI_CONVERSATION,
    OPENAI_PREVIOUS_RESPONSE,
    OPENAI_RESPONSE,
    MISTRAL_CONVERSATION,
    LLAMA_INDEX_CHAT_STORE,
)

#: Default size of a :class:`ResponseChains` map: ~250 bytes an entry, so about 2.5 MB.
MAX_CHAINED_RESPONSES = 10_000

_PROVIDER_SESSION_KEY = context_api.create_key("convotel-provider-session")

#: The session pairs a response (or what a stream said of it) gives, given the session in force
#: when the call was made (``None``: none was).
ResponseSession = Callable[[Any, "str | None"], Iterator[Pair]]


class ProviderSession(NamedTuple):
    """A session read from the provider's conversation, and where it came from."""

    session_id: str
    source: str


def provider_id(value: object) -> str | None:
    """``value`` as a usable id (a non-blank string, cut to ``MAX_ID_LENGTH``), else ``None``.

    Provider ids are not the application's: a bad one is skipped silently, never warned about.
    """
    if type(value) is not str or not value or value.isspace():
        return None
    return value if len(value) <= MAX_ID_LENGTH else value[:MAX_ID_LENGTH]


def with_provider_session(context: Context, session: ProviderSession) -> Context:
    """``context`` with ``session`` as its ``session.id`` (and its source remembered)."""
    context = context_api.set_value(SESSION_ID, session.session_id, context)
    return context_api.set_value(_PROVIDER_SESSION_KEY, session, context)


def with_provider_user(context: Context, user_id: str) -> Context:
    """``context`` with a user id the application gave the provider as its ``user.id`` (its
    pseudonym when a user id key is configured, see :mod:`convotel.pseudonyms`)."""
    return context_api.set_value(USER_ID, recorded_user_id(user_id), context)


def session_source(context: Context) -> str | None:
    """Where the context's ``session.id`` came from: a provider's source, :data:`CONTEXT`, or
    ``None`` when it carries no session."""
    session_id = context.get(SESSION_ID)
    if not isinstance(session_id, str) or not session_id:
        return None
    provider = context.get(_PROVIDER_SESSION_KEY)
    if isinstance(provider, ProviderSession) and provider.session_id == session_id:
        return provider.source
    return CONTEXT  # set (or replaced) by the application


def session_in_force() -> str | None:
    """The current context's session (the caller's, when a call's response is read)."""
    session = context_api.get_value(SESSION_ID)
    return session if isinstance(session, str) and session else None


def session_pairs(session: ProviderSession) -> tuple[tuple[str, Any], ...]:
    """The attributes recording ``session`` on a span."""
    return (SESSION_ID, session.session_id), (SESSION_SOURCE, session.source)


class ResponseChains:
    """Response id -> the session of its ``previous_response_id`` chain; an LRU of at most
    ``limit`` responses (the least recently used is forgotten first), safe across threads.

    Looking a response up keeps it: a chain's newest response is what its next turn names.
    A chain whose response was forgotten (or never seen: another process, a restart) starts its
    session again (see the adapters for the id it takes).
    """

    __slots__ = ("_lock", "_sessions", "limit")

    def __init__(self, limit: int = MAX_CHAINED_RESPONSES) -> None:
        self.limit = limit
        self._sessions: OrderedDict[str, str] = OrderedDict()
        # Re-entrant: a collected stream's finalizer may remember its chain while this thread
        # holds the lock (see TraceJoiner's lock).
        self._lock = threading.RLock()
        register_own_lock(self._lock)

    def __len__(self) -> int:
        return len(self._sessions)

    def session_of(self, response_id: str) -> str | None:
        """The session of the chain ``response_id`` belongs to, if this map knows it."""
        with self._lock:
            session = self._sessions.get(response_id)
            if session is not None:
                self._sessions.move_to_end(response_id)
            return session

    def remember(self, response_id: str, session_id: str) -> None:
        """Record that ``response_id`` is in the session ``session_id``."""
        with self._lock:
            sessions = self._sessions
            sessions[response_id] = session_id
            sessions.move_to_end(response_id)
            if len(sessions) > self.limit:
                sessions.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._sessions.clear()


class SessionStreamAccumulator:
    """A stream's accumulator that also records the session the stream names.

    ``find`` looks at each chunk until it returns what names the session (not ``None``: OpenAI's
    ``response.created`` response, Mistral's started conversation id); when the stream ends,
    ``read`` turns it into session pairs, as for a response that was not streamed.
    """

    __slots__ = ("_context_session", "_find", "_found", "_inner", "_read")

    def __init__(
        self,
        inner: StreamAccumulator,
        find: Callable[[Any], Any],
        read: ResponseSession,
        context_session: str | None,
    ) -> None:
        self._inner = inner
        self._find = find
        self._read = read
        self._context_session = context_session
        self._found: Any = None

    def process(self, chunk: Any) -> bool | None:
        if self._found is None:
            self._found = self._find(chunk)
        return self._inner.process(chunk)

    def error(self) -> StreamError | None:
        error = getattr(self._inner, "error", None)
        return error() if error is not None else None

    def attributes(self) -> Iterator[Pair]:
        yield from self._inner.attributes()
        if self._found is not None:
            yield from self._read(self._found, self._context_session)
