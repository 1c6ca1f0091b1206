"""The wrapped OpenAI methods as a table: per method, what to extract (an :class:`EndpointSpec`).

The core's wrappers own the span lifecycle. OpenAI's endpoints differ only in settings (span name
and kind, which extractors of :mod:`convotel.openai.extraction` read the request and the response,
which accumulator reads a stream, whether streamed calls ask for usage), so each is a spec and
each wrapped method a row of :data:`ENDPOINTS`. What is behaviour stays code, shared by all:

* ``.with_raw_response`` returns a ``LegacyAPIResponse`` (already read: parsed here, the SDK
  caches the result) and ``.with_streaming_response`` an unread ``APIResponse``
  (handed back as a :class:`~convotel.openai.streaming.DeferredResponseProxy`).
* With ``TraceConfig(request_stream_usage=True)`` (the default) streamed chat and legacy
  completions are sent with ``stream_options={"include_usage": True}`` unless the application
  chose ``include_usage`` itself or reads the raw response; the extra usage-only chunk is then
  hidden from the application (:class:`UsageRequestingEndpoint`; see
  :mod:`convotel.openai.stream_usage` for servers that refuse the option).
* ``chat.completions.parse`` records its ``response_format`` class as the JSON schema sent.
* The provider's own conversations are sessions (:mod:`convotel.openai.sessions`): a spec's
  ``session`` reads one from the request, its ``response_session`` from the response.
"""

from __future__ import annotations

import contextlib
import dataclasses
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from itertools import chain
from typing import Any, NamedTuple

from openai import APIResponse, AsyncAPIResponse, AsyncAzureOpenAI, AsyncStream, AzureOpenAI, Stream
from openai._legacy_response import LegacyAPIResponse
from openinference.semconv.trace import OpenInferenceSpanKindValues
from opentelemetry.context import Context

from convotel.attributes import is_unset
from convotel.call_span import CallSpan
from convotel.config import TraceConfig
from convotel.endpoints import Endpoint
from convotel.finish import StreamAccumulator
from convotel.openai import extraction, sessions
from convotel.openai.extraction import AZURE, Pair, provider_for_host
from convotel.openai.sessions import RequestSession
from convotel.openai.stream_usage import RejectingServers
from convotel.openai.streaming import (
    ChatStreamAccumulator,
    CompletionStreamAccumulator,
    DeferredResponseProxy,
    NoStreamAccumulator,
    ResponsesStreamAccumulator,
    proxy_stream,
)
from convotel.provider_sessions import ResponseSession, SessionStreamAccumulator, session_in_force

__all__ = [
    "ENDPOINTS",
    "ChatCompletions",
    "Completions",
    "Embeddings",
    "EndpointSpec",
    "OpenAIEndpoint",
    "ParsedChatCompletions",
    "Responses",
    "UsageRequestingEndpoint",
    "Wrapped",
    "provider_of",
]

_RAW_RESPONSE_HEADER = "X-Stainless-Raw-Response"
_AZURE_CLIENTS = (AzureOpenAI, AsyncAzureOpenAI)
_STREAMS = (Stream, AsyncStream)
_STREAMS_AND_DEFERRED = (Stream, AsyncStream, APIResponse, AsyncAPIResponse)

ConfigGetter = Callable[[], TraceConfig]
RequestExtractor = Callable[[Mapping[str, Any]], Iterator[Pair]]
ResponseExtractor = Callable[[Any], Iterator[Pair]]


#: Provider per base URL object (kept alive here, so an id is never reused while cached).
_PROVIDER_BY_URL: dict[int, tuple[object, str]] = {}
_MAX_CACHED_URLS = 256


def provider_of(resource: Any) -> str:
    """``azure`` for the Azure clients, else the provider its base URL's host names
    (:func:`~convotel.openai.extraction.provider_for_host`; ``openai`` when none)."""
    client = getattr(resource, "_client", None)
    if isinstance(client, _AZURE_CLIENTS):
        return AZURE
    values = getattr(client, "__dict__", None)  # the URL as stored: the property costs ~1.5 µs
    url = None
    if isinstance(values, dict):
        url = values.get("_configured_base_url") or values.get("_base_url")  # openai 3.x / 2.x
    if url is None:
        url = getattr(client, "base_url", None)
    cached = _PROVIDER_BY_URL.get(id(url))
    if cached is not None and cached[0] is url:
        return cached[1]
    provider = provider_for_host(getattr(url, "host", None))
    if len(_PROVIDER_BY_URL) >= _MAX_CACHED_URLS:
        _PROVIDER_BY_URL.clear()
    _PROVIDER_BY_URL[id(url)] = (url, provider)
    return provider


@dataclass(frozen=True)
class EndpointSpec:
    """What one OpenAI endpoint records: span name and kind, how its request, response and
    stream turn into attributes, and whether its streamed calls ask for usage."""

    span_name: str
    request: RequestExtractor
    response: ResponseExtractor
    #: Builds the accumulator of a streamed (or deferred raw) response; usage-requesting
    #: endpoints pass it ``hide_usage_chunk``.
    accumulator: Callable[..., StreamAccumulator] = NoStreamAccumulator
    kind: OpenInferenceSpanKindValues = OpenInferenceSpanKindValues.LLM
    #: The request's recorded parameters from the call's keyword arguments.
    parameters: Callable[[Mapping[str, Any]], dict[str, Any]] = extraction.user_parameters
    #: Streamed calls ask for (and hide) the usage chunk (:class:`UsageRequestingEndpoint`).
    asks_stream_usage: bool = False
    #: The provider's conversation named by the request, as the call's session.
    session: RequestSession | None = None
    #: The session a response says (recorded when the call ends), given the one in force.
    response_session: ResponseSession | None = None
    #: A model call (provider, system, model and invocation parameters are recorded).
    model_call: bool = True

    def endpoint(self, get_config: ConfigGetter) -> OpenAIEndpoint:
        """The endpoint an instrumentor wraps methods with (one per spec and instrumentor)."""
        if self.asks_stream_usage:
            return UsageRequestingEndpoint(self, get_config)
        return OpenAIEndpoint(self, get_config)


class OpenAIEndpoint(Endpoint):
    """One OpenAI endpoint, by its :class:`EndpointSpec`, with the raw-response paths."""

    exposes_call = True  # found by the retry hook (retries.py, through inside_call)

    def __init__(self, spec: EndpointSpec, get_config: ConfigGetter) -> None:
        self.spec = spec
        self.span_name = spec.span_name
        self.kind = spec.kind
        self._embedding = spec.kind is OpenInferenceSpanKindValues.EMBEDDING
        self._get_config = get_config

    def new_accumulator(self, response: Any, kwargs: Mapping[str, Any]) -> StreamAccumulator:
        return self.spec.accumulator()

    def provider_context(
        self, config: TraceConfig, instance: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> Context | None:
        return sessions.call_context(self.spec.session, args, kwargs, config)

    def request_attributes(
        self, instance: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> Iterator[Pair]:
        parameters = self.spec.parameters(kwargs)
        if not self.spec.model_call:
            return self.spec.request(parameters)
        common = extraction.common_request_attributes(
            provider_of(instance), parameters, embedding=self._embedding
        )
        return chain(common, self.spec.request(parameters))

    def response_attributes(self, response: Any) -> Iterator[Pair]:
        if isinstance(response, LegacyAPIResponse):  # .with_raw_response: the body is read
            response = response.parse()
        read = self._response_session()
        if read is None:
            return self.spec.response(response)
        return chain(self.spec.response(response), read(response, session_in_force()))

    def _response_session(self) -> ResponseSession | None:
        read = self.spec.response_session
        return read if read is not None and self._get_config().provider_sessions else None

    def stream_accumulator(
        self, response: Any, kwargs: Mapping[str, Any]
    ) -> StreamAccumulator | None:
        streamed = isinstance(response, _STREAMS_AND_DEFERRED) or (
            isinstance(response, LegacyAPIResponse) and kwargs.get("stream") is True
        )
        if not streamed:
            return None
        accumulator = self.new_accumulator(response, kwargs)
        read = self._response_session()
        if read is None:
            return accumulator
        return SessionStreamAccumulator(
            accumulator, sessions.response_created, read, session_in_force()
        )

    def wrap_stream(self, response: Any, call: CallSpan, accumulator: StreamAccumulator) -> Any:
        if isinstance(response, _STREAMS):
            return proxy_stream(response, call, accumulator)
        return DeferredResponseProxy(response, call, self, accumulator)


class UsageRequestingEndpoint(OpenAIEndpoint):
    """Chat and legacy completions: may ask for stream usage on the application's behalf.

    Wrapped with :func:`~convotel.openai.stream_usage.sync_usage_wrapper` (or the async one),
    which sends the added option, falls back to the application's request when a server rejects
    it, and reports such responses through :meth:`sent_unchanged`.
    """

    def __init__(self, spec: EndpointSpec, get_config: ConfigGetter) -> None:
        super().__init__(spec, get_config)
        #: Servers that refused ``stream_options`` (their calls are sent unchanged).
        self.rejecting = RejectingServers()
        self._unchanged: weakref.WeakSet[Any] = weakref.WeakSet()

    def requests_usage(self, kwargs: Mapping[str, Any]) -> bool:
        """True when convotel adds ``include_usage`` (and must hide the usage-only chunk)."""
        if kwargs.get("stream") is not True or not self._get_config().request_stream_usage:
            return False
        options = kwargs.get("stream_options")
        if isinstance(options, Mapping):
            if "include_usage" in options:
                return False  # the application decided
        elif not is_unset(options):
            return False  # not an object: the application's request stays as it wrote it
        extra_body = kwargs.get("extra_body")  # sent over whatever convotel would add
        if isinstance(extra_body, Mapping) and "stream_options" in extra_body:
            return False
        headers = kwargs.get("extra_headers")  # the raw body is the application's to read
        return not (isinstance(headers, Mapping) and _RAW_RESPONSE_HEADER in headers)

    def adjust_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        if not self.requests_usage(kwargs):
            return kwargs
        options = kwargs.get("stream_options")
        merged = dict(options) if isinstance(options, Mapping) else {}
        merged["include_usage"] = True
        return {**kwargs, "stream_options": merged}

    def sent_unchanged(self, response: Any) -> Any:
        """Note that ``response`` answers the application's own request (nothing to hide)."""
        with contextlib.suppress(TypeError):  # not weak-referenceable: not an SDK stream
            self._unchanged.add(response)
        return response

    def hides_usage_chunk(self, response: Any, kwargs: Mapping[str, Any]) -> bool:
        """Whether ``response``'s usage-only chunk is convotel's to hide."""
        if not self.requests_usage(kwargs):
            return False
        if self._unchanged and response in self._unchanged:
            self._unchanged.discard(response)
            return False
        return True

    def new_accumulator(self, response: Any, kwargs: Mapping[str, Any]) -> StreamAccumulator:
        return self.spec.accumulator(hide_usage_chunk=self.hides_usage_chunk(response, kwargs))


def parsed_chat_parameters(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``chat.completions.parse``'s parameters: a ``response_format`` class as its JSON schema."""
    parameters = extraction.user_parameters(kwargs)
    response_format = parameters.get("response_format")
    if isinstance(response_format, type):
        parameters["response_format"] = _response_format_schema(response_format)
    return parameters


def _response_format_schema(response_format: type) -> object:
    try:  # what the SDK sends; a private helper, so fall back to the class name
        from openai.lib._parsing._completions import type_to_response_format_param
    except ImportError:
        return {"type": "json_schema", "json_schema": {"name": response_format.__name__}}
    return type_to_response_format_param(response_format)


_EMBEDDING = OpenInferenceSpanKindValues.EMBEDDING

CHAT = EndpointSpec(
    "ChatCompletion",
    extraction.chat_request_attributes,
    extraction.chat_response_attributes,
    ChatStreamAccumulator,
    asks_stream_usage=True,
)
#: ``parse`` never streams (the SDK's ``.stream(...)`` helper calls ``create``).
PARSED_CHAT = dataclasses.replace(CHAT, parameters=parsed_chat_parameters, asks_stream_usage=False)
RESPONSES = EndpointSpec(
    "Response",
    extraction.responses_request_attributes,
    extraction.responses_response_attributes,
    ResponsesStreamAccumulator,
    session=sessions.responses_request_session,
    response_session=sessions.responses_session,
)
COMPLETIONS = EndpointSpec(
    "Completion",
    extraction.completion_request_attributes,
    extraction.completion_response_attributes,
    CompletionStreamAccumulator,
    asks_stream_usage=True,
)
EMBEDDINGS = EndpointSpec(
    "CreateEmbeddings",
    extraction.embedding_request_attributes,
    extraction.embedding_response_attributes,
    kind=_EMBEDDING,
)


_CHAIN = OpenInferenceSpanKindValues.CHAIN


def _conversations_spec(
    method: str, *, first_argument: bool = False, adds_items: bool = False
) -> EndpointSpec:
    """A Conversations API items call: a CHAIN span in the conversation's session."""
    return EndpointSpec(
        f"ConversationItems.{method}",
        sessions.items_request_attributes if adds_items else sessions.no_attributes,
        sessions.no_attributes,
        kind=_CHAIN,
        session=sessions.items_session(first_argument),
        model_call=False,
    )


CONVERSATION_CREATE = EndpointSpec(
    "Conversations.create",
    sessions.items_request_attributes,
    sessions.no_attributes,
    kind=_CHAIN,
    response_session=sessions.conversation_created_session,
    model_call=False,
)
_ITEMS = "openai.resources.conversations.items"


class Wrapped(NamedTuple):
    """A method of ``openai.resources.<module>`` (and its ``Async`` twin) and its endpoint."""

    module: str
    method: str
    spec: EndpointSpec


#: Every traced method (``chat.completions.stream`` and ``responses.stream`` call ``create``).
ENDPOINTS: tuple[Wrapped, ...] = (
    Wrapped("openai.resources.chat.completions", "Completions.create", CHAT),
    Wrapped("openai.resources.chat.completions", "Completions.parse", PARSED_CHAT),
    Wrapped("openai.resources.completions", "Completions.create", COMPLETIONS),
    Wrapped("openai.resources.responses", "Responses.create", RESPONSES),
    Wrapped("openai.resources.responses", "Responses.parse", RESPONSES),
    Wrapped("openai.resources.embeddings", "Embeddings.create", EMBEDDINGS),
    Wrapped(
        "openai.resources.conversations.conversations", "Conversations.create", CONVERSATION_CREATE
    ),
    Wrapped(
        _ITEMS, "Items.create", _conversations_spec("create", first_argument=True, adds_items=True)
    ),
    Wrapped(_ITEMS, "Items.list", _conversations_spec("list", first_argument=True)),
    Wrapped(_ITEMS, "Items.retrieve", _conversations_spec("retrieve")),
    Wrapped(_ITEMS, "Items.delete", _conversations_spec("delete")),
)

#: One endpoint of a spec, for callers building one outside an instrumentor (tests).
ChatCompletions = partial(UsageRequestingEndpoint, CHAT)
ParsedChatCompletions = partial(OpenAIEndpoint, PARSED_CHAT)
Responses = partial(OpenAIEndpoint, RESPONSES)
Completions = partial(UsageRequestingEndpoint, COMPLETIONS)
Embeddings = partial(OpenAIEndpoint, EMBEDDINGS)
