"""Pure extractors: Mistral SDK requests and responses to OpenInference attribute pairs.

Requests arrive as the keyword arguments of the SDK method (dicts, TypedDicts or the SDK's
pydantic models, with the SDK's ``UNSET`` for parameters the user did not give); responses are
the SDK's pydantic models. Nothing here imports ``mistralai``: fields are read by name.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from openinference.semconv.trace import (
    OpenInferenceLLMProviderValues,
    OpenInferenceLLMSystemValues,
    SpanAttributes,
)
from opentelemetry.semconv._incubating.attributes.gen_ai_attributes import (
    GEN_AI_AGENT_ID,
    GEN_AI_CONVERSATION_ID,
)

from convotel.attributes import (
    SECRET_PARAMETERS,
    ContentPart,
    Message,
    ToolCall,
    embedding_attributes,
    input_value_attributes,
    invocation_parameter_attributes,
    is_unset,
    message_attributes,
    model_attributes,
    output_value_attributes,
    tool_definition_attributes,
    usage_attributes,
)

Pair = tuple[str, Any]

PROVIDER = OpenInferenceLLMProviderValues.MISTRALAI.value
SYSTEM = OpenInferenceLLMSystemValues.MISTRALAI.value

#: Request fields recorded as messages, tools or ids rather than as invocation parameters.
_NOT_PARAMETERS = frozenset(
    {
        "model",
        "messages",
        "tools",
        "stream",
        "prompt",
        "suffix",
        "inputs",
        "instructions",
        "agent_id",
        "conversation_id",
    }
)


_MISSING = object()


def field(obj: Any, name: str) -> Any:
    """``obj[name]`` or ``obj.name``; ``None`` when missing or the SDK's ``UNSET``."""
    if isinstance(obj, dict):  # request TypedDicts; the fast path
        value = obj.get(name)
    else:
        value = getattr(obj, name, _MISSING)
        if value is _MISSING:
            value = obj.get(name) if isinstance(obj, Mapping) else None
    return None if is_unset(value) else value


def user_arguments(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments the user set, without credentials or transport settings."""
    return {
        key: value
        for key, value in kwargs.items()
        if key not in SECRET_PARAMETERS and not is_unset(value)
    }


def _json_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


# --- messages -----------------------------------------------------------------------------------


def content_parts(content: Any) -> list[ContentPart]:
    """Text and image parts of a list content (``TextChunk``, ``ImageURLChunk``, dicts)."""
    parts: list[ContentPart] = []
    for chunk in content:
        kind = field(chunk, "type")
        if kind == "text":
            parts.append(ContentPart("text", text=field(chunk, "text")))
        elif kind == "image_url":
            image = field(chunk, "image_url")
            url = image if isinstance(image, str) else field(image, "url")
            parts.append(ContentPart("image", image_url=url))
    return parts


def tool_calls(raw_calls: Any) -> list[ToolCall]:
    """Tool calls of an assistant message; dict arguments become JSON text."""
    calls = []
    for raw in raw_calls or ():
        function = field(raw, "function")
        call_id = field(raw, "id")
        calls.append(
            ToolCall(
                id=call_id if call_id != "null" else None,  # the SDK's default for "no id"
                name=field(function, "name"),
                arguments=_json_text(field(function, "arguments")),
            )
        )
    return calls


def message(raw: Any, role: str | None = None) -> Message:
    """A provider-neutral message from a request message or a response's assistant message."""
    content = field(raw, "content")
    text = content if isinstance(content, str) else None
    parts = content_parts(content) if isinstance(content, list) else []
    if text is None and parts and all(part.type == "text" for part in parts):
        text = "".join(part.text or "" for part in parts)
        parts = []
    return Message(
        role=role or field(raw, "role"),
        content=text or None,
        parts=parts,
        tool_calls=tool_calls(field(raw, "tool_calls")),
        tool_call_id=field(raw, "tool_call_id"),
        name=field(raw, "name"),
    )


def input_messages(raw_messages: Iterable[Any]) -> Iterator[Pair]:
    return message_attributes(SpanAttributes.LLM_INPUT_MESSAGES, map(message, raw_messages))


def output_messages(messages: Iterable[Message]) -> Iterator[Pair]:
    return message_attributes(SpanAttributes.LLM_OUTPUT_MESSAGES, messages)


# --- requests -----------------------------------------------------------------------------------


def _parameters(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in kwargs.items() if key not in _NOT_PARAMETERS}


def _common_request(kwargs: Mapping[str, Any]) -> Iterator[Pair]:
    arguments = user_arguments(kwargs)
    yield from model_attributes(
        provider=PROVIDER, system=SYSTEM, request_model=field(kwargs, "model")
    )
    yield from invocation_parameter_attributes(_parameters(arguments))
    yield from input_value_attributes(arguments)
    tools = field(kwargs, "tools")
    if tools:
        yield from tool_definition_attributes(tools)


def chat_request_attributes(kwargs: Mapping[str, Any]) -> Iterator[Pair]:
    """``chat.complete``/``chat.stream`` and ``agents.*``: model or agent, messages, tools."""
    yield from _common_request(kwargs)
    agent_id = field(kwargs, "agent_id")
    if agent_id:
        yield GEN_AI_AGENT_ID, agent_id
    yield from input_messages(field(kwargs, "messages") or ())


def fim_request_attributes(kwargs: Mapping[str, Any]) -> Iterator[Pair]:
    """``fim.complete``/``fim.stream``: the code before (prompt) and after (suffix) the gap."""
    yield from _common_request(kwargs)
    prompt = field(kwargs, "prompt")
    if isinstance(prompt, str):
        yield SpanAttributes.LLM_PROMPTS, [prompt]


def embedding_request_attributes(kwargs: Mapping[str, Any]) -> Iterator[Pair]:
    """``embeddings.create``: model, texts and the embedding parameters."""
    arguments = user_arguments(kwargs)
    inputs = field(kwargs, "inputs")
    texts = [inputs] if isinstance(inputs, str) else list(inputs or ())
    yield from model_attributes(provider=PROVIDER, system=SYSTEM)
    yield from embedding_attributes(model=field(kwargs, "model"), texts=texts)
    for _, parameters in invocation_parameter_attributes(_parameters(arguments)):
        yield SpanAttributes.EMBEDDING_INVOCATION_PARAMETERS, parameters
    yield from input_value_attributes(arguments)


def conversation_request_attributes(kwargs: Mapping[str, Any]) -> Iterator[Pair]:
    """``beta.conversations.start/append/restart``: instructions and input entries."""
    yield from _common_request(kwargs)
    for key, attribute in (
        ("agent_id", GEN_AI_AGENT_ID),
        ("conversation_id", GEN_AI_CONVERSATION_ID),
    ):
        value = field(kwargs, key)
        if value:
            yield attribute, value
    messages = []
    instructions = field(kwargs, "instructions")
    if instructions:
        messages.append(Message(role="system", content=instructions))
    inputs = field(kwargs, "inputs")
    if isinstance(inputs, str):
        messages.append(Message(role="user", content=inputs))
    else:
        messages.extend(map(conversation_entry_message, inputs or ()))
    yield from message_attributes(SpanAttributes.LLM_INPUT_MESSAGES, messages)


def conversation_entry_message(entry: Any) -> Message:
    """A conversation input entry: a message, or a ``function.result`` as a tool message."""
    if field(entry, "type") == "function.result":
        return Message(
            role="tool",
            content=_json_text(field(entry, "result")),
            tool_call_id=field(entry, "tool_call_id"),
        )
    return message(entry)


def moderation_request_attributes(kwargs: Mapping[str, Any]) -> Iterator[Pair]:
    """``classifiers.moderate``/``moderate_chat``: the model and the checked inputs."""
    yield from model_attributes(
        provider=PROVIDER, system=SYSTEM, request_model=field(kwargs, "model")
    )
    yield from input_value_attributes(field(kwargs, "inputs"))


# --- responses ----------------------------------------------------------------------------------


def usage_pairs(usage: Any) -> Iterator[Pair]:
    """Token counts of a ``UsageInfo``, including cached prompt tokens when reported."""
    if usage is None:
        return
    details = field(usage, "prompt_tokens_details")
    if details is None:
        extra = getattr(usage, "model_extra", None) or {}
        details = extra.get("prompt_tokens_details")
    yield from usage_attributes(
        prompt=field(usage, "prompt_tokens"),
        completion=field(usage, "completion_tokens"),
        total=field(usage, "total_tokens"),
        cache_read=field(details, "cached_tokens") if details is not None else None,
    )


def completion_response_attributes(response: Any) -> Iterator[Pair]:
    """Chat, FIM and agents completions: model, output messages, finish reason, usage."""
    yield from model_attributes(response_model=field(response, "model"))
    choices = field(response, "choices") or ()
    yield from output_messages(
        message(field(choice, "message") or {}, "assistant") for choice in choices
    )
    if choices and field(choices[0], "finish_reason"):
        yield SpanAttributes.LLM_FINISH_REASON, str(field(choices[0], "finish_reason"))
    yield from usage_pairs(field(response, "usage"))
    yield from output_value_attributes(response)


def embedding_response_attributes(response: Any) -> Iterator[Pair]:
    """Vectors in input order, the embedding model and the prompt tokens."""
    data = sorted(field(response, "data") or (), key=lambda item: field(item, "index") or 0)
    vectors = [field(item, "embedding") or [] for item in data]
    yield from embedding_attributes(model=field(response, "model"), vectors=vectors)
    yield from usage_pairs(field(response, "usage"))


def conversation_output_messages(outputs: Iterable[Any]) -> list[Message]:
    """Assistant replies and client-side function calls among a conversation's output entries."""
    messages = []
    for entry in outputs:
        kind = field(entry, "type")
        if kind == "message.output":
            messages.append(message(entry, "assistant"))
        elif kind == "function.call":
            call = ToolCall(
                id=field(entry, "tool_call_id"),
                name=field(entry, "name"),
                arguments=_json_text(field(entry, "arguments")),
            )
            messages.append(Message(role="assistant", tool_calls=[call]))
    return messages


def conversation_response_attributes(response: Any) -> Iterator[Pair]:
    """Conversation id, the model that answered, output entries and usage."""
    yield GEN_AI_CONVERSATION_ID, field(response, "conversation_id")
    outputs = field(response, "outputs") or ()
    models = [field(entry, "model") for entry in outputs if field(entry, "model")]
    if models:
        yield from model_attributes(response_model=models[-1])
    yield from output_messages(conversation_output_messages(outputs))
    yield from usage_pairs(field(response, "usage"))
    yield from output_value_attributes(response)


def moderation_response_attributes(response: Any) -> Iterator[Pair]:
    """The moderation model and its per-input category results."""
    yield from model_attributes(response_model=field(response, "model"))
    yield from output_value_attributes(field(response, "results"))
