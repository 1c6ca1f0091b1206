"""Reading finished spans in the Mistral tests."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mistralai.client.models import SystemMessageTypedDict, ToolTypedDict, UserMessageTypedDict
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

HELLO: list[UserMessageTypedDict] = [{"role": "user", "content": "Say hello in French."}]
WEATHER_QUESTION: list[UserMessageTypedDict] = [
    {"role": "user", "content": "What is the weather in Paris?"}
]
WEATHER_TOOL: ToolTypedDict = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
JSON_MODE_MESSAGES: list[SystemMessageTypedDict | UserMessageTypedDict] = [
    {"role": "system", "content": "Answer in JSON with keys city and country."},
    {"role": "user", "content": "Where is the Eiffel Tower?"},
]
CHAT_MODEL = "mistral-small-latest"
AGENT_ID = "ag_0198d2c5e1a47b3c9f2e8d6a4b1c0e9f"
CONVERSATION_ID = "conv_0198d2c6f3b27e8a9c4d1f0b2a3e5c7d"
#: The input of the conversation whose stream ends in a ``conversation.response.error`` event.
CONVERSATION_ERROR_INPUT = "Summarise today's news about Lyon."


def only_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    """The single finished span; fails when there are none or several."""
    spans = exporter.get_finished_spans()
    assert len(spans) == 1, [span.name for span in spans]
    return spans[0]


def attributes(span: ReadableSpan) -> Mapping[str, Any]:
    assert span.attributes is not None
    return span.attributes


def json_attribute(span: ReadableSpan, key: str) -> Any:
    value = attributes(span)[key]
    assert isinstance(value, str)
    return json.loads(value)
