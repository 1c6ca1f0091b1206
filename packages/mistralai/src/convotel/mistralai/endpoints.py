"""One :class:`~convotel.spans.Endpoint` per wrapped Mistral method: what to extract, nothing else.

The core owns the span lifecycle, errors and stream proxies; each endpoint only names its span,
its OpenInference kind and the extractor functions of :mod:`convotel.mistralai.extraction`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from openinference.semconv.trace import OpenInferenceSpanKindValues

from convotel.mistralai import extraction
from convotel.mistralai.extraction import Pair
from convotel.mistralai.streaming import CompletionStreamAccumulator, ConversationStreamAccumulator
from convotel.spans import Endpoint, StreamAccumulator


def is_event_stream(response: Any) -> bool:
    """The SDK's ``EventStream``/``EventStreamAsync`` (duck-typed: ``mistralai`` is optional)."""
    return hasattr(response, "__next__") or hasattr(response, "__anext__")


class ChatCompletion(Endpoint):
    """``chat.complete`` / ``chat.complete_async``."""

    exposes_call = True  # found by the SDK telemetry hook (inside_call)

    span_name = "mistralai.chat.complete"
    kind = OpenInferenceSpanKindValues.LLM

    def request_attributes(
        self, instance: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> Iterator[Pair]:
        return extraction.chat_request_attributes(kwargs)

    def response_attributes(self, response: Any) -> Iterator[Pair]:
        return extraction.completion_response_attributes(response)


class CompletionStream(ChatCompletion):
    """``chat.stream`` / ``chat.stream_async``: the returned ``EventStream`` is proxied."""

    span_name = "mistralai.chat.stream"

    def stream_accumulator(
        self, response: Any, kwargs: Mapping[str, Any]
    ) -> StreamAccumulator | None:
        return CompletionStreamAccumulator() if is_event_stream(response) else None


class FimCompletion(ChatCompletion):
    """``fim.complete`` / ``fim.complete_async`` (fill-in-the-middle code completion)."""

    span_name = "mistralai.fim.complete"

    def request_attributes(
        self, instance: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> Iterator[Pair]:
        return extraction.fim_request_attributes(kwargs)


class FimStream(CompletionStream):
    """``fim.stream`` / ``fim.stream_async``."""

    span_name = "mistralai.fim.stream"

    def request_attributes(
        self, instance: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> Iterator[Pair]:
        return extraction.fim_request_attributes(kwargs)


class AgentCompletion(ChatCompletion):
    """``agents.complete`` / ``agents.complete_async``: a chat completion by an agent id."""

    span_name = "mistralai.agents.complete"


class AgentStream(CompletionStream):
    """``agents.stream`` / ``agents.stream_async``."""

    span_name = "mistralai.agents.stream"


class Embeddings(Endpoint):
    """``embeddings.create`` / ``embeddings.create_async``."""

    exposes_call = True  # found by the SDK telemetry hook (inside_call)

    span_name = "mistralai.embeddings.create"
    kind = OpenInferenceSpanKindValues.EMBEDDING

    def request_attributes(
        self, instance: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> Iterator[Pair]:
        return extraction.embedding_request_attributes(kwargs)

    def response_attributes(self, response: Any) -> Iterator[Pair]:
        return extraction.embedding_response_attributes(response)


class Conversation(Endpoint):
    """``beta.conversations.start/append/restart`` (and their ``_async`` twins)."""

    exposes_call = True  # found by the SDK telemetry hook (inside_call)

    kind = OpenInferenceSpanKindValues.LLM

    def __init__(self, method: str) -> None:
        self.span_name = f"mistralai.conversations.{method}"

    def request_attributes(
        self, instance: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> Iterator[Pair]:
        return extraction.conversation_request_attributes(kwargs)

    def response_attributes(self, response: Any) -> Iterator[Pair]:
        return extraction.conversation_response_attributes(response)


class ConversationStream(Conversation):
    """``beta.conversations.*_stream``: named server-sent events, usage in the ``done`` event."""

    def stream_accumulator(
        self, response: Any, kwargs: Mapping[str, Any]
    ) -> StreamAccumulator | None:
        return ConversationStreamAccumulator() if is_event_stream(response) else None


class Moderation(Endpoint):
    """``classifiers.moderate`` / ``moderate_chat``: a guardrail check of texts or a chat."""

    exposes_call = True  # found by the SDK telemetry hook (inside_call)

    kind = OpenInferenceSpanKindValues.GUARDRAIL

    def __init__(self, method: str) -> None:
        self.span_name = f"mistralai.classifiers.{method}"

    def request_attributes(
        self, instance: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> Iterator[Pair]:
        return extraction.moderation_request_attributes(kwargs)

    def response_attributes(self, response: Any) -> Iterator[Pair]:
        return extraction.moderation_response_attributes(response)
