"""The turn rule: which text of a model call's span a turn shows as its input and its output.

:class:`~convotel.turns.TraceJoiner` writes a turn's ``input.value`` / ``output.value`` on its
root from these readers (the rule itself is stated in :mod:`convotel.turns`); the CLI uses them
for turns recorded without root text. They read a finished span's attributes and never raise on
what they find there.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from openinference.semconv.trace import (
    MessageAttributes,
    MessageContentAttributes,
    OpenInferenceMimeTypeValues,
    SpanAttributes,
)
from opentelemetry.util.types import AttributeValue

__all__ = ["plain_value", "reply_text", "turn_input_text"]

_INPUT_VALUE = SpanAttributes.INPUT_VALUE
_INPUT_MIME = SpanAttributes.INPUT_MIME_TYPE
_OUTPUT_VALUE = SpanAttributes.OUTPUT_VALUE
_OUTPUT_MIME = SpanAttributes.OUTPUT_MIME_TYPE
_JSON = OpenInferenceMimeTypeValues.JSON.value
_INPUT_PREFIX = SpanAttributes.LLM_INPUT_MESSAGES + "."
_OUTPUT_PREFIX = SpanAttributes.LLM_OUTPUT_MESSAGES + "."
_ROLE_SUFFIX = "." + MessageAttributes.MESSAGE_ROLE
_CONTENT = MessageAttributes.MESSAGE_CONTENT
_CONTENTS = MessageAttributes.MESSAGE_CONTENTS + "."
_PART_TEXT = "." + MessageContentAttributes.MESSAGE_CONTENT_TEXT


def turn_input_text(attributes: Mapping[str, AttributeValue]) -> str | None:
    """The text a model call contributes as its turn's input: its newest user message.

    Falls back to the call's ``input.value`` when that is text (not JSON), e.g. the redaction
    marker of a hidden input.
    """
    text = _newest_user_message(attributes)
    if text is not None:
        return _field_values(text, output=False)
    return plain_value(attributes, _INPUT_VALUE, _INPUT_MIME)


def _newest_user_message(attributes: Mapping[str, AttributeValue]) -> str | None:
    """The text of the call's newest user message, as recorded."""
    # The SDK's attribute mapping is slow to read by item but quick to iterate by key: find the
    # messages by their role keys, then read roles from the newest back to the first user one.
    indexes = []
    for key in attributes:
        if key.endswith(_ROLE_SUFFIX) and key.startswith(_INPUT_PREFIX):
            head = key[_INPUT_PREFIX_LENGTH:_ROLE_SUFFIX_START]
            if head.isdigit():
                indexes.append(int(head))
    for index in sorted(indexes, reverse=True):
        if attributes.get(f"{_INPUT_PREFIX}{index}{_ROLE_SUFFIX}") == "user":
            return _message_text(attributes, f"{_INPUT_PREFIX}{index}.")
    return None


def reply_text(attributes: Mapping[str, AttributeValue]) -> str | None:
    """The reply text of a model call (its first output message), else its text output."""
    text = _message_text(attributes, _OUTPUT_FIRST)
    if text is None:
        for key in attributes:
            if key.startswith(_OUTPUT_PREFIX):
                return None  # an output message without text (tool calls only): no reply text
        text = plain_value(attributes, _OUTPUT_VALUE, _OUTPUT_MIME)
    if text is None:
        return None
    if text.startswith("{") and _asked_in_fields(attributes):
        return _json_field_values(text)
    return _field_values(text, output=True)


def _asked_in_fields(attributes: Mapping[str, AttributeValue]) -> bool:
    """Whether the call's newest user message is in DSPy's field format."""
    text = _newest_user_message(attributes)
    return text is not None and text.startswith(_FIELD_START)


def _index(key: str, prefix: str) -> int | None:
    head = key[len(prefix) :].split(".", 1)[0]
    return int(head) if head.isdigit() else None


def _message_text(attributes: Mapping[str, AttributeValue], message_prefix: str) -> str | None:
    """``message.content``, else the text content parts joined by newlines."""
    content = attributes.get(message_prefix + _CONTENT)
    if isinstance(content, str) and content:
        return content
    parts_prefix = message_prefix + _CONTENTS
    parts: list[tuple[int, str]] = []
    for key in attributes:
        if key.endswith(_PART_TEXT) and key.startswith(parts_prefix):
            index = _index(key, parts_prefix)
            value = attributes.get(key)
            if index is not None and isinstance(value, str):
                parts.append((index, value))
    return "\n".join(text for _, text in sorted(parts)) if parts else None


def plain_value(
    attributes: Mapping[str, AttributeValue], value_key: str, mime_key: str
) -> str | None:
    """The text at ``value_key`` unless it is empty or JSON (by ``mime_key``)."""
    value = attributes.get(value_key)
    if not isinstance(value, str) or not value or attributes.get(mime_key) == _JSON:
        return None
    return value


def _field_values(text: str, *, output: bool) -> str:
    """The fields' values of a message in DSPy's field format; any other text unchanged.

    DSPy's chat adapter writes ``[[ ## name ## ]]`` lines before each field's value and ends a
    request with a format reminder (``Respond with the corresponding output fields...``) and a
    reply with ``[[ ## completed ## ]]``. Of a reply, ``reasoning`` counts only when it is alone.
    """
    if not text.startswith(_FIELD_START):
        return text
    found = _FIELD_HEADER.split(text)  # ["", name, value, name, value, ...]
    if found[0].strip():
        return text
    fields = {
        name: value.split(_DSPY_INSTRUCTIONS, 1)[0].strip()
        for name, value in zip(found[1::2], found[2::2], strict=True)
        if name != "completed"
    }
    return _joined_fields(fields, output=output) or text


def _json_field_values(text: str) -> str:
    """A reply to a request in DSPy's field format given as a JSON object (DSPy's JSON
    adapter): its fields' values as :func:`_field_values` shows them; other text unchanged."""
    try:
        found = json.loads(text)
    except ValueError:
        return text
    if not isinstance(found, dict) or not found:
        return text
    fields = {
        str(name): value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        for name, value in found.items()
    }
    return _joined_fields(fields, output=True) or text


def _joined_fields(fields: dict[str, str], *, output: bool) -> str:
    """One field: its value; several: ``name: value`` paragraphs (of a reply, ``reasoning`` only
    when it is alone); empty fields count for nothing."""
    if output and len(fields) > 1:
        fields.pop("reasoning", None)
    fields = {name: value for name, value in fields.items() if value}
    if len(fields) == 1:
        return next(iter(fields.values()))
    return "\n\n".join(f"{name}: {value}" for name, value in fields.items())


_OUTPUT_FIRST = _OUTPUT_PREFIX + "0."
_INPUT_PREFIX_LENGTH = len(_INPUT_PREFIX)
_ROLE_SUFFIX_START = -len(_ROLE_SUFFIX)
_FIELD_START = "[[ ## "
_FIELD_HEADER = re.compile(r"^\[\[ ## (\w+) ## \]\][ \t]*(?:\n|$)", re.MULTILINE)
_DSPY_INSTRUCTIONS = "\n\nRespond with "  # the chat, JSON and XML adapters' format reminders
