"""How OpenAI streams accumulate, and the proxies handed to the application in their place.

* Accumulators see each chunk once (cheaply: a few attribute reads and list appends) and build
  the span's output attributes when the stream ends.
* :class:`OpenAIStreamProxy` is the core's stream proxy plus one thing: the SDK's helper streams
  (``client.chat.completions.stream(...)``, ``client.responses.stream(...)``) close the raw
  stream's *HTTP response* on an early ``with`` exit rather than the stream itself, so closing
  that response through the proxy ends the span too.
* :class:`DeferredResponseProxy` stands in for the ``APIResponse`` objects of
  ``.with_raw_response`` / ``.with_streaming_response``: the span ends when ``parse()`` returns a
  result (or hands its stream to a stream proxy, which ends it), when the response is closed, or,
  unread, when the proxy is garbage-collected — by the core's :class:`~convotel.finish.CallFinish`
  rule, as a stream would.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Iterator
from typing import Any

from openai import AsyncStream, Stream

from convotel.attributes import Message, ToolCall, model_attributes
from convotel.call_span import CallSpan
from convotel.endpoints import Endpoint
from convotel.finish import CallFinish, StreamAccumulator, StreamError
from convotel.openai.extraction import (
    Pair,
    chat_usage_attributes,
    completion_choice_attributes,
    field,
    output_attributes,
    responses_response_attributes,
)
from convotel.payloads import ToolCallDeltas
from convotel.streams import AsyncStreamProxy, ObjectProxy, StreamProxy


class _Choice:
    """What the chunks of one choice said so far."""

    __slots__ = ("finish_reason", "function_call", "role", "texts", "tool_calls")

    def __init__(self) -> None:
        self.role: str | None = None
        self.texts: list[str] = []
        self.tool_calls = ToolCallDeltas()
        #: A legacy ``function_call`` (its name, and its arguments' fragments joined).
        self.function_call: ToolCall | None = None
        self.finish_reason: str | None = None

    def add_function_call(self, delta: Any) -> None:
        call = self.function_call
        if call is None:
            call = self.function_call = ToolCall()
        name, arguments = delta.name, delta.arguments
        if name:
            call.name = name
        if arguments is not None:
            call.arguments = (call.arguments or "") + arguments

    def message(self) -> Message:
        return Message(
            role=self.role or "assistant",
            content="".join(self.texts) if self.texts else None,
            tool_calls=self.tool_calls.tool_calls(),
            function_call=self.function_call,
        )


def _unset_usage_field(chunk: Any) -> None:
    """Forget that a chunk's JSON had ``"usage": null`` (only convotel's request put it there)."""
    # The model's own set: pydantic 2's slot (read directly: ``model_fields_set`` is a property,
    # and this runs for every chunk), else pydantic 1's attribute.
    fields = getattr(chunk, "__pydantic_fields_set__", None)
    if fields is None:
        fields = getattr(chunk, "__fields_set__", None)
    if isinstance(fields, set):
        fields.discard("usage")


def _is_usage_only(choices: Any, usage: Any) -> bool:
    """The chunk the server sends when asked for usage: ``"choices": []`` and a record of counts
    (an object or a dict; not ``None``, nor a stray value such as ``false``)."""
    if type(choices) is not list or choices:
        return False
    return isinstance(usage, dict) or isinstance(getattr(usage, "__dict__", None), dict)


class ChatStreamAccumulator:
    """Chat completion chunks: text and tool-call deltas per choice, usage, finish reasons.

    With ``hide_usage_chunk`` (convotel asked for usage on the application's behalf) the final
    usage-only chunk (no choices) is recorded and hidden from the application, and the other
    chunks' ``"usage": null`` (sent because of that request) is marked unset again, so
    ``to_dict()`` and ``model_dump(exclude_unset=True)`` show the chunks the application asked for.
    """

    __slots__ = ("_choices", "_hide_usage_chunk", "_model", "_usage")

    def __init__(self, hide_usage_chunk: bool = False) -> None:
        self._hide_usage_chunk = hide_usage_chunk
        self._model: Any = None
        self._usage: Any = None
        self._choices: dict[int, _Choice] = {}

    def process(self, chunk: Any) -> bool | None:
        # This runs for every chunk: the common chunk (one choice, a text delta) is handled
        # inline; anything else goes through _add.
        if not self._model:  # Azure's first chunk (prompt filter results) has model ""
            self._model = chunk.model
        usage = chunk.usage
        if usage is not None:
            self._usage = usage
        elif self._hide_usage_chunk:
            fields = getattr(chunk, "__pydantic_fields_set__", None)
            if type(fields) is set:  # pydantic 2's slot (the property costs more)
                fields.discard("usage")
            else:
                _unset_usage_field(chunk)
        choices = chunk.choices
        if not choices:  # hidden: the usage-only chunk convotel asked for, nothing else
            return not (self._hide_usage_chunk and _is_usage_only(choices, usage))
        for choice in choices:
            state = self._choices.get(choice.index)
            if state is None:
                state = self._choices[choice.index] = _Choice()
            if type(self) is not ChatStreamAccumulator:
                self._add(state, choice)
            elif (delta := choice.delta) is not None and (
                delta.content and delta.role is None and not delta.tool_calls
            ):
                state.texts.append(delta.content)
            else:
                self._add(state, choice)
            if choice.finish_reason is not None:
                state.finish_reason = choice.finish_reason
        return None

    def _add(self, state: _Choice, choice: Any) -> None:
        delta = choice.delta
        if delta is None:
            return
        content = delta.content
        if content:
            state.texts.append(content)
        if delta.role is not None:
            state.role = delta.role
        if delta.tool_calls:
            for call_delta in delta.tool_calls:
                function = call_delta.function
                if function is None:
                    state.tool_calls.add_parts(call_delta.index, call_delta.id, None, None)
                else:
                    state.tool_calls.add_parts(
                        call_delta.index, call_delta.id, function.name, function.arguments
                    )
        elif not content and (function_call := getattr(delta, "function_call", None)):
            state.add_function_call(function_call)  # legacy function calling

    def attributes(self) -> Iterator[Pair]:
        yield from model_attributes(response_model=self._model)
        choices = [self._choices[i] for i in sorted(self._choices)]
        yield from output_attributes(
            [c.message() for c in choices], choices[0].finish_reason if choices else None
        )
        if self._usage is not None:
            yield from chat_usage_attributes(self._usage)


class CompletionStreamAccumulator(ChatStreamAccumulator):
    """Legacy completion chunks: ``choices[i].text`` instead of message deltas."""

    __slots__ = ()

    def _add(self, state: _Choice, choice: Any) -> None:
        if choice.text:
            state.texts.append(choice.text)

    def attributes(self) -> Iterator[Pair]:
        yield from model_attributes(response_model=self._model)
        choices = [self._choices[i] for i in sorted(self._choices)]
        yield from completion_choice_attributes(["".join(c.texts) for c in choices])
        if choices and choices[0].finish_reason is not None:
            yield from output_attributes((), choices[0].finish_reason)
        if self._usage is not None:
            yield from chat_usage_attributes(self._usage)


_FINAL_RESPONSE_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


def _stream_error(kind: str, error: Any) -> StreamError:
    """What an ``error`` event, or a failed response's ``error`` object, says went wrong."""
    code, message = field(error, "code"), field(error, "message")
    return StreamError(
        description=message if isinstance(message, str) and message else kind,
        type=code if isinstance(code, str) and code else kind,
    )


class ResponsesStreamAccumulator:
    """Responses API events: the final ``response`` object, else the text deltas seen so far.

    ``response.failed`` and ``error`` events fail the span; ``response.incomplete`` does not
    (its reason is the finish reason).
    """

    __slots__ = ("_error", "_final", "_model", "_texts")

    def __init__(self) -> None:
        self._final: Any = None
        self._model: Any = None
        self._texts: list[str] = []
        self._error: StreamError | None = None

    def process(self, event: Any) -> bool | None:
        kind = event.type
        if kind == "response.output_text.delta":
            self._texts.append(event.delta)
        elif kind in _FINAL_RESPONSE_EVENTS:
            self._final = event.response
            if kind == "response.failed":
                self._error = _stream_error(kind, field(event.response, "error"))
        elif kind == "response.created":
            self._model = event.response.model
        elif kind == "error":
            self._error = _stream_error(kind, event)
        return None

    def error(self) -> StreamError | None:
        return self._error

    def attributes(self) -> Iterator[Pair]:
        if self._final is not None:
            yield from responses_response_attributes(self._final)
            return
        yield from model_attributes(response_model=self._model)
        if self._texts:
            yield from output_attributes(
                [Message(role="assistant", content="".join(self._texts))], None
            )


class NoStreamAccumulator:
    """For endpoints that never stream (their deferred raw responses still need an accumulator)."""

    __slots__ = ()

    def process(self, chunk: Any) -> bool | None:
        return None

    def attributes(self) -> Iterator[Pair]:
        return iter(())


class _ClosingResponse(ObjectProxy):
    """A stream's HTTP response whose ``close()``/``aclose()`` also ends the stream's span."""

    def __init__(self, response: Any, stream: Any) -> None:
        super().__init__(response)
        self._self_stream = stream

    def close(self) -> None:
        try:
            self.__wrapped__.close()
        finally:
            self._self_stream.close()

    async def aclose(self) -> None:
        try:
            await self.__wrapped__.aclose()
        finally:
            await self._self_stream.close()


class OpenAIStreamProxy(StreamProxy):
    """The core's stream proxy; closing ``.response`` (as the SDK helpers do) ends the span."""

    @property
    def response(self) -> Any:
        return _ClosingResponse(self.__wrapped__.response, self)


class OpenAIAsyncStreamProxy(AsyncStreamProxy):
    """The core's async stream proxy; closing ``.response`` (as SDK helpers do) ends the span."""

    @property
    def response(self) -> Any:
        return _ClosingResponse(self.__wrapped__.response, self)


def proxy_stream(
    stream: Any,
    call: CallSpan,
    accumulator: StreamAccumulator,
    finish: CallFinish | None = None,
) -> Any:
    if isinstance(stream, AsyncStream):
        return OpenAIAsyncStreamProxy(stream, call, accumulator, finish)
    return OpenAIStreamProxy(stream, call, accumulator, finish)


class DeferredResponseProxy(ObjectProxy):
    """An ``APIResponse`` whose ``parse()`` result (a model or a stream) the span waits for."""

    def __init__(
        self, response: Any, call: CallSpan, endpoint: Endpoint, accumulator: StreamAccumulator
    ) -> None:
        super().__init__(response)
        self._self_finish = CallFinish(call, accumulator)
        self._self_endpoint = endpoint
        self._self_stream: Any = None

    def parse(self, *args: Any, **kwargs: Any) -> Any:
        result = self.__wrapped__.parse(*args, **kwargs)
        if inspect.isawaitable(result):
            return self._self_parsed_later(result)
        return self._self_parsed(result)

    async def _self_parsed_later(self, result: Awaitable[Any]) -> Any:
        return self._self_parsed(await result)

    def _self_parsed(self, result: Any) -> Any:
        finish: CallFinish = self._self_finish
        call = finish.call
        if isinstance(result, (Stream, AsyncStream)):
            if self._self_stream is None or self._self_stream.__wrapped__ is not result:
                if call.ended:
                    return result
                self._self_stream = proxy_stream(result, call, finish.accumulator, finish)
            return self._self_stream
        if not call.ended:
            endpoint = self._self_endpoint
            call.record(lambda: endpoint.response_attributes(result), "raw response")
            finish.returned()
        return result

    def close(self) -> Any:
        result = self.__wrapped__.close()
        if inspect.isawaitable(result):
            return self._self_closed_later(result)
        if self._self_stream is not None:
            self._self_stream.close()
        self._self_finish.closed()
        return result

    async def _self_closed_later(self, result: Awaitable[Any]) -> Any:
        try:
            return await result
        finally:
            if self._self_stream is not None:
                await self._self_stream.close()
            self._self_finish.closed()

    def __del__(self) -> None:
        finish: CallFinish | None = getattr(self, "_self_finish", None)
        if finish is not None and self._self_stream is None:
            finish.collected()
