"""Pure extractors: Mistral SDK requests and responses to OpenInference attribute pairs.

Requests arrive as the keyword arguments of the SDK method (dicts, TypedDicts or the SDK's
pydantic models, with the SDK's ``UNSET`` for parameters the user did not give); responses are
the SDK's pydantic models. Nothing here imports ``mistralai``: fields are read by name.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from itertools import chain
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
    Message,
    Pair,
    ToolCall,
    embedding_attributes,
    embedding_input_value_attributes,
    input_value_attributes,
    invocation_parameters_json,
    llm_input_value_attributes,
    llm_output_value_attributes,
    message_attributes,
    model_attributes,
    output_value_attributes,
    tool_definition_attributes,
)
from convotel.json_encoding import json_text
from convotel.payloads import (
    chat_message,
    field,
    plain_chat_input_attributes,
    plain_reply_attributes,
    sequence_of,
    text_of,
    usage_count_attributes,
)

__all__ = ["PROVIDER", "SYSTEM", "Pair", "field", "message"]

PROVIDER = OpenInferenceLLMProviderValues.MISTRALAI.value
SYSTEM = OpenInferenceLLMSystemValues.MISTRALAI.value

#: Request fields recorded as messages, tools, prompts or the conversation id rather than as
#: invocation parameters. ``model``, ``agent_id`` and a ``stream`` the caller set are parameters,
#: as OpenInference records them.
_NOT_PARAMETERS = frozenset(
    {"messages", "tools", "prompt", "inputs", "instructions", "conversation_id"}
)


# --- messages -----------------------------------------------------------------------------------

#: A chat message of a request or a response (the core's reader of OpenAI-shaped payloads).
message = chat_message


# One C-level chain of the core's generators rather than generators of generators: nested ones
# cost a frame switch per pair, and these run on every call.


def input_messages(messages: list[Message]) -> Iterator[Pair]:
    """``llm.input_messages`` and ``input.value`` (the newest user message's text)."""
    return chain(
        message_attributes(SpanAttributes.LLM_INPUT_MESSAGES, messages),
        llm_input_value_attributes(messages),
    )


def output_messages(messages: list[Message]) -> Iterator[Pair]:
    """``llm.output_messages`` and ``output.value`` (the reply's text)."""
    return chain(
        message_attributes(SpanAttributes.LLM_OUTPUT_MESSAGES, messages),
        llm_output_value_attributes(messages),
    )


# --- requests -----------------------------------------------------------------------------------


def _common_request(kwargs: Mapping[str, Any]) -> list[Pair]:
    pairs = model_attributes(provider=PROVIDER, system=SYSTEM, request_model=field(kwargs, "model"))
    # only what the caller set: no "not given" sentinels, credentials or transport settings
    parameters = invocation_parameters_json(kwargs, _NOT_PARAMETERS)
    if parameters is not None:
        pairs.append((SpanAttributes.LLM_INVOCATION_PARAMETERS, parameters))
    tools = field(kwargs, "tools")
    if tools:
        pairs.extend(tool_definition_attributes(tools))
    return pairs


def chat_request_attributes(kwargs: Mapping[str, Any]) -> Iterator[Pair]:
    """``chat.complete``/``chat.stream`` and ``agents.*``: model or agent, messages, tools."""
    pairs = _common_request(kwargs)
    agent_id = field(kwargs, "agent_id")
    if agent_id:
        pairs.append((GEN_AI_AGENT_ID, agent_id))
    raw_messages = field(kwargs, "messages")
    plain = plain_chat_input_attributes(raw_messages)
    if plain is not None:  # the common shape, without Message records
        return chain(pairs, plain)
    messages = [chat_message(m) for m in sequence_of(raw_messages)]
    return chain(pairs, input_messages(messages))


def fim_request_attributes(kwargs: Mapping[str, Any]) -> Iterator[Pair]:
    """``fim.complete``/``fim.stream``: the code before the gap (prompt, the ``input.value``);
    the code after it (``suffix``) is an invocation parameter."""
    yield from _common_request(kwargs)
    prompt = field(kwargs, "prompt")
    if isinstance(prompt, str):
        yield SpanAttributes.LLM_PROMPTS, [prompt]
        yield from input_value_attributes(prompt)


def embedding_request_attributes(kwargs: Mapping[str, Any]) -> Iterator[Pair]:
    """``embeddings.create``: model, texts and the embedding parameters."""
    inputs = field(kwargs, "inputs")
    texts = [inputs] if isinstance(inputs, str) else list(inputs or ())
    yield from model_attributes(provider=PROVIDER, system=SYSTEM)
    yield from embedding_attributes(model=field(kwargs, "model"), texts=texts)
    parameters = invocation_parameters_json(kwargs, _NOT_PARAMETERS)
    if parameters is not None:
        yield SpanAttributes.EMBEDDING_INVOCATION_PARAMETERS, parameters
    yield from embedding_input_value_attributes(inputs)


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
        messages.extend(map(conversation_entry_message, sequence_of(inputs)))
    yield from input_messages(messages)


def conversation_entry_message(entry: Any) -> Message:
    """A conversation input entry: a message, or a ``function.result`` as a tool message."""
    if field(entry, "type") == "function.result":
        return Message(
            role="tool",
            content=json_text(field(entry, "result")),
            tool_call_id=text_of(field(entry, "tool_call_id")),
        )
    return chat_message(entry)


def moderation_request_attributes(kwargs: Mapping[str, Any]) -> Iterator[Pair]:
    """``classifiers.moderate``/``moderate_chat``: the model and the checked inputs."""
    yield from model_attributes(
        provider=PROVIDER, system=SYSTEM, request_model=field(kwargs, "model")
    )
    yield from input_value_attributes(field(kwargs, "inputs"))


# --- responses ----------------------------------------------------------------------------------


#: Token counts of a ``UsageInfo`` (the core's reader of usage records).
usage_pairs = usage_count_attributes


def completion_response_attributes(response: Any) -> Iterator[Pair]:
    """Chat, FIM and agents completions: model, output messages, finish reason, usage."""
    choices = sequence_of(field(response, "choices"))
    finish_reason = field(choices[0], "finish_reason") if choices else None
    finish = ((SpanAttributes.LLM_FINISH_REASON, str(finish_reason)),) if finish_reason else ()
    plain = plain_reply_attributes(field(choices[0], "message")) if len(choices) == 1 else None
    if plain is not None:  # one text reply: the common shape, without Message records
        message_pairs, value_pairs = plain
        replied: Iterable[Pair] = chain(message_pairs, value_pairs)
    else:
        replied = output_messages(
            [chat_message(field(choice, "message"), "assistant") for choice in choices]
        )
    return chain(
        model_attributes(response_model=field(response, "model")),
        replied,
        finish,
        usage_pairs(field(response, "usage")),
    )


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
            messages.append(chat_message(entry, "assistant"))
        elif kind == "function.call":
            call = ToolCall(
                id=text_of(field(entry, "tool_call_id")),
                name=text_of(field(entry, "name")),
                arguments=json_text(field(entry, "arguments")),
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


def moderation_response_attributes(response: Any) -> Iterator[Pair]:
    """The moderation model and its per-input category results."""
    yield from model_attributes(response_model=field(response, "model"))
    yield from output_value_attributes(field(response, "results"))
