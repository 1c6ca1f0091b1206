"""The pure extractors and accumulators, without spans or HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from openai import omit
from openai.types.chat import ChatCompletionChunk
from openai.types.responses import ResponseErrorEvent
from openinference.semconv.trace import SpanAttributes

from convotel import TraceConfig
from convotel.openai import extraction
from convotel.openai.endpoints import ChatCompletions
from convotel.openai.streaming import ChatStreamAccumulator, ResponsesStreamAccumulator
from convotel.spans import StreamError


def chunk(**fields: Any) -> ChatCompletionChunk:
    base = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": []}
    return ChatCompletionChunk.construct(**{**base, **fields})


def test_unset_sentinels_secrets_and_headers_are_not_user_parameters() -> None:
    parameters = extraction.user_parameters(
        {
            "model": "m",
            "temperature": 0.5,
            "audio": omit,
            "extra_headers": {"Authorization": "x"},
            "timeout": 3,
        }
    )
    assert parameters == {"model": "m", "temperature": 0.5}


def test_one_shot_message_iterables_are_not_consumed() -> None:
    def messages() -> Iterator[dict[str, str]]:
        yield {"role": "user", "content": "hi"}

    generator = messages()
    assert list(extraction.chat_request_attributes({"messages": generator})) == []
    assert next(generator) == {"role": "user", "content": "hi"}  # still there for the SDK


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"stream": True}, True),
        ({"stream": True, "stream_options": omit}, True),
        ({"stream": True, "stream_options": None}, True),
        ({"stream": True, "stream_options": "yes"}, False),  # a bad argument stays the app's
        ({"stream": True, "stream_options": ["include_usage"]}, False),
        ({"stream": True, "stream_options": {"include_obfuscation": False}}, True),
        ({"stream": True, "stream_options": {"include_usage": False}}, False),
        ({"stream": True, "extra_headers": {"X-Stainless-Raw-Response": "true"}}, False),
        ({"stream": True, "extra_body": {"stream_options": {"include_usage": True}}}, False),
        ({"stream": True, "extra_body": {"seed": 1}}, True),
        ({"stream": False}, False),
        ({}, False),
    ],
)
def test_usage_is_requested_only_for_streams_whose_app_did_not_decide(
    kwargs: dict[str, Any], expected: bool
) -> None:
    endpoint = ChatCompletions(lambda: TraceConfig(request_stream_usage=True))
    assert endpoint.requests_usage(kwargs) is expected
    adjusted = endpoint.adjust_kwargs(dict(kwargs))
    if expected:
        assert adjusted["stream_options"]["include_usage"] is True
    else:
        assert adjusted == kwargs


def test_usage_is_never_requested_when_the_option_is_off() -> None:
    endpoint = ChatCompletions(lambda: TraceConfig(request_stream_usage=False))
    kwargs = {"stream": True}
    assert endpoint.adjust_kwargs(kwargs) is kwargs


def test_only_the_usage_only_chunk_is_hidden() -> None:
    accumulator = ChatStreamAccumulator(hide_usage_chunk=True)
    azure_prompt_filter = chunk(model="", prompt_filter_results=[])
    usage_only = chunk(usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3})
    assert accumulator.process(azure_prompt_filter) is not False
    assert accumulator.process(usage_only) is False
    assert dict(accumulator.attributes())[SpanAttributes.LLM_TOKEN_COUNT_TOTAL] == 3
    assert ChatStreamAccumulator(hide_usage_chunk=False).process(usage_only) is not False


def test_responses_error_event_without_a_code_is_typed_by_the_event() -> None:
    accumulator = ResponsesStreamAccumulator()
    assert accumulator.error() is None
    accumulator.process(
        ResponseErrorEvent(type="error", code=None, message="Try again.", sequence_number=3)
    )
    assert accumulator.error() == StreamError(description="Try again.", type="error")
