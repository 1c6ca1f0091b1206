"""Pure extractors: OpenAI request keyword arguments and response objects to attribute pairs.

Requests are what the application passed (plain dicts, or SDK models echoed back as messages);
responses are the SDK's parsed objects. Nothing here mutates or consumes its input: one-shot
iterables the SDK accepts (e.g. a generator of messages) are not read, only lists and tuples.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from itertools import chain
from typing import Any

from openinference.semconv.trace import (
    ChoiceAttributes,
    OpenInferenceLLMProviderValues,
    OpenInferenceLLMSystemValues,
    PromptAttributes,
    SpanAttributes,
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
from convotel.payloads import (
    chat_message,
    chat_messages,
    content_parts,
    field,
    plain_chat_input_attributes,
    plain_reply_attributes,
    sequence_of,
    text_of,
    usage_count_attributes,
    user_arguments,
    values_of,
)

__all__ = ["AZURE", "OPENAI", "Pair", "field", "provider_for_host"]

_PROVIDER = OpenInferenceLLMProviderValues
OPENAI = _PROVIDER.OPENAI.value
AZURE = _PROVIDER.AZURE.value
SYSTEM = OpenInferenceLLMSystemValues.OPENAI.value
INPUT_MESSAGES = SpanAttributes.LLM_INPUT_MESSAGES
OUTPUT_MESSAGES = SpanAttributes.LLM_OUTPUT_MESSAGES
_NO_CHOICE: Mapping[str, Any] = {}
#: Recorded as messages, tools or prompts rather than as invocation parameters (``model`` is
#: a parameter too, as OpenInference records it).
_NOT_PARAMETERS = frozenset({"messages", "tools", "input", "instructions", "prompt"})
#: Providers by API host (the host or a subdomain of it), as OpenInference tells them apart.
_HOST_PROVIDERS: tuple[tuple[str, str], ...] = tuple(
    (host, provider.value)
    for host, provider in (
        ("api.openai.com", _PROVIDER.OPENAI),
        ("openai.azure.com", _PROVIDER.AZURE),
        ("services.ai.azure.com", _PROVIDER.AZURE),
        ("cognitiveservices.azure.com", _PROVIDER.AZURE),
        ("api.anthropic.com", _PROVIDER.ANTHROPIC),
        ("api.cohere.com", _PROVIDER.COHERE),
        ("api.cohere.ai", _PROVIDER.COHERE),
        ("api.mistral.ai", _PROVIDER.MISTRALAI),
        ("generativelanguage.googleapis.com", _PROVIDER.GOOGLE),
        ("aiplatform.googleapis.com", _PROVIDER.GOOGLE),
        ("amazonaws.com", _PROVIDER.AWS),
        ("api.x.ai", _PROVIDER.XAI),
        ("api.deepseek.com", _PROVIDER.DEEPSEEK),
        ("api.groq.com", _PROVIDER.GROQ),
        ("api.fireworks.ai", _PROVIDER.FIREWORKS),
        ("api.moonshot.cn", _PROVIDER.MOONSHOT),
        ("api.cerebras.ai", _PROVIDER.CEREBRAS),
        ("api.perplexity.ai", _PROVIDER.PERPLEXITY),
        ("api.together.ai", _PROVIDER.TOGETHER),
        ("api.together.xyz", _PROVIDER.TOGETHER),
        ("ollama.com", _PROVIDER.OLLAMA),
    )
)
#: The request as the user gave it: no unset sentinels, secrets, headers or transport.
user_parameters = user_arguments


def provider_for_host(host: object) -> str:
    """The provider serving the API at ``host``: Azure, Groq, xAI... by their API hosts, else
    ``openai`` (the API the SDK speaks: a proxy, gateway or self-hosted server)."""
    if isinstance(host, str):
        host = host.lower()
        for suffix, provider in _HOST_PROVIDERS:
            if host == suffix or host.endswith("." + suffix):
                return provider
    return OPENAI


def common_request_attributes(
    provider: str, parameters: Mapping[str, Any], *, embedding: bool = False
) -> list[Pair]:
    """Provider, system, requested model and invocation parameters of any endpoint."""
    model = text_of(parameters.get("model"))
    if embedding:
        pairs = model_attributes(provider=provider, system=SYSTEM)
        pairs.append((SpanAttributes.EMBEDDING_MODEL_NAME, model))
        key = SpanAttributes.EMBEDDING_INVOCATION_PARAMETERS
    else:
        pairs = model_attributes(provider=provider, system=SYSTEM, request_model=model)
        key = SpanAttributes.LLM_INVOCATION_PARAMETERS
    parameters_json = invocation_parameters_json(parameters, _NOT_PARAMETERS)
    if parameters_json is not None:
        pairs.append((key, parameters_json))
    return pairs


def messages_and_tools_attributes(
    messages: Sequence[Message], tools: Any, first_index: int = 0
) -> Iterator[Pair]:
    """Input messages (numbered from ``first_index``), ``input.value`` and tool definitions of
    a chat or Responses request."""
    listed = tools and isinstance(tools, (list, tuple))
    defined = tool_definition_attributes(tools) if listed else ()
    # one C-level chain: nested generators cost a frame switch per pair
    return chain(
        message_attributes(INPUT_MESSAGES, messages, first_index),
        llm_input_value_attributes(messages),
        defined,
    )


def response_item_message(item: Any) -> Message | None:
    """A Responses API input or output item as a message (``None`` for reasoning items etc.)."""
    kind = field(item, "type")
    if kind == "function_call":
        call = ToolCall(
            text_of(field(item, "call_id")),
            text_of(field(item, "name")),
            text_of(field(item, "arguments")),
        )
        return Message(role="assistant", tool_calls=[call])
    if kind == "function_call_output":
        output = field(item, "output")
        return Message(
            role="tool", tool_call_id=text_of(field(item, "call_id")), content=text_of(output)
        )
    role = field(item, "role")
    if role is None:
        return None
    content = field(item, "content")
    if kind == "message" and role == "assistant" and isinstance(content, (list, tuple)):
        text = "".join(field(p, "text") or "" for p in content)  # output_text parts
        return Message(role="assistant", content=text)
    return Message(role=text_of(role), content=text_of(content), parts=content_parts(content))


# --- requests ---------------------------------------------------------------------------------


def chat_request_attributes(kwargs: Mapping[str, Any]) -> Iterator[Pair]:
    tools = kwargs.get("tools")
    if not tools:
        plain = plain_chat_input_attributes(kwargs.get("messages"))
        if plain is not None:  # the common shape, without Message records
            return iter(plain)
    return messages_and_tools_attributes(chat_messages(kwargs.get("messages")), tools)


def responses_request_attributes(kwargs: Mapping[str, Any]) -> Iterator[Pair]:
    """Instructions as input message 0 (a system message) and the input from message 1 on, as
    OpenInference numbers them (message 0 is left out without instructions)."""
    messages: list[Message] = []
    instructions = text_of(kwargs.get("instructions"))
    if instructions:
        messages.append(Message(role="system", content=instructions))
    request_input = kwargs.get("input")
    if isinstance(request_input, str):
        messages.append(Message(role="user", content=request_input))
    for item in sequence_of(request_input):
        message = response_item_message(item)
        if message is not None:
            messages.append(message)
    first_index = 0 if instructions else 1
    return messages_and_tools_attributes(messages, kwargs.get("tools"), first_index)


def completion_request_attributes(kwargs: Mapping[str, Any]) -> Iterator[Pair]:
    prompt = kwargs.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else sequence_of(prompt)
    for index, text in enumerate(prompts):
        if isinstance(text, str):
            yield f"{SpanAttributes.LLM_PROMPTS}.{index}.{PromptAttributes.PROMPT_TEXT}", text
    yield from input_value_attributes(prompt if isinstance(prompt, str) else list(prompts) or None)


def embedding_request_attributes(kwargs: Mapping[str, Any]) -> Iterator[Pair]:
    texts = kwargs.get("input")
    texts = [texts] if isinstance(texts, str) else sequence_of(texts)
    if all(isinstance(text, str) for text in texts):  # token arrays have no text to record
        yield from embedding_attributes(texts=texts)
    yield from embedding_input_value_attributes(kwargs.get("input"))


# --- responses --------------------------------------------------------------------------------


#: Token counts of chat and legacy completions (the core's reader of usage records).
chat_usage_attributes = usage_count_attributes


def output_attributes(
    messages: Sequence[Message], finish_reason: Any, *, replied: bool = False
) -> Iterator[Pair]:
    """Output messages, ``llm.finish_reason`` (of the first choice) and ``output.value`` (also
    of a response without messages when ``replied``)."""
    yield from message_attributes(OUTPUT_MESSAGES, messages)
    if isinstance(finish_reason, str):
        yield SpanAttributes.LLM_FINISH_REASON, finish_reason
    yield from llm_output_value_attributes(messages, replied=replied)


def chat_response_attributes(completion: Any) -> Iterator[Pair]:
    get = values_of(completion).get
    choices = sequence_of(get("choices"))
    first = (values_of(choices[0]) if choices else _NO_CHOICE).get
    finish_reason = first("finish_reason")
    if len(choices) == 1:
        plain = plain_reply_attributes(first("message"))
        if plain is not None:  # one text reply: the common shape, without Message records
            message_pairs, value_pairs = plain
            pairs = model_attributes(response_model=get("model"))
            pairs += message_pairs
            if isinstance(finish_reason, str):
                pairs.append((SpanAttributes.LLM_FINISH_REASON, finish_reason))
            pairs += value_pairs
            pairs += chat_usage_attributes(get("usage"))
            return iter(pairs)
    messages = [chat_message(values_of(choice).get("message")) for choice in choices]
    return chain(  # one C-level chain: nested generators cost a frame switch per pair
        model_attributes(response_model=get("model")),
        output_attributes(messages, finish_reason, replied=True),
        chat_usage_attributes(get("usage")),
    )


def responses_response_attributes(response: Any) -> Iterator[Pair]:
    yield from model_attributes(response_model=text_of(field(response, "model")))
    messages = [m for m in map(response_item_message, sequence_of(field(response, "output"))) if m]
    status = field(response, "status")
    reason = field(field(response, "incomplete_details"), "reason")
    finish_reason = reason if isinstance(reason, str) else status
    yield from output_attributes(messages, finish_reason, replied=True)
    yield from usage_count_attributes(field(response, "usage"))


def completion_choice_attributes(texts: Sequence[str], *, replied: bool = False) -> Iterator[Pair]:
    """``llm.choices`` and ``output.value`` (the first choice's text; empty when ``replied``
    without choices)."""
    for index, text in enumerate(texts):
        yield f"{SpanAttributes.LLM_CHOICES}.{index}.{ChoiceAttributes.COMPLETION_TEXT}", text
    if texts or replied:
        yield from output_value_attributes(texts[0] if texts else "")


def completion_response_attributes(completion: Any) -> Iterator[Pair]:
    yield from model_attributes(response_model=text_of(field(completion, "model")))
    choices = sequence_of(field(completion, "choices"))
    yield from completion_choice_attributes([field(c, "text") or "" for c in choices], replied=True)
    if choices and isinstance(reason := field(choices[0], "finish_reason"), str):
        yield SpanAttributes.LLM_FINISH_REASON, reason
    yield from chat_usage_attributes(field(completion, "usage"))


def embedding_response_attributes(response: Any) -> Iterator[Pair]:
    model = text_of(field(response, "model"))
    vectors = [field(item, "embedding") for item in sequence_of(field(response, "data"))]
    yield from embedding_attributes(
        model=model, vectors=[v for v in vectors if isinstance(v, (list, str))]
    )
    yield from usage_count_attributes(field(response, "usage"))
