"""What the loopback server answers: the OpenAI and Mistral bodies for chat, embeddings, models
and errors, from :mod:`convotel.demo.fake_replies` (the deterministic "model").

Both providers' bodies are built with :mod:`convotel.demo.wire`. A request the real API
would refuse (no or unknown model, bad body) raises :class:`APIError` with the provider's status,
error type and code; :func:`error_payload` writes it in the provider's error shape.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

from convotel.demo import wire
from convotel.demo.fake_replies import (
    ReplyPlan,
    count_tokens,
    embedding_vector,
    plan_reply,
    request_seed,
)

Flavour = Literal["openai", "mistral"]
_DEFAULT_DIMENSIONS = {"text-embedding-3-large": 3072, "mistral-embed": 1024}
_FALLBACK_DIMENSIONS = 1536
_OPENAI_SNAPSHOTS = {
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
}
#: Model names the server answers for (by family); others get the provider's "no such model" error.
_MODEL_FAMILIES: dict[Flavour, tuple[str, ...]] = {
    "openai": ("gpt-", "chatgpt-", "o1", "o3", "o4", "text-embedding-", "davinci-", "babbage-"),
    "mistral": (
        "mistral-",
        "open-mistral",
        "open-mixtral",
        "codestral",
        "ministral",
        "pixtral",
        "magistral",
        "devstral",
    ),
}
MODELS = {
    "openai": ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "text-embedding-3-small"),
    "mistral": ("mistral-small-latest", "mistral-large-latest", "mistral-embed"),
}


class APIError(Exception):
    """A request the API refuses: its HTTP status, error type and code."""

    def __init__(self, status: int, message: str, error_type: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.code = code


def parse_body(raw: bytes) -> dict[str, Any]:
    """The request's JSON object; anything else is refused as the API refuses it."""
    try:
        body = json.loads(raw or b"{}")
    except ValueError as error:
        message = f"We could not parse the JSON body: {error}"
        raise APIError(400, message, "invalid_request_error") from error
    if not isinstance(body, dict):
        raise APIError(400, "The request body must be a JSON object", "invalid_request_error")
    return body


def check_model(flavour: Flavour, body: Mapping[str, Any]) -> str:
    """The requested model; a missing or unknown one is refused as the real API refuses it."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise APIError(400, "you must provide a model parameter", "invalid_request_error")
    if model.startswith(_MODEL_FAMILIES[flavour]):
        return model
    if flavour == "openai":
        message = f"The model `{model}` does not exist or you do not have access to it."
        raise APIError(404, message, "invalid_request_error", "model_not_found")
    raise APIError(400, f"Invalid model: {model}", "invalid_model", "1500")


def injected_error(status: int) -> APIError:
    """The error a fault of HTTP ``status`` answers with, worded as the API words it."""
    if status == 429:
        return APIError(
            429,
            "Rate limit reached for requests. Please retry shortly.",
            "requests",
            "rate_limit_exceeded",
        )
    if status >= 500:
        return APIError(
            status,
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
        )
    return APIError(status, "The request was rejected.", "invalid_request_error")


def error_payload(flavour: Flavour, error: APIError) -> dict[str, Any]:
    """The body of ``error`` in the provider's error shape."""
    if flavour == "openai":
        return wire.error_body(str(error), error.error_type, error.code)
    return wire.mistral_error_body(str(error), error.error_type, error.code)


def models_payload(flavour: Flavour) -> dict[str, Any]:
    """``GET /v1/models``: the models the server answers for."""
    models = [
        {"id": name, "object": "model", "created": 1700000000, "owned_by": flavour}
        for name in MODELS[flavour]
    ]
    return {"object": "list", "data": models}


def chat_answer(
    flavour: Flavour, body: Mapping[str, Any], next_id: Callable[[int], str]
) -> OpenAIFormat | MistralFormat:
    """The answer to a chat request (``next_id(seed)`` names the completion)."""
    check_model(flavour, body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "'messages' must be a non-empty array", "invalid_request_error")
    caps = ("max_completion_tokens", "max_tokens") if flavour == "openai" else ("max_tokens",)
    plan = plan_reply(body, max_tokens_key=caps)
    completion_id = next_id(request_seed(body.get("model"), messages))
    if flavour == "openai":
        return OpenAIFormat(body, plan, completion_id)
    return MistralFormat(body, plan, completion_id)


# -- wire formats ----------------------------------------------------------------------------


class OpenAIFormat:
    """OpenAI ``chat.completion`` / ``chat.completion.chunk`` bodies for one reply."""

    def __init__(self, body: Mapping[str, Any], plan: ReplyPlan, completion_id: str) -> None:
        self.plan = plan
        requested = str(body["model"])
        self.envelope = wire.Envelope(
            id=f"chatcmpl-{completion_id[:29]}",
            model=_OPENAI_SNAPSHOTS.get(requested, requested),
            created=int(time.time()),
            system_fingerprint=f"fp_{completion_id[-10:]}",
        )
        options = body.get("stream_options")
        self.include_usage = isinstance(options, dict) and options.get("include_usage") is True
        self.tool_calls = [
            wire.ToolCall(call.call_id, call.name, call.arguments_json) for call in plan.tool_calls
        ]

    def _usage(self) -> dict[str, Any]:
        return wire.chat_usage(self.plan.prompt_tokens, self.plan.completion_tokens)

    def completion(self) -> dict[str, Any]:
        plan = self.plan
        message = wire.assistant_message(None if self.tool_calls else plan.text, self.tool_calls)
        return wire.chat_completion(
            self.envelope, message, self._usage(), finish_reason=plan.finish_reason
        )

    def events(self) -> Iterator[str]:
        usage = self._usage() if self.include_usage else None
        if self.tool_calls:
            events = wire.tool_call_stream(self.envelope, self.tool_calls, usage=usage)
        else:
            plan = self.plan
            events = wire.text_stream(
                self.envelope, plan.pieces, usage=usage, finish_reason=plan.finish_reason
            )
        # Spaced JSON: the malformed-json fault drops the first ", " of an event.
        return (wire.encode_event(event, compact=False) for event in events)


class MistralFormat:
    """Mistral ``chat.completion`` / ``chat.completion.chunk`` bodies (usage in the last chunk)."""

    def __init__(self, body: Mapping[str, Any], plan: ReplyPlan, completion_id: str) -> None:
        self.plan = plan
        self.envelope = wire.MistralEnvelope(
            id=completion_id[:32], model=str(body["model"]), created=int(time.time())
        )
        self.tool_calls = [
            wire.ToolCall(call.call_id[-9:], call.name, call.arguments_json)
            for call in plan.tool_calls
        ]

    def _usage(self) -> dict[str, int]:
        return wire.mistral_usage(self.plan.prompt_tokens, self.plan.completion_tokens)

    def completion(self) -> dict[str, Any]:
        plan = self.plan
        message = wire.mistral_assistant_message(plan.text, self.tool_calls)
        return wire.mistral_chat_completion(
            self.envelope, message, self._usage(), finish_reason=plan.finish_reason
        )

    def events(self) -> Iterator[str]:
        plan = self.plan
        if self.tool_calls:
            calls = [wire.mistral_tool_call(i, call) for i, call in enumerate(self.tool_calls)]
            deltas: list[dict[str, Any]] = [{"tool_calls": calls}]
        else:
            deltas = [{"content": piece} for piece in plan.pieces]
        events = wire.mistral_chat_stream(
            self.envelope, deltas, self._usage(), finish_reason=plan.finish_reason
        )
        # Spaced JSON: the malformed-json fault drops the first ", " of an event.
        return (wire.encode_event(event, compact=False) for event in events)


def _raw_embedding_input(body: Mapping[str, Any]) -> object:
    # Both APIs name the field "input" on the wire (the Mistral SDK's ``inputs`` is an alias).
    return body.get("input", body.get("inputs"))


def _embedding_inputs(body: Mapping[str, Any]) -> list[str]:
    value = _raw_embedding_input(body)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(item, str) for item in value):
            return list(value)
        if all(isinstance(item, int) for item in value):
            return [" ".join(map(str, value))]
        if all(isinstance(item, list) for item in value):
            return [" ".join(map(str, item)) for item in value]
    raise APIError(400, "'input' must be a string or a non-empty array", "invalid_request_error")


def _input_tokens(body: Mapping[str, Any], texts: list[str]) -> int:
    value = _raw_embedding_input(body)
    if isinstance(value, list) and value and not isinstance(value[0], str):
        return sum(len(item) if isinstance(item, list) else 1 for item in value)
    return sum(count_tokens(text) for text in texts)


def embeddings_payload(flavour: Flavour, body: Mapping[str, Any]) -> dict[str, Any]:
    model = check_model(flavour, body)
    texts = _embedding_inputs(body)
    requested = body.get("dimensions") if flavour == "openai" else body.get("output_dimension")
    dimensions = (
        requested
        if isinstance(requested, int) and requested > 0
        else (_DEFAULT_DIMENSIONS.get(model, _FALLBACK_DIMENSIONS))
    )
    tokens = _input_tokens(body, texts)
    vectors = [embedding_vector(text, dimensions) for text in texts]
    if flavour == "openai":
        as_base64 = body.get("encoding_format") == "base64"
        return wire.embeddings_body(
            vectors, model=model, prompt_tokens=tokens, base64_encoded=as_base64
        )
    body_id = f"{request_seed(model, texts):032x}"[:32]
    return wire.mistral_embeddings_body(vectors, body_id=body_id, model=model, prompt_tokens=tokens)
