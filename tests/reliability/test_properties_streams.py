"""Bad input never reaches the caller: every stream accumulator under the core's stream
proxy passes every chunk through. See ``property_support``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from property_support import LLM, PER_EXTRACTOR, PYDANTIC_WARNINGS, Recorder, configs, fails
from reliability_values import convotel_failures, odd_objects_with_fields

from convotel import TraceConfig
from convotel.spans import StreamProxy

pytestmark = PYDANTIC_WARNINGS


def _accumulators() -> dict[str, Callable[[], Any]]:
    from convotel.llama_index.streaming import TextAccumulator
    from convotel.mistralai import streaming as mistral
    from convotel.openai import streaming as openai

    return {
        "openai.chat": openai.ChatStreamAccumulator,
        "openai.chat_hiding_usage": lambda: openai.ChatStreamAccumulator(hide_usage_chunk=True),
        "openai.completion": openai.CompletionStreamAccumulator,
        "openai.responses": openai.ResponsesStreamAccumulator,
        "mistralai.completion": mistral.CompletionStreamAccumulator,
        "mistralai.conversation": mistral.ConversationStreamAccumulator,
        "llama_index.text": TextAccumulator,
    }


ACCUMULATORS = _accumulators()


@pytest.mark.parametrize("name", sorted(ACCUMULATORS))
@PER_EXTRACTOR
@given(chunks=st.lists(odd_objects_with_fields(8), max_size=5), config=configs)
def test_stream_accumulators_never_break_the_stream(
    name: str, chunks: list[Any], config: TraceConfig
) -> None:
    shown, expected_failure = [], False
    direct = ACCUMULATORS[name]()
    for chunk in chunks:
        try:
            hidden = direct.process(chunk) is False
        except Exception:  # noqa: BLE001
            hidden, expected_failure = False, True
        if not hidden:
            shown.append(chunk)
    expected_failure |= fails(direct.attributes)
    recorder = Recorder(config)
    call = recorder.tracing.start("stream", LLM)

    with convotel_failures() as failures:
        received = list(StreamProxy(iter(chunks), call, ACCUMULATORS[name]()))

    assert [id(chunk) for chunk in received] == [id(chunk) for chunk in shown]
    assert call.ended
    assert bool(failures) == expected_failure, [r.getMessage() for r in failures]
    assert recorder.invalid() == []
