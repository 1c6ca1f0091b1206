"""The OpenAI and Mistral wire formats as plain data: chat completions, chunk streams,
embeddings and errors.

One kit for everything in convotel that has to answer like the OpenAI or Mistral API: the demo's
loopback server, the tests' hand-written cassettes and loopback servers, and the benchmarks' mock
transports. Bodies are dicts with their keys in the order the API sends them; :func:`sse_frame`
and :func:`sse_body` frame them as ``text/event-stream``.

    envelope = Envelope("chatcmpl-1", "gpt-4o-mini-2024-07-18", created=1731000000)
    body = chat_completion(envelope, assistant_message("Hi!"), chat_usage(12, 3))
    events = text_stream(envelope, ["Hi", "!"], usage=chat_usage(12, 3))  # ends with "[DONE]"
    data = sse_body(events)

Mistral's bodies (``mistral_*``) differ in their key order, their usage object and the ``prefix``
and ``index`` fields; a Mistral stream sends its usage in the last chunk that has choices.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DONE",
    "Envelope",
    "Event",
    "MistralEnvelope",
    "ToolCall",
    "assistant_message",
    "chat_chunk",
    "chat_completion",
    "chat_usage",
    "embeddings_body",
    "encode_event",
    "encode_vector",
    "error_body",
    "mistral_assistant_message",
    "mistral_chat_chunk",
    "mistral_chat_completion",
    "mistral_chat_stream",
    "mistral_embeddings_body",
    "mistral_error_body",
    "mistral_tool_call",
    "mistral_usage",
    "sse_body",
    "sse_frame",
    "text_stream",
    "tool_call_fragment",
    "tool_call_head",
    "tool_call_stream",
    "usage_chunk",
    "with_null_usage",
]

#: The last event of a chat (or legacy completion) stream.
DONE = "[DONE]"
#: One server-sent event's data: a JSON object, or text sent verbatim (``[DONE]``, broken JSON).
Event = Mapping[str, Any] | str


@dataclass(frozen=True)
class Envelope:
    """What every body of one completion repeats: its id, model and creation time.

    ``service_tier`` and ``system_fingerprint`` are left out of the bodies when None.
    """

    id: str
    model: str
    created: int
    service_tier: str | None = "default"
    system_fingerprint: str | None = None

    def _extras(self) -> dict[str, Any]:
        extras: dict[str, Any] = {}
        if self.service_tier is not None:
            extras["service_tier"] = self.service_tier
        if self.system_fingerprint is not None:
            extras["system_fingerprint"] = self.system_fingerprint
        return extras

    def _head(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}


@dataclass(frozen=True)
class ToolCall:
    """One function call the assistant makes (``arguments`` is the JSON text)."""

    call_id: str
    name: str
    arguments: str

    def as_message_field(self) -> dict[str, Any]:
        """The call as an item of a message's ``tool_calls``."""
        return {
            "id": self.call_id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


# -- chat completions ----------------------------------------------------------------------------


def chat_usage(
    prompt: int, completion: int, *, cached: int = 0, reasoning: int = 0, details: bool = True
) -> dict[str, Any]:
    """A chat ``usage`` object; ``details=False`` leaves out the two ``*_details`` objects."""
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if details:
        usage["prompt_tokens_details"] = {"cached_tokens": cached, "audio_tokens": 0}
        usage["completion_tokens_details"] = {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        }
    return usage


def assistant_message(
    content: str | None = None, tool_calls: Sequence[ToolCall] = (), **fields: Any
) -> dict[str, Any]:
    """An assistant message of a ``chat.completion`` (``fields`` are added or override)."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": content,
        "refusal": None,
        "annotations": [],
    }
    if tool_calls:
        message["tool_calls"] = [call.as_message_field() for call in tool_calls]
    message.update(fields)
    return message


def chat_completion(
    envelope: Envelope,
    message: Mapping[str, Any],
    usage: Mapping[str, Any] | None,
    *,
    finish_reason: str = "stop",
) -> dict[str, Any]:
    """A ``chat.completion`` with one choice (``usage=None`` leaves the field out)."""
    choice = {
        "index": 0,
        "message": dict(message),
        "logprobs": None,
        "finish_reason": finish_reason,
    }
    body = {**envelope._head("chat.completion"), "choices": [choice]}
    if usage is not None:
        body["usage"] = dict(usage)
    return {**body, **envelope._extras()}


def chat_chunk(
    envelope: Envelope,
    delta: Mapping[str, Any],
    *,
    finish_reason: str | None = None,
    null_usage: bool = False,
) -> dict[str, Any]:
    """One ``chat.completion.chunk``; ``null_usage`` adds ``"usage": null``, as the API does on
    every chunk of a stream asked for usage (``stream_options.include_usage``)."""
    choice = {"index": 0, "delta": dict(delta), "logprobs": None, "finish_reason": finish_reason}
    chunk = {**envelope._head("chat.completion.chunk"), **envelope._extras(), "choices": [choice]}
    if null_usage:
        chunk["usage"] = None
    return chunk


def usage_chunk(envelope: Envelope, usage: Mapping[str, Any]) -> dict[str, Any]:
    """The last chunk of a stream asked for usage: no choices, the whole call's usage."""
    head = {**envelope._head("chat.completion.chunk"), **envelope._extras()}
    return {**head, "choices": [], "usage": dict(usage)}


def text_stream(
    envelope: Envelope,
    pieces: Iterable[str],
    *,
    usage: Mapping[str, Any] | None = None,
    finish_reason: str = "stop",
    opening: Mapping[str, Any] | None = None,
) -> list[Event]:
    """A streamed text answer: the role chunk (``opening``), one chunk per piece, the finish
    chunk, with ``usage`` the usage chunk (and ``"usage": null`` on the others), then ``[DONE]``.
    """
    first = {"role": "assistant", "content": "", "refusal": None} if opening is None else opening
    asked = usage is not None
    events: list[Event] = [chat_chunk(envelope, first, null_usage=asked)]
    events += [chat_chunk(envelope, {"content": piece}, null_usage=asked) for piece in pieces]
    events.append(chat_chunk(envelope, {}, finish_reason=finish_reason, null_usage=asked))
    if usage is not None:
        events.append(usage_chunk(envelope, usage))
    events.append(DONE)
    return events


def tool_call_head(index: int, call_id: str, name: str) -> dict[str, Any]:
    """The delta item that opens streamed tool call ``index`` (its arguments follow)."""
    return {
        "index": index,
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": ""},
    }


def tool_call_fragment(index: int, arguments: str) -> dict[str, Any]:
    """A delta item carrying the next piece of tool call ``index``'s arguments."""
    return {"index": index, "function": {"arguments": arguments}}


def tool_call_stream(
    envelope: Envelope,
    calls: Sequence[ToolCall],
    *,
    fragment_size: int = 8,
    usage: Mapping[str, Any] | None = None,
) -> list[Event]:
    """A streamed answer made of tool calls, each opened then sent in ``fragment_size`` pieces;
    it finishes with ``tool_calls`` (then the usage chunk when ``usage`` is given) and ``[DONE]``.
    """
    asked = usage is not None
    opening = {"role": "assistant", "content": None, "refusal": None}
    events: list[Event] = [chat_chunk(envelope, opening, null_usage=asked)]
    for index, call in enumerate(calls):
        head = tool_call_head(index, call.call_id, call.name)
        events.append(chat_chunk(envelope, {"tool_calls": [head]}, null_usage=asked))
        for start in range(0, len(call.arguments), fragment_size):
            piece = tool_call_fragment(index, call.arguments[start : start + fragment_size])
            events.append(chat_chunk(envelope, {"tool_calls": [piece]}, null_usage=asked))
    events.append(chat_chunk(envelope, {}, finish_reason="tool_calls", null_usage=asked))
    if usage is not None:
        events.append(usage_chunk(envelope, usage))
    events.append(DONE)
    return events


def with_null_usage(events: Iterable[Event], usage: Mapping[str, Any] | None) -> list[Event]:
    """The same stream sent to a request asking for usage: every chunk has ``"usage": null`` and,
    if the stream completes (``[DONE]``) and ``usage`` is given, a usage-only chunk comes last.
    Events without ``choices`` (an error object) are sent as they are."""
    sent: list[Event] = []
    last_chunk: Mapping[str, Any] = {}
    for event in events:
        if isinstance(event, str):
            if event == DONE and usage is not None:
                sent.append({**last_chunk, "choices": [], "usage": dict(usage)})
            sent.append(event)
        elif "choices" in event:
            last_chunk = event
            sent.append({**event, "usage": None})
        else:
            sent.append(dict(event))
    return sent


# -- embeddings and errors -----------------------------------------------------------------------


def encode_vector(vector: Sequence[float], *, base64_encoded: bool) -> str | list[float]:
    """An embedding as the API sends it: a list of floats, or base64 of little-endian float32."""
    if base64_encoded:
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return list(vector)


def embeddings_body(
    vectors: Iterable[Sequence[float]], *, model: str, prompt_tokens: int, base64_encoded: bool
) -> dict[str, Any]:
    """An embeddings ``list`` object, one item per vector in order."""
    data = [
        {
            "object": "embedding",
            "index": index,
            "embedding": encode_vector(vector, base64_encoded=base64_encoded),
        }
        for index, vector in enumerate(vectors)
    ]
    usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return {"object": "list", "data": data, "model": model, "usage": usage}


def error_body(
    message: str, error_type: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """The API's error object (the body of an HTTP error, or an error event in a stream)."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


# -- Mistral -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MistralEnvelope:
    """What every Mistral body of one completion repeats: its id, model and creation time."""

    id: str
    model: str
    created: int


def mistral_usage(prompt: int, completion: int) -> dict[str, int]:
    """A Mistral ``usage`` object."""
    return {
        "prompt_tokens": prompt,
        "total_tokens": prompt + completion,
        "completion_tokens": completion,
    }


def mistral_tool_call(index: int, call: ToolCall) -> dict[str, Any]:
    """Tool call ``index`` of an assistant message (or of a stream's delta)."""
    return {
        "id": call.call_id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
        "index": index,
    }


def mistral_assistant_message(content: str, tool_calls: Sequence[ToolCall] = ()) -> dict[str, Any]:
    """The assistant message of a Mistral ``chat.completion`` (``tool_calls`` is null when none)."""
    calls = [mistral_tool_call(index, call) for index, call in enumerate(tool_calls)]
    return {"role": "assistant", "content": content, "tool_calls": calls or None, "prefix": False}


def mistral_chat_completion(
    envelope: MistralEnvelope,
    message: Mapping[str, Any],
    usage: Mapping[str, Any],
    *,
    finish_reason: str = "stop",
) -> dict[str, Any]:
    """A Mistral ``chat.completion`` with one choice (also the body of FIM and agent calls)."""
    return {
        "id": envelope.id,
        "object": "chat.completion",
        "model": envelope.model,
        "usage": dict(usage),
        "created": envelope.created,
        "choices": [{"index": 0, "message": dict(message), "finish_reason": finish_reason}],
    }


def mistral_chat_chunk(
    envelope: MistralEnvelope,
    delta: Mapping[str, Any],
    *,
    finish_reason: str | None = None,
    usage: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One Mistral ``chat.completion.chunk``; the last one carries the call's ``usage``."""
    choice = {"index": 0, "delta": dict(delta), "finish_reason": finish_reason, "logprobs": None}
    chunk = {
        "id": envelope.id,
        "object": "chat.completion.chunk",
        "created": envelope.created,
        "model": envelope.model,
        "choices": [choice],
    }
    if usage is not None:
        chunk["usage"] = dict(usage)
    return chunk


def mistral_chat_stream(
    envelope: MistralEnvelope,
    deltas: Iterable[Mapping[str, Any]],
    usage: Mapping[str, Any],
    *,
    finish_reason: str = "stop",
) -> list[Event]:
    """A Mistral stream: the role chunk, one chunk per delta (``{"content": piece}`` or
    ``{"tool_calls": [...]}``), an empty chunk with the finish reason and ``usage``, ``[DONE]``.
    """
    events: list[Event] = [mistral_chat_chunk(envelope, {"role": "assistant", "content": ""})]
    events += [mistral_chat_chunk(envelope, delta) for delta in deltas]
    last = mistral_chat_chunk(envelope, {"content": ""}, finish_reason=finish_reason, usage=usage)
    return [*events, last, DONE]


def mistral_embeddings_body(
    vectors: Iterable[Sequence[float]], *, body_id: str, model: str, prompt_tokens: int
) -> dict[str, Any]:
    """A Mistral embeddings ``list`` object, one item per vector in order."""
    data = [
        {"object": "embedding", "embedding": list(vector), "index": index}
        for index, vector in enumerate(vectors)
    ]
    usage = mistral_usage(prompt_tokens, 0)
    return {"id": body_id, "object": "list", "data": data, "model": model, "usage": usage}


def mistral_error_body(message: str, error_type: str, code: str | None = None) -> dict[str, Any]:
    """Mistral's error object (the body of an HTTP error)."""
    return {"object": "error", "message": message, "type": error_type, "param": None, "code": code}


# -- server-sent events --------------------------------------------------------------------------


def encode_event(event: Event, *, compact: bool = True) -> str:
    """An event's ``data`` text: JSON (compact like the API unless ``compact=False``), or the
    text itself."""
    if isinstance(event, str):
        return event
    return json.dumps(event, separators=(",", ":") if compact else None)


def sse_frame(data: str, *, event: str | None = None) -> str:
    """One server-sent event: an optional ``event:`` line, the ``data:`` line, a blank line."""
    name = f"event: {event}\n" if event is not None else ""
    return f"{name}data: {data}\n\n"


def sse_body(events: Iterable[Event], *, named: bool = False, compact: bool = True) -> bytes:
    """A ``text/event-stream`` body; ``named`` adds ``event: <type>`` lines (the Responses API)."""
    frames = []
    for item in events:
        name = item["type"] if named and not isinstance(item, str) else None
        frames.append(sse_frame(encode_event(item, compact=compact), event=name))
    return "".join(frames).encode()
