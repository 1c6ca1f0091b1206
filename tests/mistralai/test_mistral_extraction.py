"""The pure extractors and accumulators, on plain dicts shaped like Mistral's wire format."""

from __future__ import annotations

from openinference.semconv.trace import MessageAttributes, SpanAttributes, ToolCallAttributes
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE

from convotel.attributes import ContentPart, ToolCall
from convotel.mistralai.extraction import (
    chat_request_attributes,
    conversation_request_attributes,
    message,
)
from convotel.mistralai.streaming import ConversationStreamAccumulator
from convotel.spans import StreamError

OUTPUT_0 = f"{SpanAttributes.LLM_OUTPUT_MESSAGES}.0."


def test_message_with_text_and_image_parts_keeps_both() -> None:
    converted = message(
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is on this picture?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            ],
        }
    )
    assert converted.content is None
    assert list(converted.parts) == [
        ContentPart("text", text="What is on this picture?"),
        ContentPart("image", image_url="https://example.com/cat.png"),
    ]


def test_assistant_tool_call_with_dict_arguments_becomes_json_text() -> None:
    converted = message(
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "null", "function": {"name": "f", "arguments": {"x": 1}}}],
        }
    )
    assert converted.content is None
    assert list(converted.tool_calls) == [ToolCall(id=None, name="f", arguments='{"x": 1}')]


def test_tool_result_message_keeps_its_call_id() -> None:
    pairs = dict(
        chat_request_attributes(
            {
                "model": "mistral-small-latest",
                "messages": [{"role": "tool", "content": "18°C", "tool_call_id": "D681PevKs"}],
            }
        )
    )
    prefix = f"{SpanAttributes.LLM_INPUT_MESSAGES}.0."
    assert pairs[prefix + MessageAttributes.MESSAGE_ROLE] == "tool"
    assert pairs[prefix + MessageAttributes.MESSAGE_TOOL_CALL_ID] == "D681PevKs"


def test_conversation_request_with_instructions_and_function_result() -> None:
    pairs = dict(
        conversation_request_attributes(
            {
                "conversation_id": "conv_1",
                "instructions": "Be brief.",
                "inputs": [{"type": "function.result", "tool_call_id": "c1", "result": "18°C"}],
            }
        )
    )
    prefix = SpanAttributes.LLM_INPUT_MESSAGES
    assert pairs[f"{prefix}.0.{MessageAttributes.MESSAGE_ROLE}"] == "system"
    assert pairs[f"{prefix}.1.{MessageAttributes.MESSAGE_ROLE}"] == "tool"
    assert pairs[f"{prefix}.1.{MessageAttributes.MESSAGE_CONTENT}"] == "18°C"


def test_conversation_stream_function_call_and_error_event() -> None:
    accumulator = ConversationStreamAccumulator()
    for data in (
        {"type": "conversation.response.started", "conversation_id": "conv_1"},
        {"type": "function.call.delta", "tool_call_id": "c1", "name": "get_weather"},
        {"type": "function.call.delta", "tool_call_id": "c1", "arguments": '{"city": '},
        {"type": "function.call.delta", "tool_call_id": "c1", "arguments": '"Paris"}'},
        {"type": "conversation.response.error", "message": "tool failed", "code": 3000},
    ):
        accumulator.process({"event": data["type"], "data": data})

    pairs = dict(accumulator.attributes())
    call = f"{OUTPUT_0}{MessageAttributes.MESSAGE_TOOL_CALLS}.0."
    assert pairs[call + ToolCallAttributes.TOOL_CALL_FUNCTION_NAME] == "get_weather"
    assert pairs[call + ToolCallAttributes.TOOL_CALL_FUNCTION_ARGUMENTS_JSON] == '{"city": "Paris"}'
    assert ERROR_TYPE not in pairs  # the core records the failure from error()
    assert accumulator.error() == StreamError(description="tool failed", type="3000")


def test_conversation_stream_without_an_error_event_reports_none() -> None:
    accumulator = ConversationStreamAccumulator()
    data = {"type": "conversation.response.done", "usage": {"total_tokens": 3}}
    accumulator.process({"event": data["type"], "data": data})
    assert accumulator.error() is None
