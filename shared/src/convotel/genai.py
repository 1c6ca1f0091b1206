"""The OpenTelemetry GenAI names for what convotel records under OpenInference names.

Switched on with ``TraceConfig(enable_genai_semconv=True)`` (or
``OPENINFERENCE_ENABLE_GENAI_SEMCONV=true``): every span then also carries
``gen_ai.conversation.id``, ``gen_ai.provider.name``, ``gen_ai.request.model``,
``gen_ai.usage.*``... so backends that read the GenAI conventions see the same sessions.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from openinference.semconv.trace import OpenInferenceSpanKindValues, SpanAttributes
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai

from convotel.attributes import Pair

__all__ = ["genai_attributes"]


def _operation(member: str, fallback: str) -> str:
    """An operation name from the conventions package (older releases lack some members)."""
    value = getattr(gen_ai.GenAiOperationNameValues, member, None)
    return str(value.value) if value is not None else fallback


_OPERATIONS = {
    OpenInferenceSpanKindValues.LLM.value: _operation("CHAT", "chat"),
    OpenInferenceSpanKindValues.EMBEDDING.value: _operation("EMBEDDINGS", "embeddings"),
    OpenInferenceSpanKindValues.TOOL.value: _operation("EXECUTE_TOOL", "execute_tool"),
    OpenInferenceSpanKindValues.AGENT.value: _operation("INVOKE_AGENT", "invoke_agent"),
    OpenInferenceSpanKindValues.RETRIEVER.value: _operation("RETRIEVAL", "retrieval"),
}
#: An LLM call given prompts rather than messages (legacy completions, Mistral FIM).
_TEXT_COMPLETION = _operation("TEXT_COMPLETION", "text_completion")
_PROMPTS = SpanAttributes.LLM_PROMPTS

# Added to the conventions package after 0.58b0 (the oldest release convotel supports).
_CACHE_READ_INPUT_TOKENS: str = getattr(
    gen_ai, "GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS", "gen_ai.usage.cache_read.input_tokens"
)
_REASONING_OUTPUT_TOKENS: str = getattr(
    gen_ai, "GEN_AI_USAGE_REASONING_OUTPUT_TOKENS", "gen_ai.usage.reasoning.output_tokens"
)

#: OpenInference provider values whose GenAI name differs.
_PROVIDERS = {"mistralai": "mistral_ai", "azure": "azure.ai.openai", "google": "gcp.gen_ai"}

_DIRECT = (
    (SpanAttributes.SESSION_ID, gen_ai.GEN_AI_CONVERSATION_ID),
    (SpanAttributes.LLM_RESPONSE_MODEL_NAME, gen_ai.GEN_AI_RESPONSE_MODEL),
    (SpanAttributes.LLM_TOKEN_COUNT_PROMPT, gen_ai.GEN_AI_USAGE_INPUT_TOKENS),
    (SpanAttributes.LLM_TOKEN_COUNT_COMPLETION, gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS),
    (SpanAttributes.LLM_TOKEN_COUNT_PROMPT_DETAILS_CACHE_READ, _CACHE_READ_INPUT_TOKENS),
    (SpanAttributes.LLM_TOKEN_COUNT_COMPLETION_DETAILS_REASONING, _REASONING_OUTPUT_TOKENS),
    (SpanAttributes.TOOL_NAME, "gen_ai.tool.name"),
)


def genai_attributes(attributes: Mapping[str, Any]) -> Iterator[Pair]:
    """GenAI-convention pairs derived from a span's OpenInference attributes."""
    kind = str(attributes.get(SpanAttributes.OPENINFERENCE_SPAN_KIND))
    operation = _OPERATIONS.get(kind)
    if kind == OpenInferenceSpanKindValues.LLM.value and _has_prompts(attributes):
        operation = _TEXT_COMPLETION
    if operation is not None:
        yield gen_ai.GEN_AI_OPERATION_NAME, operation
    provider = attributes.get(SpanAttributes.LLM_PROVIDER) or attributes.get(
        SpanAttributes.LLM_SYSTEM
    )
    if isinstance(provider, str):
        yield gen_ai.GEN_AI_PROVIDER_NAME, _PROVIDERS.get(provider, provider)
    request_model = _request_model(attributes)
    if isinstance(request_model, str) and isinstance(provider, str):
        request_model = request_model.removeprefix(f"{provider}/")  # LiteLLM's "openai/<model>"
    if request_model is not None:
        yield gen_ai.GEN_AI_REQUEST_MODEL, request_model
    for source, target in _DIRECT:
        value = attributes.get(source)
        if value is not None:
            yield target, value
    finish_reason = attributes.get(SpanAttributes.LLM_FINISH_REASON)
    if isinstance(finish_reason, str):
        yield gen_ai.GEN_AI_RESPONSE_FINISH_REASONS, [finish_reason]


def _has_prompts(attributes: Mapping[str, Any]) -> bool:
    return any(key == _PROMPTS or key.startswith(f"{_PROMPTS}.") for key in attributes)


def _request_model(attributes: Mapping[str, Any]) -> Any:
    """The requested model; ``llm.model_name`` only when it cannot be the returned model."""
    requested = attributes.get(SpanAttributes.LLM_REQUEST_MODEL_NAME)
    if requested is None and SpanAttributes.LLM_RESPONSE_MODEL_NAME not in attributes:
        requested = attributes.get(SpanAttributes.LLM_MODEL_NAME)
    return requested or attributes.get(SpanAttributes.EMBEDDING_MODEL_NAME)
