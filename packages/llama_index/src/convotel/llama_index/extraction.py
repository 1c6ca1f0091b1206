"""What LlamaIndex objects say, as OpenInference ``(attribute, value)`` pairs.

Pure functions over LlamaIndex's own types (events, responses, nodes, tools); no span handling.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeGuard

from llama_index.core.base.llms.types import ChatMessage, ChatResponse, CompletionResponse
from llama_index.core.schema import NodeWithScore, QueryBundle
from llama_index.core.tools import BaseTool, ToolOutput
from llama_index.core.workflow import StopEvent
from openinference.semconv.trace import (
    OpenInferenceLLMProviderValues,
    OpenInferenceLLMSystemValues,
    OpenInferenceSpanKindValues,
    RerankerAttributes,
    SpanAttributes,
)

from convotel.attributes import (
    Document,
    Message,
    Pair,
    ToolCall,
    document_attributes,
    embedding_input_value_attributes,
    input_value_attributes,
    invocation_parameter_attributes,
    llm_input_value_attributes,
    llm_output_value_attributes,
    message_attributes,
    model_attributes,
    output_value_attributes,
    tool_definition_attributes,
)
from convotel.json_encoding import json_text, safe_json_dumps
from convotel.payloads import field, text_of, tool_call, usage_count_attributes

LLM = OpenInferenceSpanKindValues.LLM.value
EMBEDDING = OpenInferenceSpanKindValues.EMBEDDING.value
RETRIEVER = OpenInferenceSpanKindValues.RETRIEVER.value
RERANKER = OpenInferenceSpanKindValues.RERANKER.value
TOOL = OpenInferenceSpanKindValues.TOOL.value
AGENT = OpenInferenceSpanKindValues.AGENT.value
CHAIN = OpenInferenceSpanKindValues.CHAIN.value

_PARAMETER_NAMES = (
    "temperature max_tokens max_completion_tokens max_new_tokens num_output top_p top_k seed stop",
    "n frequency_penalty presence_penalty repetition_penalty logprobs top_logprobs random_seed",
    "reasoning_effort response_format tool_choice parallel_tool_calls stream_options",
)
#: Model settings recorded as ``llm.invocation_parameters`` (never credentials or clients).
GENERATION_PARAMETERS = frozenset(name for names in _PARAMETER_NAMES for name in names.split())
_CACHE_READ = SpanAttributes.LLM_TOKEN_COUNT_PROMPT_DETAILS_CACHE_READ
_PROVIDERS = {value.value for value in OpenInferenceLLMProviderValues}
_SYSTEMS = {value.value for value in OpenInferenceLLMSystemValues}
_PROVIDER_ALIASES = {"azure_openai": ("azure", "openai"), "mistral": ("mistralai", "mistralai")}


def llm_provider_attributes(instance: object) -> Iterator[Pair]:
    """``llm.provider`` / ``llm.system`` from the integration package (``llama_index.llms.X``)."""
    parts = type(instance).__module__.split(".")
    if len(parts) < 3 or parts[:2] != ["llama_index", "llms"]:
        return
    provider, system = _PROVIDER_ALIASES.get(parts[2], (parts[2], parts[2]))
    yield from model_attributes(
        provider=provider if provider in _PROVIDERS else None,
        system=system if system in _SYSTEMS else None,
    )


def llm_request_attributes(instance: object, arguments: Mapping[str, Any]) -> Iterator[Pair]:
    """Model, provider, generation parameters, tool definitions and input messages (or prompt)
    of one chat/completion call of a LlamaIndex LLM."""
    settings = getattr(instance, "__dict__", {})  # a pydantic model's field values
    model = settings.get("model")
    if not isinstance(model, str):
        model = getattr(getattr(instance, "metadata", None), "model_name", None)
    yield from model_attributes(request_model=model if model != "unknown" else None)
    yield from llm_provider_attributes(instance)
    call_kwargs = arguments.get("kwargs") or {}
    configured = settings.get("additional_kwargs")
    parameters: dict[str, Any] = {}
    for source in (settings, configured if isinstance(configured, Mapping) else {}, call_kwargs):
        parameters.update((k, v) for k, v in source.items() if k in GENERATION_PARAMETERS)
    yield from invocation_parameter_attributes(parameters)
    tools = call_kwargs.get("tools")
    if isinstance(tools, Sequence):
        yield from tool_definition_attributes(tool_schema(tool) for tool in tools)
    messages = arguments.get("messages")
    if isinstance(messages, Sequence):
        found = [as_message(message) for message in messages]
        yield from message_attributes(SpanAttributes.LLM_INPUT_MESSAGES, found)
        yield from llm_input_value_attributes(found)
        return
    positional = arguments.get("args") or (None,)  # complete(prompt) behind LlamaIndex's wrapper
    prompt = arguments.get("prompt", positional[0])
    if isinstance(prompt, str):
        yield from input_value_attributes(prompt)
        user = Message(role="user", content=prompt)
        yield from message_attributes(SpanAttributes.LLM_INPUT_MESSAGES, [user])


def tool_schema(tool: object) -> object:
    """An OpenAI-style function definition for a LlamaIndex tool; other objects as they are."""
    if isinstance(tool, BaseTool):
        return tool.metadata.to_openai_tool(skip_length_check=True)
    return tool


def chat_response_attributes(response: ChatResponse) -> Iterator[Pair]:
    """Output message, output value and token usage of a (possibly last streamed) response."""
    messages = [as_message(response.message)]
    yield from message_attributes(SpanAttributes.LLM_OUTPUT_MESSAGES, messages)
    yield from llm_output_value_attributes(messages)
    yield from usage_of(response)
    yield from response_model_of(response)


def completion_response_attributes(response: CompletionResponse) -> Iterator[Pair]:
    yield from message_attributes(
        SpanAttributes.LLM_OUTPUT_MESSAGES, [Message(role="assistant", content=response.text)]
    )
    yield from output_value_attributes(response.text)
    yield from usage_of(response)
    yield from response_model_of(response)


def as_message(message: ChatMessage) -> Message:
    extra = message.additional_kwargs
    return Message(
        role=str(getattr(message.role, "value", message.role)),
        content=message.content,
        tool_calls=[
            as_tool_call(call) for call in extra.get("tool_calls") or _tool_blocks(message)
        ],
        tool_call_id=text_of(extra.get("tool_call_id")),
        name=text_of(extra.get("name")),
    )


def _tool_blocks(message: ChatMessage) -> list[object]:
    return [block for block in message.blocks if hasattr(block, "tool_name")]


def as_tool_call(call: object) -> ToolCall:
    """A tool call from an OpenAI-style object or dict, or a LlamaIndex ``ToolCallBlock``."""
    if hasattr(call, "tool_name"):
        arguments: object = getattr(call, "tool_kwargs", None)
        return ToolCall(getattr(call, "tool_call_id", None), call.tool_name, json_text(arguments))
    if field(call, "function") is not None:  # OpenAI-shaped: the core's reader
        return tool_call(call)
    return ToolCall(  # name and args (or input) at the top, as other providers send them
        id=text_of(field(call, "id")),
        name=text_of(field(call, "name")),
        arguments=json_text(field(call, "args") or field(call, "input")),
    )


def usage_of(response: ChatResponse | CompletionResponse) -> Iterator[Pair]:
    """Token counts from ``response.raw.usage`` (OpenAI or Anthropic style), else from the
    ``prompt_tokens``/``completion_tokens`` LlamaIndex integrations copy to
    ``additional_kwargs``."""
    usage = field(response.raw, "usage")
    if usage is None and "prompt_tokens" in response.additional_kwargs:
        usage = response.additional_kwargs
    if usage is None:
        return
    for key, count in usage_count_attributes(usage):
        if count or key != _CACHE_READ:  # cached tokens only when some were read, as always
            yield key, count


def response_model_of(response: ChatResponse | CompletionResponse) -> Iterator[Pair]:
    """The answering model named by ``response.raw`` (``llm.model_name`` stays the requested)."""
    model = text_of(field(response.raw, "model"))
    if model:
        yield SpanAttributes.LLM_RESPONSE_MODEL_NAME, model


def as_documents(nodes: Iterable[NodeWithScore]) -> list[Document]:
    return [
        Document(
            content=node.node.get_content(),
            id=node.node.node_id,
            score=node.score,
            metadata=node.node.metadata or None,
        )
        for node in nodes
    ]


def _is_node_list(value: object) -> TypeGuard[list[NodeWithScore]]:
    return isinstance(value, list) and all(isinstance(item, NodeWithScore) for item in value)


def rerank_request_attributes(instance: object, arguments: Mapping[str, Any]) -> Iterator[Pair]:
    """Query, top-k, model and input documents of a reranker (a node postprocessor) call."""
    query_text = query_string(arguments.get("query_bundle"))
    yield from input_value_attributes(query_text)
    yield RerankerAttributes.RERANKER_QUERY, query_text
    yield RerankerAttributes.RERANKER_TOP_K, getattr(instance, "top_n", None)
    model = getattr(instance, "model", None) or getattr(instance, "model_name", None)
    yield RerankerAttributes.RERANKER_MODEL_NAME, model if isinstance(model, str) else None
    nodes = arguments.get("nodes")
    if _is_node_list(nodes):
        yield from document_attributes(
            RerankerAttributes.RERANKER_INPUT_DOCUMENTS, as_documents(nodes)
        )


def query_string(query: object) -> str | None:
    if isinstance(query, QueryBundle):
        return query.query_str
    return query if isinstance(query, str) else None


def tool_attributes(tool: BaseTool) -> Iterator[Pair]:
    """Name, description and parameter JSON schema (as JSON) of the tool being called."""
    metadata = tool.metadata
    yield SpanAttributes.TOOL_NAME, metadata.get_name()
    yield SpanAttributes.TOOL_DESCRIPTION, metadata.description
    yield SpanAttributes.TOOL_PARAMETERS, safe_json_dumps(metadata.get_parameters_dict())


#: Argument names whose value is the text a call works on (a question, a message, a prompt).
_INPUT_ARGUMENTS = ("user_msg", "message", "query_str", "str_or_query_bundle", "query", "prompt")


def call_input_attributes(
    kind: str, instance: object, arguments: Mapping[str, Any], tags: Mapping[str, Any]
) -> Iterator[Pair]:
    """``input.value`` of a call (its question or message text, a tool's arguments as JSON, a
    workflow step's input-event summary) and what a tool or reranker call is given."""
    if kind == TOOL and isinstance(instance, BaseTool):
        yield from tool_attributes(instance)
        keyword_arguments = arguments.get("kwargs")
        yield from input_value_attributes(keyword_arguments or _positional(arguments) or None)
        return
    if kind == RERANKER:
        yield from rerank_request_attributes(instance, arguments)
        return
    if kind == EMBEDDING:  # get_query_embedding(query), get_text_embedding(s)(text/texts)
        inputs = arguments.get("texts") or arguments.get("text") or arguments.get("query")
        yield from embedding_input_value_attributes(inputs)
        return
    start_event = arguments.get("start_event")
    if start_event is not None:  # a workflow run: the agent's user message, if any
        arguments = {"user_msg": getattr(start_event, "user_msg", None)}
    for name in _INPUT_ARGUMENTS:
        text = query_string(arguments.get(name))
        if text is not None:
            yield from input_value_attributes(text)
            return
    # A workflow step's input-event summary belongs to the step's own span: the calls inside
    # the step (model calls, with their messages) carry the step's tags too.
    summary = tags.get("llamaindex.step.input_summary")
    if kind == CHAIN and isinstance(summary, str):
        yield from input_value_attributes(summary)


def _positional(arguments: Mapping[str, Any]) -> Any:
    values = [value for name, value in arguments.items() if name not in ("self", "kwargs")]
    return values[0] if len(values) == 1 else values


def call_output_attributes(kind: str, result: object) -> Iterator[Pair]:
    """What a finished call returned: documents of a retriever or reranker, else the text its
    result carries (a response, a chat message, a tool output, a workflow's result)."""
    if kind in (RETRIEVER, RERANKER) and _is_node_list(result):
        documents = as_documents(result)
        if kind == RETRIEVER:
            yield from document_attributes(SpanAttributes.RETRIEVAL_DOCUMENTS, documents)
        else:
            yield from document_attributes(RerankerAttributes.RERANKER_OUTPUT_DOCUMENTS, documents)
        return
    if kind == LLM and isinstance(result, ChatResponse):  # the reply's text, else its tool calls
        yield from llm_output_value_attributes([as_message(result.message)])
        return
    yield from output_value_attributes(_result_text(result))


def _result_text(result: object) -> str | None:
    if isinstance(result, str):
        return result
    if isinstance(result, StopEvent):  # a workflow's
        result = result.result
        if isinstance(result, str):
            return result
    if isinstance(result, ChatResponse):
        return result.message.content
    if isinstance(result, CompletionResponse):
        return result.text
    response = getattr(result, "response", None)  # Response, AgentChatResponse, AgentOutput
    if isinstance(response, ChatMessage):
        return response.content
    if isinstance(response, str):
        return response
    if isinstance(result, ToolOutput):
        return result.content
    return None
