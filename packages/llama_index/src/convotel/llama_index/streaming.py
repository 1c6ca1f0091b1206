"""How LlamaIndex streams stay in the trace of the call that started them, and how they end.

LlamaIndex evaluates streams lazily: an LLM's ``stream_chat`` returns a generator whose body (the
HTTP request included) runs when the caller iterates it, after LlamaIndex's span has exited. Two
tools keep that work inside the right span:

* :class:`StandInSpan` is what a LlamaIndex span puts in the OpenTelemetry context. A span whose
  result is a lazy generator leaves its context attached, so the generator body (and a provider
  instrumentor's span in it) runs under that span; once released the stand-in resolves to the span
  that was current before, so a context the span could not detach no longer parents new spans
  under it.
* :class:`ContextStreamProxy` / :class:`AsyncContextStreamProxy` replace a query engine's
  ``response_gen``: each chunk is produced under the context current when the query returned
  (its span, the caller's session, an LLM stream an inner call started), and the core's stream
  proxy ends the query span however the stream ends.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry import context as context_api
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanContext, Status, StatusCode
from opentelemetry.util.types import Attributes, AttributeValue

from convotel.attributes import output_value_attributes
from convotel.spans import AsyncStreamProxy, CallSpan, Pair, StreamProxy


class StandInSpan(Span):
    """Stands for a span in a context until :meth:`release`, then for the span before it."""

    _target: Span
    _previous: Span
    released: bool

    def __init__(self, span: Span, previous: Span) -> None:
        while isinstance(previous, StandInSpan) and previous.released:
            previous = previous._target  # never a chain through stand-ins of finished calls
        self._target = span
        self._previous = previous
        self.released = False

    def release(self) -> None:
        self.released = True
        self._target = self._previous

    def get_span_context(self) -> SpanContext:
        return self._target.get_span_context()

    def is_recording(self) -> bool:
        return self._target.is_recording()

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        self._target.set_attributes(attributes)

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        self._target.set_attribute(key, value)

    def add_event(
        self, name: str, attributes: Attributes = None, timestamp: int | None = None
    ) -> None:
        self._target.add_event(name, attributes, timestamp)

    def update_name(self, name: str) -> None:
        self._target.update_name(name)

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        self._target.set_status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        self._target.record_exception(exception, attributes, timestamp, escaped)

    def end(self, end_time: int | None = None) -> None:
        self._target.end(end_time)


class TextAccumulator:
    """Joins the text chunks of a response stream into the span's ``output.value``."""

    __slots__ = ("pieces",)

    def __init__(self) -> None:
        self.pieces: list[str] = []

    def process(self, chunk: Any) -> None:
        if isinstance(chunk, str):
            self.pieces.append(chunk)

    def attributes(self) -> list[Pair]:
        return list(output_value_attributes("".join(self.pieces)))


class ContextStreamProxy(StreamProxy):
    """A response stream whose chunks are produced under ``context``."""

    def __init__(self, stream: Any, call: CallSpan, context: Context) -> None:
        super().__init__(stream, call, TextAccumulator())
        self._self_context = context

    def __next__(self) -> Any:
        token = context_api.attach(self._self_context)
        try:
            return super().__next__()
        finally:
            context_api.detach(token)


class AsyncContextStreamProxy(AsyncStreamProxy):
    """An async response stream whose chunks are produced under ``context``."""

    def __init__(self, stream: Any, call: CallSpan, context: Context) -> None:
        super().__init__(stream, call, TextAccumulator())
        self._self_context = context

    async def __anext__(self) -> Any:
        token = context_api.attach(self._self_context)
        try:
            return await super().__anext__()
        finally:
            context_api.detach(token)
