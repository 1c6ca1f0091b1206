"""Builders from plain data to OpenInference ``(attribute, value)`` pairs.

Adapters translate their SDK's objects into the small records below (:class:`Message`,
:class:`ToolCall`, :class:`Document`...) or plain mappings, and these generators yield the pairs.
Each builder is pure and cheap; masking and JSON encoding happen when the pairs reach a
:class:`~convotel.spans.CallSpan`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from openinference.semconv.trace import (
    DocumentAttributes,
    EmbeddingAttributes,
    ImageAttributes,
    MessageAttributes,
    MessageContentAttributes,
    OpenInferenceMimeTypeValues,
    SpanAttributes,
    ToolAttributes,
    ToolCallAttributes,
)

from convotel.json_encoding import safe_json_dumps
from convotel.parameters import (
    SECRET_PARAMETERS,
    UNSET_TYPE_NAMES,
    invocation_parameter_attributes,
    invocation_parameters_json,
    is_unset,
)

__all__ = [
    "SECRET_PARAMETERS",
    "UNSET_TYPE_NAMES",
    "ContentPart",
    "Document",
    "Message",
    "Pair",
    "ToolCall",
    "document_attributes",
    "embedding_attributes",
    "embedding_input_value_attributes",
    "embedding_summary",
    "input_value_attributes",
    "invocation_parameter_attributes",
    "invocation_parameters_json",
    "is_unset",
    "llm_input_text",
    "llm_input_value_attributes",
    "llm_output_value_attributes",
    "message_attributes",
    "message_keys",
    "message_text",
    "model_attributes",
    "output_value_attributes",
    "token_count_pairs",
    "tool_definition_attributes",
    "usage_attributes",
]

#: One ``(attribute, value)`` pair, as every extractor yields them.
Pair = tuple[str, Any]

_JSON = OpenInferenceMimeTypeValues.JSON.value
_TEXT = OpenInferenceMimeTypeValues.TEXT.value
_IMAGE_URL_KEY = f"{MessageContentAttributes.MESSAGE_CONTENT_IMAGE}.{ImageAttributes.IMAGE_URL}"
_ARGUMENTS_KEY = ToolCallAttributes.TOOL_CALL_FUNCTION_ARGUMENTS_JSON
_FUNCTION_NAME = MessageAttributes.MESSAGE_FUNCTION_CALL_NAME
_FUNCTION_ARGUMENTS = MessageAttributes.MESSAGE_FUNCTION_CALL_ARGUMENTS_JSON


@dataclass(slots=True)
class ToolCall:
    """A tool (function) call requested by the model; ``arguments`` is the JSON text."""

    id: str | None = None
    name: str | None = None
    arguments: str | None = None


@dataclass(slots=True)
class ContentPart:
    """One part of a multi-modal message: ``type`` is ``"text"`` or ``"image"``."""

    type: str
    text: str | None = None
    image_url: str | None = None


@dataclass(slots=True)
class Message:
    """A chat message in provider-neutral form; ``function_call`` is a legacy (pre-tools)
    function call (its ``id`` unused)."""

    role: str | None = None
    content: str | None = None
    parts: Sequence[ContentPart] = ()
    tool_calls: Sequence[ToolCall] = ()
    tool_call_id: str | None = None
    name: str | None = None
    function_call: ToolCall | None = None


@dataclass(slots=True)
class Document:
    """A retrieved or reranked document."""

    content: str | None = None
    id: str | None = None
    score: float | None = None
    metadata: Mapping[str, Any] | None = field(default=None)


def _value_attributes(value_key: str, mime_key: str, value: Any) -> Iterator[Pair]:
    if value is None:
        return
    if isinstance(value, str):
        yield value_key, value
        yield mime_key, _TEXT
    else:
        yield value_key, safe_json_dumps(value)
        yield mime_key, _JSON


def input_value_attributes(value: Any) -> Iterator[Pair]:
    """``input.value`` (strings as text, anything else as JSON) and ``input.mime_type``."""
    return _value_attributes(SpanAttributes.INPUT_VALUE, SpanAttributes.INPUT_MIME_TYPE, value)


def output_value_attributes(value: Any) -> Iterator[Pair]:
    """``output.value`` (strings as text, anything else as JSON) and ``output.mime_type``."""
    return _value_attributes(SpanAttributes.OUTPUT_VALUE, SpanAttributes.OUTPUT_MIME_TYPE, value)


def embedding_input_value_attributes(inputs: Any) -> Iterator[Pair]:
    """``input.value`` of an EMBEDDING span: the text embedded, or the inputs as a JSON array."""
    if isinstance(inputs, str):
        return input_value_attributes(inputs)
    return input_value_attributes(list(inputs) if isinstance(inputs, (list, tuple)) else None)


def message_text(message: Message) -> str | None:
    """A message's text: its content, else its text parts joined by newlines (as the turn's)."""
    if message.content:
        return message.content
    texts = [part.text for part in message.parts if part.text]
    return "\n".join(texts) if texts else None


def llm_input_text(messages: Sequence[Message]) -> str | None:
    """An LLM span's input text: the newest user message's text; when that message has no text
    (or there is no user message), the newest text any message has (a tool result...)."""
    if messages:
        last = messages[-1]
        if last.role == "user" and last.content:  # the common case, without the loops
            return last.content
    for message in reversed(messages):
        if message.role == "user":
            text = message_text(message)
            if text is not None:
                return text
            break
    for message in reversed(messages):
        text = message_text(message)
        if text is not None:
            return text
    return None


def _calls(message: Message) -> list[dict[str, str | None]] | None:
    """A message's tool calls (``id``, ``name``, ``arguments``) or legacy function call
    (``name``, ``arguments``), as recorded in ``input.value``/``output.value``; else ``None``."""
    if message.tool_calls:
        return [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in message.tool_calls]
    call = message.function_call
    if call is not None:
        return [{"name": call.name, "arguments": call.arguments}]
    return None


def llm_input_value_attributes(messages: Sequence[Message]) -> Iterator[Pair]:
    """``input.value`` of an LLM span from its input messages: the text of
    :func:`llm_input_text`; when no message has text, the newest message's calls as JSON (as
    ``output.value`` shows a reply's), else its content parts' types (never an image itself)."""
    text = llm_input_text(messages)
    if text is not None:
        yield SpanAttributes.INPUT_VALUE, text
        yield SpanAttributes.INPUT_MIME_TYPE, _TEXT
    elif messages:
        newest = messages[-1]
        calls = _calls(newest)
        if calls is not None:
            yield from input_value_attributes(calls)
        elif newest.parts:
            yield from input_value_attributes([{"type": part.type} for part in newest.parts])


def llm_output_value_attributes(
    messages: Sequence[Message], *, replied: bool = False
) -> Iterator[Pair]:
    """``output.value`` of an LLM span: the reply's text (the first output message's), else
    its tool calls (or legacy function call) as JSON, else empty text: a reply always has one,
    so a hidden output (the redaction marker) is told from none. Without output messages,
    nothing unless ``replied`` (a response came, with no message in it)."""
    if messages:
        first = messages[0]
        text = first.content or message_text(first)
        if text is not None:
            yield SpanAttributes.OUTPUT_VALUE, text
            yield SpanAttributes.OUTPUT_MIME_TYPE, _TEXT
            return
        calls = _calls(first)
        if calls is not None:
            yield from output_value_attributes(calls)
            return
    elif not replied:
        return
    yield SpanAttributes.OUTPUT_VALUE, ""
    yield SpanAttributes.OUTPUT_MIME_TYPE, _TEXT


def model_attributes(
    *,
    provider: str | None = None,
    system: str | None = None,
    request_model: str | None = None,
    response_model: str | None = None,
) -> list[Pair]:
    """Provider, system and model names; ``llm.model_name`` is the returned model if known.

    A list (not a generator): every model call builds one."""
    pairs: list[Pair] = []
    if provider:
        pairs.append((SpanAttributes.LLM_PROVIDER, provider))
    if system:
        pairs.append((SpanAttributes.LLM_SYSTEM, system))
    if request_model:
        pairs.append((SpanAttributes.LLM_REQUEST_MODEL_NAME, request_model))
    if response_model:
        pairs.append((SpanAttributes.LLM_RESPONSE_MODEL_NAME, response_model))
    model = response_model or request_model
    if model:
        pairs.append((SpanAttributes.LLM_MODEL_NAME, model))
    return pairs


@functools.lru_cache(maxsize=1024)
def message_keys(prefix: str, index: int) -> tuple[str, str, str]:
    """The key prefix of message ``index`` and its role and content keys (built once)."""
    base = f"{prefix}.{index}."
    return base, base + MessageAttributes.MESSAGE_ROLE, base + MessageAttributes.MESSAGE_CONTENT


def message_attributes(
    prefix: str, messages: Iterable[Message], first_index: int = 0
) -> Iterator[Pair]:
    """Pairs for ``prefix`` (``llm.input_messages`` or ``llm.output_messages``) per message,
    numbered from ``first_index``."""
    for index, message in enumerate(messages, first_index):
        base, role_key, content_key = message_keys(prefix, index)
        if message.role is not None:
            yield role_key, message.role
        if message.content is not None:
            yield content_key, message.content
        if message.name is not None:
            yield base + MessageAttributes.MESSAGE_NAME, message.name
        if message.tool_call_id is not None:
            yield base + MessageAttributes.MESSAGE_TOOL_CALL_ID, message.tool_call_id
        if message.parts:
            yield from _content_part_attributes(base, message.parts)
        if message.tool_calls:
            yield from _tool_call_attributes(base, message.tool_calls)
        if message.function_call is not None:
            yield from _function_call_attributes(base, message.function_call)


def _content_part_attributes(base: str, parts: Iterable[ContentPart]) -> Iterator[Pair]:
    for part_index, part in enumerate(parts):
        part_base = f"{base}{MessageAttributes.MESSAGE_CONTENTS}.{part_index}."
        yield part_base + MessageContentAttributes.MESSAGE_CONTENT_TYPE, part.type
        if part.text is not None:
            yield part_base + MessageContentAttributes.MESSAGE_CONTENT_TEXT, part.text
        if part.image_url is not None:
            yield part_base + _IMAGE_URL_KEY, part.image_url


def _tool_call_attributes(base: str, calls: Iterable[ToolCall]) -> Iterator[Pair]:
    for call_index, call in enumerate(calls):
        call_base = f"{base}{MessageAttributes.MESSAGE_TOOL_CALLS}.{call_index}."
        if call.id is not None:
            yield call_base + ToolCallAttributes.TOOL_CALL_ID, call.id
        if call.name is not None:
            yield call_base + ToolCallAttributes.TOOL_CALL_FUNCTION_NAME, call.name
        if call.arguments is not None:
            yield call_base + _ARGUMENTS_KEY, call.arguments


def _function_call_attributes(base: str, call: ToolCall) -> Iterator[Pair]:
    if call.name is not None:
        yield base + _FUNCTION_NAME, call.name
    if call.arguments is not None:
        yield base + _FUNCTION_ARGUMENTS, call.arguments


def tool_definition_attributes(tools: Iterable[Any]) -> Iterator[Pair]:
    """``llm.tools.{i}.tool.json_schema`` for each tool definition (dicts or SDK models)."""
    for index, tool in enumerate(tools):
        yield (
            f"{SpanAttributes.LLM_TOOLS}.{index}.{ToolAttributes.TOOL_JSON_SCHEMA}",
            safe_json_dumps(tool),
        )


_TOKEN_COUNT_KEYS = (
    SpanAttributes.LLM_TOKEN_COUNT_PROMPT,
    SpanAttributes.LLM_TOKEN_COUNT_COMPLETION,
    SpanAttributes.LLM_TOKEN_COUNT_TOTAL,
    SpanAttributes.LLM_TOKEN_COUNT_PROMPT_DETAILS_CACHE_READ,
    SpanAttributes.LLM_TOKEN_COUNT_PROMPT_DETAILS_CACHE_WRITE,
    SpanAttributes.LLM_TOKEN_COUNT_COMPLETION_DETAILS_REASONING,
    SpanAttributes.LLM_TOKEN_COUNT_PROMPT_DETAILS_AUDIO,
    SpanAttributes.LLM_TOKEN_COUNT_COMPLETION_DETAILS_AUDIO,
)


def usage_attributes(
    *,
    prompt: int | None = None,
    completion: int | None = None,
    total: int | None = None,
    cache_read: int | None = None,
    cache_write: int | None = None,
    reasoning: int | None = None,
    prompt_audio: int | None = None,
    completion_audio: int | None = None,
) -> list[Pair]:
    """Token counts (integers only); the total is derived from prompt + completion when not
    given (:func:`token_count_pairs`)."""
    return token_count_pairs(
        (
            prompt,
            completion,
            total,
            cache_read,
            cache_write,
            reasoning,
            prompt_audio,
            completion_audio,
        )
    )


def token_count_pairs(counts: tuple[object, ...]) -> list[Pair]:
    """The pairs of the integer ``counts``, given in :func:`usage_attributes`' order (prompt,
    completion, total, cache read, cache write, reasoning, prompt audio, completion audio); the
    total is derived from prompt + completion when not given."""
    prompt, completion, total = counts[0], counts[1], counts[2]
    if total is None and isinstance(prompt, int) and isinstance(completion, int):
        counts = (prompt, completion, prompt + completion, *counts[3:])
    return [
        (key, count)
        for key, count in zip(_TOKEN_COUNT_KEYS, counts)  # noqa: B905 - both have eight
        if type(count) is int or (isinstance(count, int) and not isinstance(count, bool))
    ]


def embedding_summary(vectors: Sequence[Any]) -> str:
    """An EMBEDDING span's ``output.value``: how many vectors of how many dimensions (the
    vectors themselves are in ``embedding.embeddings.*``), e.g. ``"2 vectors of 1536
    dimensions"``; ``"1 vector"`` when its dimensions are unknown (base64 text)."""
    count = f"{len(vectors)} vector" if len(vectors) == 1 else f"{len(vectors)} vectors"
    first = vectors[0] if vectors else None
    if not isinstance(first, (list, tuple)):
        return count
    return f"{count} of 1 dimension" if len(first) == 1 else f"{count} of {len(first)} dimensions"


def embedding_attributes(
    *,
    model: str | None = None,
    texts: Sequence[str] | None = None,
    vectors: Sequence[Sequence[float] | str] | None = None,
) -> Iterator[Pair]:
    """``embedding.model_name``, ``embedding.embeddings.{i}.embedding.{text,vector}`` and, with
    some ``vectors``, ``output.value`` (:func:`embedding_summary`); vectors that are not lists
    of numbers (base64 text) are counted, not recorded."""
    if model:
        yield SpanAttributes.EMBEDDING_MODEL_NAME, model
    prefix = SpanAttributes.EMBEDDING_EMBEDDINGS
    for index, text in enumerate(texts or ()):
        if isinstance(text, str):
            yield f"{prefix}.{index}.{EmbeddingAttributes.EMBEDDING_TEXT}", text
    if not vectors:
        return
    for index, vector in enumerate(vectors):
        if not isinstance(vector, str):
            yield f"{prefix}.{index}.{EmbeddingAttributes.EMBEDDING_VECTOR}", vector
    yield SpanAttributes.OUTPUT_VALUE, embedding_summary(vectors)
    yield SpanAttributes.OUTPUT_MIME_TYPE, _TEXT


def document_attributes(prefix: str, documents: Iterable[Document]) -> Iterator[Pair]:
    """Pairs for ``prefix`` (e.g. ``retrieval.documents``) per document."""
    for index, document in enumerate(documents):
        base = f"{prefix}.{index}."
        if document.id is not None:
            yield base + DocumentAttributes.DOCUMENT_ID, document.id
        if document.content is not None:
            yield base + DocumentAttributes.DOCUMENT_CONTENT, document.content
        if document.score is not None:
            yield base + DocumentAttributes.DOCUMENT_SCORE, float(document.score)
        if document.metadata:
            yield base + DocumentAttributes.DOCUMENT_METADATA, safe_json_dumps(document.metadata)
