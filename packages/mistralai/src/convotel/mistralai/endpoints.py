"""The wrapped Mistral methods as a table: per method, its span name, kind and extractors.

The core owns the span lifecycle, errors and stream proxies. Mistral's endpoints differ only in
settings (which extractors of :mod:`convotel.mistralai.extraction` read the request and the
response, and which accumulator reads a stream), so each is a row of :data:`ENDPOINTS`, not a
class of its own.

Conversations API calls start in the conversation's session when none is in force
(:mod:`convotel.mistralai.sessions`). Whether they do is the instrumentor's
``TraceConfig(provider_sessions=...)``: the instrumentor wraps each row's endpoint bound to its
own config (:meth:`MistralEndpoint.reading`), which the response hooks read too.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from itertools import chain
from typing import Any, NamedTuple

from openinference.semconv.trace import OpenInferenceSpanKindValues
from opentelemetry.context import Context

from convotel.attributes import Pair
from convotel.config import TraceConfig
from convotel.mistralai import extraction, sessions
from convotel.mistralai.streaming import CompletionStreamAccumulator, ConversationStreamAccumulator
from convotel.payloads import field
from convotel.provider_sessions import SessionStreamAccumulator, session_in_force
from convotel.spans import Endpoint, StreamAccumulator

__all__ = ["ENDPOINTS", "ConfigGetter", "MistralEndpoint", "Wrapped", "is_event_stream"]

_LLM = OpenInferenceSpanKindValues.LLM
_EMBEDDING = OpenInferenceSpanKindValues.EMBEDDING
_GUARDRAIL = OpenInferenceSpanKindValues.GUARDRAIL

RequestExtractor = Callable[[Mapping[str, Any]], Iterator[Pair]]
ResponseExtractor = Callable[[Any], Iterator[Pair]]
ConfigGetter = Callable[[], TraceConfig]


def is_event_stream(response: Any) -> bool:
    """The SDK's ``EventStream``/``EventStreamAsync`` (duck-typed: ``mistralai`` is optional)."""
    return hasattr(response, "__next__") or hasattr(response, "__anext__")


class MistralEndpoint(Endpoint):
    """One wrapped method: its span name and kind, how to read its request and response, and
    (for streaming methods) the accumulator of the returned event stream.

    ``get_config`` is the config whose ``provider_sessions`` the response hooks follow (the core
    hands the request hooks the same one); the rows of :data:`ENDPOINTS` read one from the
    environment until an instrumentor binds them to its own (:meth:`reading`).
    """

    exposes_call = True  # found by the SDK telemetry hook (inside_call)

    def __init__(
        self,
        span_name: str,
        kind: OpenInferenceSpanKindValues,
        request: RequestExtractor,
        response: ResponseExtractor,
        accumulator: Callable[[], StreamAccumulator] | None = None,
        *,
        conversation: bool = False,
        starts_conversation: bool = False,
        get_config: ConfigGetter = TraceConfig,
    ) -> None:
        self.span_name = span_name
        self.kind = kind
        self._request = request
        self._response = response
        self._accumulator = accumulator
        #: A Conversations API call: its ``conversation_id`` is the session.
        self._conversation = conversation
        #: ``start``: the conversation (and session) is known from the response.
        self._starts_conversation = starts_conversation
        self._get_config = get_config

    def reading(self, get_config: ConfigGetter) -> MistralEndpoint:
        """This endpoint, following the config ``get_config`` returns (an instrumentor's)."""
        bound = copy.copy(self)
        bound._get_config = get_config
        return bound

    def _learns_session(self) -> bool:
        """``start``: the response says the conversation, and provider sessions are on."""
        return self._starts_conversation and self._get_config().provider_sessions

    def provider_context(
        self, config: TraceConfig, instance: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> Context | None:
        return sessions.call_context(config, kwargs) if self._conversation else None

    def request_attributes(
        self, instance: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> Iterator[Pair]:
        return self._request(kwargs)

    def response_attributes(self, response: Any) -> Iterator[Pair]:
        if not self._learns_session():
            return self._response(response)
        learnt = sessions.response_session(field(response, "conversation_id"), session_in_force())
        return chain(self._response(response), learnt)

    def stream_accumulator(
        self, response: Any, kwargs: Mapping[str, Any]
    ) -> StreamAccumulator | None:
        if self._accumulator is None or not is_event_stream(response):
            return None
        if not self._learns_session():
            return self._accumulator()
        return SessionStreamAccumulator(
            self._accumulator(),
            sessions.started_conversation,
            sessions.response_session,
            session_in_force(),
        )


class Wrapped(NamedTuple):
    """A method of ``mistralai.client.<module>`` (and its ``_async`` twin) and its endpoint."""

    module: str
    method: str
    endpoint: MistralEndpoint


def _completion(
    module: str, method: str, request: RequestExtractor, *, stream: bool = False
) -> Wrapped:
    span_name = f"mistralai.{module}.{method.rsplit('.', 1)[1]}"
    accumulator = CompletionStreamAccumulator if stream else None
    endpoint = MistralEndpoint(
        span_name, _LLM, request, extraction.completion_response_attributes, accumulator
    )
    return Wrapped(module, method, endpoint)


def _conversation(method: str, *, stream: bool) -> Wrapped:
    name = f"{method}_stream" if stream else method
    endpoint = MistralEndpoint(
        f"mistralai.conversations.{name}",
        _LLM,
        extraction.conversation_request_attributes,
        extraction.conversation_response_attributes,
        ConversationStreamAccumulator if stream else None,
        conversation=True,
        starts_conversation=method == "start",
    )
    return Wrapped("conversations", f"Conversations.{name}", endpoint)


def _moderation(method: str) -> Wrapped:
    endpoint = MistralEndpoint(
        f"mistralai.classifiers.{method}",
        _GUARDRAIL,
        extraction.moderation_request_attributes,
        extraction.moderation_response_attributes,
    )
    return Wrapped("classifiers", f"Classifiers.{method}", endpoint)


_CHAT = extraction.chat_request_attributes
_FIM = extraction.fim_request_attributes

#: Every traced method (``chat.parse*`` call ``chat.complete``/``chat.stream``).
ENDPOINTS: tuple[Wrapped, ...] = (
    _completion("chat", "Chat.complete", _CHAT),
    _completion("chat", "Chat.stream", _CHAT, stream=True),
    _completion("fim", "Fim.complete", _FIM),
    _completion("fim", "Fim.stream", _FIM, stream=True),
    _completion("agents", "Agents.complete", _CHAT),
    _completion("agents", "Agents.stream", _CHAT, stream=True),
    Wrapped(
        "embeddings",
        "Embeddings.create",
        MistralEndpoint(
            "mistralai.embeddings.create",
            _EMBEDDING,
            extraction.embedding_request_attributes,
            extraction.embedding_response_attributes,
        ),
    ),
    _moderation("moderate"),
    _moderation("moderate_chat"),
    *(
        _conversation(method, stream=stream)
        for method in ("start", "append", "restart")
        for stream in (False, True)
    ),
)
