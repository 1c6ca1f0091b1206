"""One reader for OpenAI-shaped payloads: chat messages, tool calls, content parts, stream deltas.

OpenAI, Mistral and the LiteLLM messages DSPy sends all use the chat shape of OpenAI's API. The
adapters read it through these functions into the core's records (:class:`Message`,
:class:`ToolCall`, :class:`ContentPart`), which :mod:`convotel.attributes` turns into pairs.

Payloads are request dicts (TypedDicts), SDK (pydantic) models, read through their ``__dict__``
(``getattr`` of a field a model does not declare raises inside pydantic, which costs microseconds
on the hot path), or other objects, read by attribute. The SDKs' "not given" sentinels (OpenAI
``NotGiven``/``Omit``, Mistral ``UNSET``/``Unset``) read as absent, with no SDK imported. Nothing
here mutates or consumes its input: one-shot iterables (a generator of messages) are not read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from openinference.semconv.trace import OpenInferenceMimeTypeValues, SpanAttributes

from convotel.attributes import (
    SECRET_PARAMETERS,
    UNSET_TYPE_NAMES,
    ContentPart,
    Message,
    Pair,
    ToolCall,
    is_unset,
    message_keys,
    token_count_pairs,
)
from convotel.json_encoding import json_text

__all__ = [
    "ToolCallDeltas",
    "chat_message",
    "chat_messages",
    "content_parts",
    "field",
    "function_call",
    "plain_chat_input_attributes",
    "plain_reply_attributes",
    "sequence_of",
    "text_of",
    "tool_call",
    "tool_calls",
    "usage_count_attributes",
    "user_arguments",
    "values_of",
]

_SEQUENCES = (list, tuple)
_EMPTY: Mapping[str, Any] = {}
_TEXT_PARTS = frozenset({"text", "input_text", "output_text"})
_IMAGE_PARTS = frozenset({"image_url", "input_image"})
#: Mistral's tool-call id when the model gave none.
_NO_ID = "null"
_INPUT_MESSAGES, _OUTPUT_MESSAGES = (
    SpanAttributes.LLM_INPUT_MESSAGES,
    SpanAttributes.LLM_OUTPUT_MESSAGES,
)
_INPUT_VALUE, _INPUT_MIME = SpanAttributes.INPUT_VALUE, SpanAttributes.INPUT_MIME_TYPE
_OUTPUT_VALUE, _OUTPUT_MIME = SpanAttributes.OUTPUT_VALUE, SpanAttributes.OUTPUT_MIME_TYPE
_TEXT_MIME = OpenInferenceMimeTypeValues.TEXT.value


def values_of(obj: Any) -> Mapping[str, Any]:
    """The fields of a request dict or of an SDK model, as a mapping (sentinels included)."""
    if isinstance(obj, dict):
        return obj
    values = getattr(obj, "__dict__", None)
    if isinstance(values, dict):
        return values
    return obj if isinstance(obj, Mapping) else _EMPTY


def field(obj: Any, name: str) -> Any:
    """``obj[name]`` of a dict, the field ``name`` of an SDK model or another object's attribute;
    ``None`` when absent or an SDK's "not given" sentinel."""
    if isinstance(obj, dict):  # request dicts: the fast path
        value = obj.get(name)
    else:
        try:
            values = obj.__dict__  # SDK models: their fields (cheaper than getattr's default)
        except AttributeError:
            values = None
        if isinstance(values, dict):
            value = values.get(name)
        elif isinstance(obj, Mapping):
            value = obj.get(name)
        else:
            value = getattr(obj, name, None)
    if value is None or type(value).__name__ not in UNSET_TYPE_NAMES:
        return value
    return None


def user_arguments(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments the application gave: no ``None`` or "not given" sentinels, no credentials,
    headers or transport settings."""
    return {
        key: value
        for key, value in kwargs.items()
        if key not in SECRET_PARAMETERS and not is_unset(value)
    }


def text_of(value: Any) -> str | None:
    """``value`` when it is text, else ``None``."""
    return value if isinstance(value, str) else None


def sequence_of(value: Any) -> Sequence[Any]:
    """``value`` when it is a list or tuple, else empty (one-shot iterables are not consumed)."""
    return value if isinstance(value, _SEQUENCES) else ()


def content_parts(content: Any) -> list[ContentPart]:
    """The parts of a list content: chat ``text``/``image_url`` (``{"url": ...}`` or a plain
    URL), Responses ``input_text``/``output_text``/``input_image``; other kinds by their type."""
    parts = []
    for part in sequence_of(content):
        kind = field(part, "type")
        if kind in _TEXT_PARTS:
            parts.append(ContentPart("text", text=text_of(field(part, "text"))))
        elif kind in _IMAGE_PARTS:
            image = field(part, "image_url")
            url = image if isinstance(image, str) else field(image, "url")
            parts.append(ContentPart("image", image_url=text_of(url)))
        elif isinstance(kind, str):
            parts.append(ContentPart(kind))
    return parts


def tool_call(call: Any) -> ToolCall:
    """A tool call as the model sent it (``function`` or ``custom``); dict arguments as JSON."""
    function = field(call, "function") or field(call, "custom")
    arguments = field(function, "arguments")
    if arguments is None:
        arguments = field(function, "input")
    call_id = field(call, "id")
    return ToolCall(
        call_id if isinstance(call_id, str) and call_id != _NO_ID else None,
        text_of(field(function, "name")),
        json_text(arguments),
    )


def tool_calls(calls: Any) -> list[ToolCall]:
    """The tool calls of a list (anything else has none)."""
    return [tool_call(call) for call in sequence_of(calls)]


def function_call(call: Any) -> ToolCall | None:
    """A legacy ``function_call`` (``name``, ``arguments``) of a message, if it has one."""
    name, arguments = text_of(field(call, "name")), json_text(field(call, "arguments"))
    return None if name is None and arguments is None else ToolCall(None, name, arguments)


def chat_message(message: Any, role: str | None = None) -> Message:
    """A chat message (request or response); ``role`` when the payload names none.

    Text content is the message's ``content`` (its ``refusal`` when it has none); empty text
    counts as none; list content becomes parts; tool calls and a legacy ``function_call`` are
    kept.
    """
    get = values_of(message).get
    content = get("content")
    parts: Sequence[ContentPart] = ()
    if isinstance(content, str) and content:
        text: str | None = content
    elif isinstance(content, _SEQUENCES):
        text, parts = None, content_parts(content)
    else:
        refusal = get("refusal")
        text = refusal if isinstance(refusal, str) and refusal else None
    calls = get("tool_calls")
    found = tool_calls(calls) if calls else ()
    message_role, call_id, name = get("role"), get("tool_call_id"), get("name")
    legacy_call = get("function_call")
    # positional, conditionals inline: this runs for every message of every call
    return Message(
        message_role if isinstance(message_role, str) else role,
        text,
        parts,
        found,
        call_id if call_id is None or isinstance(call_id, str) else None,
        name if name is None or isinstance(name, str) else None,
        None if legacy_call is None else function_call(legacy_call),
    )


def chat_messages(messages: Any) -> list[Message]:
    """The messages of a list (a one-shot iterable is not read)."""
    return [chat_message(message) for message in sequence_of(messages)]


# The common shapes, read without building Message records: what :func:`chat_message` and
# convotel.attributes' message and input/output value rules make of them, pair for pair (a test
# holds the two to the same answer); any other shape returns None for the general reader.


def plain_chat_input_attributes(messages: Any) -> list[Pair] | None:
    """``llm.input_messages.*`` and ``input.value`` of a request whose messages are all plain
    ``{"role": ..., "content": "<text>"}`` dicts, the last one the user's; else ``None``."""
    if type(messages) is not list or not messages:
        return None
    pairs: list[Pair] = []
    role: object = None
    content: object = None
    for index, message in enumerate(messages):
        if type(message) is not dict or len(message) != 2:
            return None
        role, content = message.get("role"), message.get("content")
        if type(role) is not str or type(content) is not str or not content:
            return None
        _, role_key, content_key = message_keys(_INPUT_MESSAGES, index)
        pairs += ((role_key, role), (content_key, content))
    if role != "user":
        return None
    pairs += ((_INPUT_VALUE, content), (_INPUT_MIME, _TEXT_MIME))
    return pairs


def plain_reply_attributes(message: Any) -> tuple[list[Pair], list[Pair]] | None:
    """The ``llm.output_messages.0.*`` and the ``output.value`` pairs of a reply that is text
    only (a role, no tool or function call, no name); else ``None``."""
    get = values_of(message).get
    role, content = get("role"), get("content")
    if type(role) is not str or type(content) is not str or not content:
        return None
    if get("tool_calls") or get("function_call") is not None or get("name") is not None:
        return None
    if get("tool_call_id") is not None:
        return None
    _, role_key, content_key = message_keys(_OUTPUT_MESSAGES, 0)
    return [(role_key, role), (content_key, content)], [
        (_OUTPUT_VALUE, content),
        (_OUTPUT_MIME, _TEXT_MIME),
    ]


def usage_count_attributes(usage: Any) -> list[Pair]:
    """Token counts of a usage record: chat's ``prompt_tokens``/``completion_tokens``, or the
    Responses API's and Anthropic's ``input_tokens``/``output_tokens``; cached (``cached_tokens``
    or ``cache_read_input_tokens``), cache-write, reasoning and audio (when some) details."""
    get = values_of(usage).get
    prompt, completion = get("prompt_tokens"), get("completion_tokens")
    if prompt is None:
        prompt = get("input_tokens")
    if completion is None:
        completion = get("output_tokens")
    prompt_details = get("prompt_tokens_details") or get("input_tokens_details")
    if prompt_details is None:  # a model that keeps it among its extra fields (Mistral)
        extra = getattr(usage, "__pydantic_extra__", None)
        prompt_details = extra.get("prompt_tokens_details") if isinstance(extra, dict) else None
    prompt_detail = values_of(prompt_details).get
    completion_detail = values_of(
        get("completion_tokens_details") or get("output_tokens_details")
    ).get
    cache_read, cache_write = prompt_detail("cached_tokens"), prompt_detail("cache_creation_tokens")
    if cache_read is None:
        cache_read = get("cache_read_input_tokens")
    if cache_write is None:
        cache_write = get("cache_creation_input_tokens")
    return token_count_pairs(  # usage_attributes' rule, without its keyword call
        (
            prompt,
            completion,
            get("total_tokens"),
            cache_read,
            cache_write,
            completion_detail("reasoning_tokens"),
            prompt_detail("audio_tokens") or None,
            completion_detail("audio_tokens") or None,
        )
    )


class ToolCallDeltas:
    """Tool calls assembled from streamed deltas: per call, the latest id and name given and the
    argument fragments joined (dict arguments as JSON text; ``None`` until a delta has some)."""

    __slots__ = ("_calls",)

    def __init__(self) -> None:
        self._calls: dict[object, ToolCall] = {}

    def __bool__(self) -> bool:
        return bool(self._calls)

    def add(self, delta: Any, position: int = 0) -> None:
        """One OpenAI-shaped tool-call delta (``index``, ``id``, ``function.name/arguments``);
        ``position`` (its place in the chunk) stands in for a missing index."""
        index = field(delta, "index")
        function = field(delta, "function")
        self.add_parts(
            index if isinstance(index, int) else position,
            field(delta, "id"),
            field(function, "name"),
            field(function, "arguments"),
        )

    def add_parts(self, key: object, call_id: Any, name: Any, arguments: Any) -> None:
        """What one delta says about the call ``key`` (an index, or an id)."""
        call = self._calls.get(key)
        if call is None:
            call = self._calls[key] = ToolCall()
        if isinstance(call_id, str) and call_id and call_id != _NO_ID:
            call.id = call_id
        if isinstance(name, str) and name:
            call.name = name
        if arguments is not None:  # "" too: the call has arguments, their text starts empty
            call.arguments = (call.arguments or "") + (json_text(arguments) or "")

    def tool_calls(self) -> list[ToolCall]:
        """The calls by index (calls keyed otherwise in the order they came)."""
        return [
            call
            for _, call in sorted(
                self._calls.items(), key=lambda item: item[0] if isinstance(item[0], int) else 0
            )
        ]
