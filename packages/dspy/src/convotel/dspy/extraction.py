"""Attributes from DSPy objects: small pure functions yielding ``(attribute, value)`` pairs."""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping
from typing import Any

from openinference.semconv.trace import SpanAttributes

from convotel.attributes import (
    Document,
    Message,
    Pair,
    document_attributes,
    embedding_attributes,
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
from convotel.json_encoding import jsonable, safe_json_dumps
from convotel.payloads import chat_messages, text_of, tool_calls, usage_count_attributes

#: The DSPy signature of a module call (``"question -> answer"``); no OpenInference name exists.
DSPY_SIGNATURE = "dspy.signature"
#: The signature's instructions (the task description DSPy puts in the system prompt).
DSPY_SIGNATURE_INSTRUCTIONS = "dspy.signature.instructions"
#: Number of examples an ``Evaluate`` run scores.
DSPY_EVALUATE_DEVSET_SIZE = "dspy.evaluate.devset_size"
#: The score ``Evaluate`` returned (DSPy's percentage).
DSPY_EVALUATE_SCORE = "dspy.evaluate.score"
#: Set on an LLM span answered from DSPy's response cache (no tokens were billed).
DSPY_CACHE_HIT = "dspy.cache_hit"

# LM settings that configure DSPy itself, not the model's generation (connection settings and
# credentials are the core's SECRET_PARAMETERS).
_NOT_INVOCATION_PARAMETERS = frozenset(
    {
        "messages",
        "prompt",
        "tools",  # recorded as llm.tools (hidden with the inputs)
        "num_retries",
        "cache",
        "callbacks",
        "request",
    }
)


# --- modules -----------------------------------------------------------------------------------


def module_signature(module: Any) -> Any:
    """The signature of a Predict-like module (``Predict``, ``ChainOfThought``, ``ReAct``...)."""
    signature = getattr(module, "signature", None)
    if signature is None:
        signature = getattr(getattr(module, "predict", None), "signature", None)
    return signature


_signature_pairs: weakref.WeakKeyDictionary[type, tuple[Pair, ...]] = weakref.WeakKeyDictionary()


def signature_attributes(signature: Any) -> Iterator[Pair]:
    """``dspy.signature`` and its instructions, computed once per signature class."""
    if not isinstance(signature, type):
        return
    pairs = _signature_pairs.get(signature)
    if pairs is None:
        text = getattr(signature, "signature", None)
        instructions = getattr(signature, "instructions", None)
        pairs = tuple(
            (key, value)
            for key, value in ((DSPY_SIGNATURE, text), (DSPY_SIGNATURE_INSTRUCTIONS, instructions))
            if isinstance(value, str) and value
        )
        _signature_pairs[signature] = pairs
    yield from pairs


def module_inputs(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """A module call's inputs without the LM object DSPy lets callers pass as ``lm=``."""
    return {name: value for name, value in arguments.items() if name not in ("self", "lm")}


def prediction_fields(prediction: Any) -> Any:
    """A ``dspy.Prediction``'s fields as a dict; any other output as it is."""
    items = getattr(prediction, "items", None)
    if callable(items) and hasattr(prediction, "_store"):
        return dict(items())
    return prediction


# --- language models ---------------------------------------------------------------------------


def split_model(model: Any) -> tuple[str | None, str | None]:
    """``"openai/gpt-4o-mini"`` -> (``"openai"``, ``"gpt-4o-mini"``)."""
    if not isinstance(model, str):
        return None, None
    provider, separator, name = model.partition("/")
    return (provider, name) if separator else (None, model)


def lm_request_attributes(lm: Any, arguments: Mapping[str, Any]) -> Iterator[Pair]:
    """Model, messages and parameters of ``lm(prompt, messages=..., **kwargs)``."""
    provider, name = split_model(getattr(lm, "model", None))
    yield from model_attributes(provider=provider, request_model=name)
    messages = arguments.get("messages")
    prompt = arguments.get("prompt")
    if isinstance(messages, list):
        found = chat_messages(messages)
    elif isinstance(prompt, str):
        found = [Message(role="user", content=prompt)]
    elif prompt is not None:  # an explicit dspy.lm15.Request (DSPy >= 3.4)
        found = request_messages(prompt)
    else:
        found = []
    yield from llm_input_value_attributes(found)
    yield from message_attributes(SpanAttributes.LLM_INPUT_MESSAGES, found)
    parameters = {**(getattr(lm, "kwargs", None) or {}), **arguments}
    tools = parameters.get("tools")
    if isinstance(tools, list):
        yield from tool_definition_attributes(tools)
    yield from invocation_parameter_attributes(parameters, exclude=_NOT_INVOCATION_PARAMETERS)


def request_messages(request: Any) -> list[Message]:
    """The system prompt and messages of a ``dspy.lm15.Request`` (text parts only)."""
    system = getattr(request, "system", None)
    messages = [Message(role="system", content=system)] if isinstance(system, str) else []
    for message in getattr(request, "messages", None) or ():
        role, text = getattr(message, "role", None), getattr(message, "text", None)
        messages.append(
            Message(
                role=str(role) if role is not None else None,
                content=text if isinstance(text, str) else None,
            )
        )
    return messages


def lm_output_attributes(outputs: Any) -> Iterator[Pair]:
    """Output messages from what ``lm(...)`` returned: strings, dicts with text/tool calls, or
    a ``dspy.lm15.Response`` for an explicit request."""
    if not isinstance(outputs, list):
        text = getattr(outputs, "text", None)
        if isinstance(text, str):
            outputs = [text]
        else:
            yield from output_value_attributes(jsonable(outputs))
            return
    messages = []
    for output in outputs:
        if isinstance(output, str):
            messages.append(Message(role="assistant", content=output))
        elif isinstance(output, Mapping):
            messages.append(
                Message(
                    role="assistant",
                    content=text_of(output.get("text")),
                    tool_calls=tool_calls(output.get("tool_calls")),
                )
            )
    yield from llm_output_value_attributes(messages)
    yield from message_attributes(SpanAttributes.LLM_OUTPUT_MESSAGES, messages)


def lm_result_attributes(
    usage: Any, response_model: Any, cache_hit: bool = False
) -> Iterator[Pair]:
    """Token counts and the answering model, from DSPy's record of one LM call."""
    if isinstance(response_model, str) and response_model:
        _, name = split_model(response_model)
        yield from model_attributes(response_model=name)
    if cache_hit:
        yield DSPY_CACHE_HIT, True
        return
    data = usage if isinstance(usage, Mapping) else jsonable(usage) if usage else {}
    if isinstance(data, Mapping):
        yield from usage_count_attributes(data)


# --- tools, embedders, retrievers, evaluation --------------------------------------------------


def tool_attributes(tool: Any, arguments: Mapping[str, Any]) -> Iterator[Pair]:
    yield SpanAttributes.TOOL_NAME, getattr(tool, "name", None)
    yield SpanAttributes.TOOL_DESCRIPTION, getattr(tool, "desc", None)
    schema = getattr(tool, "args", None)
    if schema is not None:
        yield SpanAttributes.TOOL_PARAMETERS, safe_json_dumps(schema)
    yield from input_value_attributes(dict(arguments))


def embedder_request_attributes(embedder: Any, arguments: Mapping[str, Any]) -> Iterator[Pair]:
    model = getattr(embedder, "model", None)
    inputs = arguments.get("inputs")
    texts = [inputs] if isinstance(inputs, str) else inputs
    yield from embedding_attributes(
        model=model if isinstance(model, str) else getattr(model, "__name__", None),
        texts=texts if isinstance(texts, list) else None,
    )
    yield from embedding_input_value_attributes(inputs)
    if isinstance(model, str):
        provider, _ = split_model(model)
        yield SpanAttributes.LLM_PROVIDER, provider


def embedding_vectors(embeddings: Any) -> Iterator[Pair]:
    """Vectors of the numpy array ``Embedder`` returns (one row per input, or one vector)."""
    tolist = getattr(embeddings, "tolist", None)
    rows = tolist() if callable(tolist) else embeddings
    if isinstance(rows, list) and rows and not isinstance(rows[0], list):
        rows = [rows]
    if isinstance(rows, list):
        yield from embedding_attributes(vectors=rows)


def retrieval_attributes(prediction: Any) -> Iterator[Pair]:
    """``retrieval.documents`` from a retriever's ``Prediction(passages=..., scores=...)``."""
    fields = prediction_fields(prediction)
    if not isinstance(fields, Mapping):
        yield from output_value_attributes(fields)
        return
    passages = fields.get("passages") or []
    indices = fields.get("indices") or []
    scores = fields.get("scores") or []
    documents = [
        Document(
            content=passage if isinstance(passage, str) else safe_json_dumps(passage),
            id=str(indices[i]) if i < len(indices) else None,
            score=float(scores[i]) if i < len(scores) else None,
        )
        for i, passage in enumerate(passages)
    ]
    yield from document_attributes(SpanAttributes.RETRIEVAL_DOCUMENTS, documents)


def evaluate_request_attributes(evaluate: Any, arguments: Mapping[str, Any]) -> Iterator[Pair]:
    program = arguments.get("program")
    metric = arguments.get("metric") or getattr(evaluate, "metric", None)
    devset = arguments.get("devset") or getattr(evaluate, "devset", None) or []
    yield DSPY_EVALUATE_DEVSET_SIZE, len(devset)
    yield from input_value_attributes(
        {
            "program": type(program).__name__ if program is not None else None,
            "metric": getattr(metric, "__name__", type(metric).__name__) if metric else None,
            "devset_size": len(devset),
        }
    )


def evaluate_response_attributes(result: Any) -> Iterator[Pair]:
    score = getattr(result, "score", result)
    if isinstance(score, (int, float)) and not isinstance(score, bool):
        yield DSPY_EVALUATE_SCORE, float(score)
        yield from output_value_attributes({"score": float(score)})
