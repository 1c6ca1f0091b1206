"""The chat stream accumulator's inline reading of the SDK's common event gives what its general
reader gives, for every shape of stream (``process`` vs ``_add`` on the same typed events)."""

from __future__ import annotations

from typing import Any

import pytest
from mistralai.client.models import CompletionEvent

from convotel.mistralai.streaming import CompletionStreamAccumulator

MODEL = "mistral-small-latest"
USAGE = {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}


def event(*choices: dict[str, Any], usage: dict[str, int] | None = None) -> CompletionEvent:
    data: dict[str, Any] = {"id": "c1", "model": MODEL, "object": "chat.completion.chunk"}
    data["choices"] = list(choices)
    if usage is not None:
        data["usage"] = usage
    return CompletionEvent.model_validate({"data": data})


def choice(index: int = 0, finish_reason: str | None = None, **delta: Any) -> dict[str, Any]:
    return {"index": index, "delta": delta, "finish_reason": finish_reason}


TOOL_DELTA = [{"id": "t1", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}]

STREAMS: dict[str, list[CompletionEvent]] = {
    "text": [
        event(choice(role="assistant", content="")),
        event(choice(content="Bon")),
        event(choice(content="jour")),
        event(choice(content="", finish_reason="stop"), usage=USAGE),
    ],
    "text without a role": [event(choice(content="Hi")), event(choice(content="!"))],
    "role given as null": [event(choice(role=None, content="Hi"))],
    "another role": [event(choice(role="tool", content="42")), event(choice(content="!"))],
    "content null": [event(choice(role="assistant", content=None)), event(choice(content="x"))],
    "content parts": [event(choice(content=[{"type": "text", "text": "Bon"}])), event(choice())],
    "tool call": [
        event(choice(role="assistant", content="", tool_calls=TOOL_DELTA)),
        event(choice(content="", finish_reason="tool_calls"), usage=USAGE),
    ],
    "two choices": [
        event(choice(0, content="a"), choice(1, content="b")),
        event(choice(1, content="c", finish_reason="stop")),
    ],
    "usage only": [event(choice(content="Hi")), event(usage=USAGE)],
    "unknown finish reason": [event(choice(content="Hi", finish_reason="model_length"))],
}


class GeneralReader(CompletionStreamAccumulator):
    """Reads every event through the general path."""

    def process(self, event: Any) -> None:
        self._add(event)


class CountingReader(CompletionStreamAccumulator):
    """Counts the events that leave the inline path."""

    general = 0

    def _add(self, event: Any) -> None:
        self.general += 1
        super()._add(event)


@pytest.mark.parametrize("name", list(STREAMS))
def test_inline_reading_records_what_the_general_reader_records(name: str) -> None:
    inline, general = CompletionStreamAccumulator(), GeneralReader()
    for streamed in STREAMS[name]:
        inline.process(streamed)
        general.process(streamed)

    assert list(inline.attributes()) == list(general.attributes())


@pytest.mark.parametrize(
    ("name", "general_events"),
    [("text", 0), ("text without a role", 0), ("tool call", 1), ("two choices", 1)],
)
def test_only_one_text_delta_per_event_is_read_inline(name: str, general_events: int) -> None:
    reader = CountingReader()
    for streamed in STREAMS[name]:
        reader.process(streamed)

    assert reader.general == general_events


def test_events_that_are_not_the_sdks_take_the_general_path() -> None:
    reader = CountingReader()
    reader.process({"data": {"model": MODEL, "choices": [choice(content="Hi")]}})

    assert reader.general == 1
    assert ("llm.output_messages.0.message.content", "Hi") in list(reader.attributes())
