"""One core :class:`~convotel.endpoints.Endpoint` per wrapped OpenAI method: what to extract.

The core's wrappers own the span lifecycle; these classes only say how a request, a response and
a stream of each endpoint turn into attributes, plus two OpenAI specifics shared by all of them:

* ``.with_raw_response`` returns a ``LegacyAPIResponse`` (already read: parsed here, the SDK
  caches the result) and ``.with_streaming_response`` an unread ``APIResponse``
  (handed back as a :class:`~convotel.openai.streaming.DeferredResponseProxy`).
* With ``TraceConfig(request_stream_usage=True)`` (the default) streamed chat and legacy
  completions are sent with ``stream_options={"include_usage": True}`` unless the application
  chose ``include_usage`` itself or reads the raw response; the extra usage-only chunk is then
  hidden from the application (see :mod:`convotel.openai.stream_usage` for servers that refuse
  the option).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator, Mapping
from itertools import chain
from typing import Any

from openai import APIResponse, AsyncAPIResponse, AsyncAzureOpenAI, AsyncStream, AzureOpenAI, Stream
from openai._legacy_response import LegacyAPIResponse
from openinference.semconv.trace import OpenInferenceSpanKindValues

from convotel.attributes import is_unset
from convotel.call_span import CallSpan
from convotel.config import TraceConfig
from convotel.endpoints import Endpoint
from convotel.finish import StreamAccumulator
from convotel.openai import extraction
from convotel.openai.extraction import AZURE, OPENAI, Pair
from convotel.openai.stream_usage import RejectingServers
from convotel.openai.streaming import (
    ChatStreamAccumulator,
    CompletionStreamAccumulator,
    DeferredResponseProxy,
    NoStreamAccumulator,
    ResponsesStreamAccumulator,
    proxy_stream,
)

_RAW_RESPONSE_HEADER = "X-Stainless-Raw-Response"
_AZURE_CLIENTS = (AzureOpenAI, AsyncAzureOpenAI)
_STREAMS = (Stream, AsyncStream)
_STREAMS_AND_DEFERRED = (Stream, AsyncStream, APIResponse, AsyncAPIResponse)

ConfigGetter = Callable[[], TraceConfig]


def provider_of(resource: Any) -> str:
    """``azure`` for the Azure clients, else ``openai``."""
    return AZURE if isinstance(getattr(resource, "_client", None), _AZURE_CLIENTS) else OPENAI


class OpenAIEndpoint(Endpoint):
    """What every OpenAI endpoint shares; subclasses set the extractors."""

    kind = OpenInferenceSpanKindValues.LLM
    embedding = False
    exposes_call = True  # found by the retry hook (retries.py, through inside_call)

    def __init__(self, get_config: ConfigGetter) -> None:
        self._get_config = get_config

    def extract_request(self, parameters: Mapping[str, Any]) -> Iterator[Pair]:
        return iter(())

    def extract_response(self, response: Any) -> Iterator[Pair]:
        return iter(())

    def new_accumulator(self, response: Any, kwargs: Mapping[str, Any]) -> StreamAccumulator:
        return NoStreamAccumulator()

    def request_parameters(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        return extraction.user_parameters(kwargs)

    def request_attributes(
        self, instance: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> Iterator[Pair]:
        parameters = self.request_parameters(kwargs)
        common = extraction.common_request_attributes(
            provider_of(instance), parameters, embedding=self.embedding
        )
        return chain(common, self.extract_request(parameters))

    def response_attributes(self, response: Any) -> Iterator[Pair]:
        if isinstance(response, LegacyAPIResponse):  # .with_raw_response: the body is read
            response = response.parse()
        return self.extract_response(response)

    def stream_accumulator(
        self, response: Any, kwargs: Mapping[str, Any]
    ) -> StreamAccumulator | None:
        if isinstance(response, _STREAMS_AND_DEFERRED):
            return self.new_accumulator(response, kwargs)
        if isinstance(response, LegacyAPIResponse) and kwargs.get("stream") is True:
            return self.new_accumulator(response, kwargs)
        return None

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

    def __init__(self, get_config: ConfigGetter) -> None:
        super().__init__(get_config)
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
        return ChatStreamAccumulator(hide_usage_chunk=self.hides_usage_chunk(response, kwargs))


class ChatCompletions(UsageRequestingEndpoint):
    """``chat.completions.create`` (also reached by ``.stream(...)`` and the raw-response paths)."""

    span_name = "ChatCompletion"

    def extract_request(self, parameters: Mapping[str, Any]) -> Iterator[Pair]:
        return extraction.chat_request_attributes(parameters)

    def extract_response(self, response: Any) -> Iterator[Pair]:
        return extraction.chat_response_attributes(response)


class ParsedChatCompletions(ChatCompletions):
    """``chat.completions.parse``: the ``response_format`` class is recorded as its JSON schema."""

    def request_parameters(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
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


class Responses(OpenAIEndpoint):
    """``responses.create`` / ``responses.parse`` (also reached by ``responses.stream(...)``)."""

    span_name = "Response"

    def extract_request(self, parameters: Mapping[str, Any]) -> Iterator[Pair]:
        return extraction.responses_request_attributes(parameters)

    def extract_response(self, response: Any) -> Iterator[Pair]:
        return extraction.responses_response_attributes(response)

    def new_accumulator(self, response: Any, kwargs: Mapping[str, Any]) -> StreamAccumulator:
        return ResponsesStreamAccumulator()


class Completions(UsageRequestingEndpoint):
    """The legacy ``completions.create``."""

    span_name = "Completion"

    def extract_request(self, parameters: Mapping[str, Any]) -> Iterator[Pair]:
        return extraction.completion_request_attributes(parameters)

    def extract_response(self, response: Any) -> Iterator[Pair]:
        return extraction.completion_response_attributes(response)

    def new_accumulator(self, response: Any, kwargs: Mapping[str, Any]) -> StreamAccumulator:
        return CompletionStreamAccumulator(
            hide_usage_chunk=self.hides_usage_chunk(response, kwargs)
        )


class Embeddings(OpenAIEndpoint):
    """``embeddings.create``."""

    span_name = "CreateEmbeddings"
    kind = OpenInferenceSpanKindValues.EMBEDDING
    embedding = True

    def extract_request(self, parameters: Mapping[str, Any]) -> Iterator[Pair]:
        return extraction.embedding_request_attributes(parameters)

    def extract_response(self, response: Any) -> Iterator[Pair]:
        return extraction.embedding_response_attributes(response)
