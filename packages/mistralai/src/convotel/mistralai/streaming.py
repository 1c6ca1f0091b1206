"""Stream accumulators: what a Mistral stream said, collected chunk by chunk for the span."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any

from openinference.semconv.trace import SpanAttributes
from opentelemetry.semconv._incubating.attributes.gen_ai_attributes import GEN_AI_CONVERSATION_ID

from convotel.attributes import Message, Pair, model_attributes
from convotel.mistralai.extraction import output_messages, usage_pairs
from convotel.payloads import ToolCallDeltas, content_parts, field, values_of
from convotel.spans import StreamError

_CompletionEvent: Any  # the class, or None
try:  # the SDK's typed chat event: read with plain attribute reads (mistralai stays optional)
    from mistralai.client.models import CompletionEvent as _CompletionEvent
except ImportError:  # pragma: no cover - without the SDK every event takes the general path
    _CompletionEvent = None


def _text(content: Any) -> str:
    """The text of a delta's content: a string, or the text parts of a chunk list."""
    if isinstance(content, str):
        return content
    return "".join(part.text or "" for part in content_parts(content) if part.type == "text")


@dataclass
class _Choice:
    role: str = "assistant"
    text: list[str] = dataclass_field(default_factory=list)
    tool_calls: ToolCallDeltas = dataclass_field(default_factory=ToolCallDeltas)
    finish_reason: str | None = None

    def message(self) -> Message:
        return Message(
            role=self.role,
            content="".join(self.text) or None,
            tool_calls=self.tool_calls.tool_calls(),
        )


class CompletionStreamAccumulator:
    """Chat, FIM and agents streams: ``CompletionEvent`` chunks, usage in the last one."""

    def __init__(self) -> None:
        self._model: str | None = None
        self._choices: dict[int, _Choice] = {}
        self._usage: Any = None

    def process(self, event: Any) -> None:
        # This runs for every chunk: the SDK's common event (one choice, a text delta) is read
        # inline; anything else (dicts, tool-call deltas, content parts, several choices) goes
        # through _add. Mistral's UNSET sentinel is falsy, so ``or`` skips it as it skips None.
        if type(event) is _CompletionEvent:
            chunk = event.data
            choices = chunk.choices
            if type(choices) is list and len(choices) == 1:
                choice = choices[0]
                delta = choice.delta
                content = delta.content
                if type(content) is str and not delta.tool_calls:
                    self._model = chunk.model or self._model
                    self._usage = chunk.usage or self._usage
                    index = choice.index or 0
                    state = self._choices.get(index)
                    if state is None:
                        state = self._choices[index] = _Choice()
                    state.role = delta.role or state.role
                    state.text.append(content)
                    state.finish_reason = choice.finish_reason or state.finish_reason
                    return
        self._add(event)

    def _add(self, event: Any) -> None:
        # The models' fields are read from their ``__dict__`` (values_of).
        chunk = values_of(field(event, "data"))
        self._model = chunk.get("model") or self._model
        self._usage = chunk.get("usage") or self._usage
        for choice in chunk.get("choices") or ():
            values = values_of(choice)
            index = values.get("index") or 0
            state = self._choices.get(index)
            if state is None:
                state = self._choices[index] = _Choice()
            delta = values_of(values.get("delta"))
            state.role = delta.get("role") or state.role
            content = delta.get("content")
            state.text.append(content if type(content) is str else _text(content))
            for position, raw_call in enumerate(delta.get("tool_calls") or ()):
                state.tool_calls.add(raw_call, position)
            state.finish_reason = values.get("finish_reason") or state.finish_reason

    def attributes(self) -> Iterator[Pair]:
        yield from model_attributes(response_model=self._model)
        choices = [choice for _, choice in sorted(self._choices.items())]
        messages = [choice.message() for choice in choices]
        yield from output_messages(messages)
        if choices and choices[0].finish_reason:
            yield SpanAttributes.LLM_FINISH_REASON, str(choices[0].finish_reason)
        yield from usage_pairs(self._usage)


_CONVERSATION_ERROR = "conversation.response.error"


class ConversationStreamAccumulator:
    """Conversation streams: named events from ``conversation.response.started`` to ``.done``.

    A ``conversation.response.error`` event fails the span (its ``code`` is the ``error.type``).
    """

    def __init__(self) -> None:
        self._conversation_id: str | None = None
        self._model: str | None = None
        self._replies: dict[Any, list[str]] = {}
        self._calls = ToolCallDeltas()
        self._usage: Any = None
        self._error: StreamError | None = None

    def process(self, event: Any) -> None:
        data = field(event, "data")
        kind = field(data, "type")
        self._model = field(data, "model") or self._model
        if kind == "conversation.response.started":
            self._conversation_id = field(data, "conversation_id")
        elif kind == "message.output.delta":
            self._replies.setdefault(field(data, "id"), []).append(_text(field(data, "content")))
        elif kind == "function.call.delta":
            call_id = field(data, "tool_call_id")
            self._calls.add_parts(
                call_id or "", call_id, field(data, "name"), field(data, "arguments")
            )
        elif kind == "conversation.response.done":
            self._usage = field(data, "usage")
        elif kind == _CONVERSATION_ERROR:
            code = field(data, "code")
            self._error = StreamError(
                description=str(field(data, "message") or _CONVERSATION_ERROR),
                type=_CONVERSATION_ERROR if code is None else str(code),
            )

    def error(self) -> StreamError | None:
        return self._error

    def attributes(self) -> Iterator[Pair]:
        if self._conversation_id:
            yield GEN_AI_CONVERSATION_ID, self._conversation_id
        yield from model_attributes(response_model=self._model)
        messages = [
            Message(role="assistant", content="".join(text)) for text in self._replies.values()
        ]
        messages += [
            Message(role="assistant", tool_calls=[call]) for call in self._calls.tool_calls()
        ]
        yield from output_messages(messages)
        yield from usage_pairs(self._usage)
