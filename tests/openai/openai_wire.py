"""Hand-written OpenAI wire-format responses and the SDK calls that request them.

Each `Recipe` names one cassette in `cassettes/openai/`: the SDK call a test makes and the HTTP
responses the API sends back, written in the public API's exact wire format (JSON bodies, and
`text/event-stream` bodies made of `data: {...}` lines), built with the wire-format kit
`convotel.demo.wire` that the demo's loopback server and the benchmarks share.
`generate_openai_cassettes.py` turns the recipes into vcrpy cassettes;
`test_openai_cassettes_replay.py` proves the real SDK parses each one.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import openai
from pydantic import BaseModel

from convotel.demo import wire
from convotel.demo.wire import Envelope, Event, chat_usage, error_body

AZURE_ENDPOINT = "https://convotel-test.openai.azure.com"
AZURE_API_VERSION = "2024-10-21"
#: An OpenAI-compatible server (``OpenAI(base_url=...)``), e.g. one that rejects stream_options.
COMPATIBLE_BASE_URL = "https://llm.compatible.test/v1"
#: Azure OpenAI's v1 API, reached with the plain ``OpenAI`` client.
AZURE_V1_BASE_URL = f"{AZURE_ENDPOINT}/openai/v1/"
API_KEY = "sk-test-not-a-real-key"

CREATED = 1731000000
CHAT_MODEL = "gpt-4o-mini"
CHAT_MODEL_SNAPSHOT = "gpt-4o-mini-2024-07-18"
FINGERPRINT = "fp_0ba0d124f1"
#: The id, model and time of every streamed chat completion in the cassettes.
STREAM_ENVELOPE = Envelope("chatcmpl-AQ2", CHAT_MODEL_SNAPSHOT, CREATED, "default", FINGERPRINT)


@dataclass(frozen=True)
class WireResponse:
    """One HTTP response as the API sends it."""

    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


def json_response(
    body: Mapping[str, Any] | str, status: int = 200, headers: Mapping[str, str] | None = None
) -> WireResponse:
    """A JSON response; a `str` body is sent verbatim (for malformed bodies)."""
    text = body if isinstance(body, str) else json.dumps(body, indent=2)
    all_headers = {
        "content-type": "application/json",
        "openai-version": "2020-10-01",
        "openai-processing-ms": "321",
        "x-request-id": f"req_{status}_{len(text)}",
        **(headers or {}),
    }
    return WireResponse(status, text.encode(), all_headers)


def sse_response(events: Iterable[Event], *, named: bool = False) -> WireResponse:
    """A `text/event-stream` body: one `data:` line per event (with `event:` lines if `named`).

    Chat and legacy completions end with `data: [DONE]`; the Responses API names its events and
    has no terminator. A `str` event is sent verbatim after `data: `.
    """
    headers = {"content-type": "text/event-stream; charset=utf-8", "x-request-id": "req_stream"}
    return WireResponse(200, wire.sse_body(events, named=named), headers)


# --- chat completions ------------------------------------------------------------------------


def chat_completion(
    message: Mapping[str, Any],
    usage: Mapping[str, Any],
    *,
    finish_reason: str = "stop",
    model: str = CHAT_MODEL_SNAPSHOT,
    completion_id: str = "chatcmpl-AQ1",
) -> dict[str, Any]:
    envelope = Envelope(completion_id, model, CREATED, "default", FINGERPRINT)
    full_message = {"role": "assistant", "refusal": None, "annotations": [], **message}
    return wire.chat_completion(envelope, full_message, usage, finish_reason=finish_reason)


def chat_chunk(delta: Mapping[str, Any], *, finish_reason: str | None = None) -> dict[str, Any]:
    """One `chat.completion.chunk` of the cassettes' streamed completion."""
    return wire.chat_chunk(STREAM_ENVELOPE, delta, finish_reason=finish_reason)


def text_stream_chunks(
    pieces: Iterable[str], *, include_usage: bool, usage: Mapping[str, Any] | None = None
) -> list[Event]:
    """A streamed text answer; with ``include_usage``, billed ``usage`` (else 19 + 3 tokens)."""
    asked = (usage or chat_usage(19, 3, cached=0)) if include_usage else None
    return wire.text_stream(STREAM_ENVELOPE, pieces, usage=asked)


#: What convotel adds to a streamed request by default (and what an application may pass itself).
INCLUDE_USAGE: dict[str, Any] = {"stream_options": {"include_usage": True}}
STREAM_USAGE = chat_usage(19, 3)


#: The same stream sent to a request with ``stream_options.include_usage``.
asking_for_usage = wire.with_null_usage


WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current temperature for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}

WEATHER_QUESTION = {"role": "user", "content": "What is the weather in Paris and Tokyo?"}
WEATHER_TOOL_CALLS = [
    {
        "id": "call_paris",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
    },
    {
        "id": "call_tokyo",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Tokyo"}'},
    },
]
WEATHER_FOLLOW_UP: list[dict[str, Any]] = [
    WEATHER_QUESTION,
    {"role": "assistant", "content": None, "tool_calls": WEATHER_TOOL_CALLS},
    {"role": "tool", "tool_call_id": "call_paris", "content": "18°C, cloudy"},
    {"role": "tool", "tool_call_id": "call_tokyo", "content": "22°C, sunny"},
]

TINY_PNG_B64 = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 24).decode()
MULTIMODAL_MESSAGES: list[dict[str, Any]] = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is in these two images?"},
            {
                "type": "image_url",
                "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"},
            },
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{TINY_PNG_B64}"}},
        ],
    }
]

BASIC_MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "You are a terse geography tutor."},
    {"role": "user", "content": "What is the capital of France?"},
]
STREAM_MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": "Say hello."}]


class CalendarEvent(BaseModel):
    """The structured-output schema used by the `chat_parse` cassette."""

    name: str
    date: str
    participants: list[str]


# --- Responses API -----------------------------------------------------------------------------


def responses_usage(
    input_tokens: int, output_tokens: int, *, cached: int, reasoning: int
) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": input_tokens + output_tokens,
    }


def response_object(
    output: list[dict[str, Any]],
    *,
    status: str = "completed",
    usage: Mapping[str, Any] | None = None,
    error: Mapping[str, Any] | None = None,
    incomplete_reason: str | None = None,
) -> dict[str, Any]:
    return {
        "id": "resp_67ccd2bed1ec8190",
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "error": None if error is None else dict(error),
        "incomplete_details": None if incomplete_reason is None else {"reason": incomplete_reason},
        "instructions": "Answer in one sentence.",
        "max_output_tokens": None,
        "model": CHAT_MODEL_SNAPSHOT,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": None if usage is None else dict(usage),
        "user": None,
        "metadata": {},
    }


RESPONSES_TEXT = "Paris is the capital of France."
RESPONSES_MESSAGE_ITEM: dict[str, Any] = {
    "id": "msg_67ccd2bf17f0",
    "type": "message",
    "status": "completed",
    "role": "assistant",
    "content": [{"type": "output_text", "text": RESPONSES_TEXT, "annotations": [], "logprobs": []}],
}
RESPONSES_FUNCTION_CALL_ITEM: dict[str, Any] = {
    "id": "fc_67ccd2c0",
    "type": "function_call",
    "status": "completed",
    "call_id": "call_weather_paris",
    "name": "get_weather",
    "arguments": '{"city":"Paris"}',
}
RESPONSES_WEATHER_TOOL: dict[str, Any] = {"type": "function", **WEATHER_TOOL["function"]}


def _responses_stream_opening(pieces: Iterable[str]) -> list[dict[str, Any]]:
    """A Responses stream up to the text deltas of its one message item."""
    item_id = RESPONSES_MESSAGE_ITEM["id"]
    in_progress = response_object([], status="in_progress")
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": in_progress},
        {"type": "response.in_progress", "response": in_progress},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {**RESPONSES_MESSAGE_ITEM, "status": "in_progress", "content": []},
        },
        {
            "type": "response.content_part.added",
            "item_id": item_id,
            "output_index": 0,
            "content_index": 0,
            "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []},
        },
    ]
    events += [
        {
            "type": "response.output_text.delta",
            "item_id": item_id,
            "output_index": 0,
            "content_index": 0,
            "delta": piece,
            "logprobs": [],
        }
        for piece in pieces
    ]
    return events


def _responses_message_done(item: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The events closing the message item ``item`` (its text, content part and the item)."""
    part = item["content"][0]
    location = {"item_id": item["id"], "output_index": 0, "content_index": 0}
    return [
        {"type": "response.output_text.done", **location, "text": part["text"], "logprobs": []},
        {"type": "response.content_part.done", **location, "part": part},
        {"type": "response.output_item.done", "output_index": 0, "item": dict(item)},
    ]


def _numbered(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**event, "sequence_number": n} for n, event in enumerate(events)]


def responses_stream_events() -> list[dict[str, Any]]:
    events = _responses_stream_opening(["Paris is", " the capital", " of France."])
    events += _responses_message_done(RESPONSES_MESSAGE_ITEM)
    events.append(
        {
            "type": "response.completed",
            "response": response_object(
                [RESPONSES_MESSAGE_ITEM], usage=responses_usage(36, 9, cached=0, reasoning=0)
            ),
        }
    )
    return _numbered(events)


RESPONSES_FAILURE = {"code": "server_error", "message": "The model failed to generate a response."}
RESPONSES_ERROR_EVENT = {
    "type": "error",
    "code": "rate_limit_exceeded",
    "message": "Rate limit reached for gpt-4o-mini on tokens per min (TPM).",
    "param": None,
}
RESPONSES_INCOMPLETE_TEXT = "Paris is the"
RESPONSES_INCOMPLETE_ITEM: dict[str, Any] = {
    **RESPONSES_MESSAGE_ITEM,
    "status": "incomplete",
    "content": [
        {
            "type": "output_text",
            "text": RESPONSES_INCOMPLETE_TEXT,
            "annotations": [],
            "logprobs": [],
        }
    ],
}


def responses_failed_stream_events() -> list[dict[str, Any]]:
    """A stream the model fails part-way through: it ends with ``response.failed``."""
    failed = response_object([], status="failed", error=RESPONSES_FAILURE)
    return _numbered(
        [*_responses_stream_opening(["Paris is"]), {"type": "response.failed", "response": failed}]
    )


def responses_error_event_stream_events() -> list[dict[str, Any]]:
    """A stream cut short by an ``error`` event (no final response)."""
    return _numbered([*_responses_stream_opening(["Paris is"]), RESPONSES_ERROR_EVENT])


def responses_incomplete_stream_events() -> list[dict[str, Any]]:
    """A stream stopped by ``max_output_tokens``: it ends with ``response.incomplete``."""
    events = _responses_stream_opening(["Paris is", " the"])
    events += _responses_message_done(RESPONSES_INCOMPLETE_ITEM)
    incomplete = response_object(
        [RESPONSES_INCOMPLETE_ITEM],
        status="incomplete",
        usage=responses_usage(36, 3, cached=0, reasoning=0),
        incomplete_reason="max_output_tokens",
    )
    events.append({"type": "response.incomplete", "response": incomplete})
    return _numbered(events)


# --- embeddings and legacy completions ---------------------------------------------------------

EMBEDDING_VECTORS = [[0.125, -0.5, 0.25], [0.75, 0.0, -0.125]]


def embeddings_body(*, base64_encoded: bool) -> dict[str, Any]:
    return wire.embeddings_body(
        EMBEDDING_VECTORS,
        model="text-embedding-3-small",
        prompt_tokens=6,
        base64_encoded=base64_encoded,
    )


def legacy_completion(text: str, finish_reason: str = "length") -> dict[str, Any]:
    return {
        "id": "cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7",
        "object": "text_completion",
        "created": CREATED,
        "model": "gpt-3.5-turbo-instruct",
        "system_fingerprint": FINGERPRINT,
        "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
    }


def legacy_chunk(text: str, finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": "cmpl-stream1",
        "object": "text_completion",
        "created": CREATED,
        "model": "gpt-3.5-turbo-instruct",
        "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}],
    }


# --- recipes ------------------------------------------------------------------------------------

Call = Callable[[Any], object]


@dataclass(frozen=True)
class Recipe:
    """A cassette: the sync SDK call that requests it and the responses the API sends back.

    `call` returns a plain summary of what the SDK parsed (or raises), so the replay test can
    compare it with `expected` without instrumentation.
    """

    name: str
    responses: tuple[WireResponse, ...]
    call: Call
    expected: object
    #: "openai", "azure" (AzureOpenAI), "azure_v1" (OpenAI at AZURE_V1_BASE_URL) or
    #: "compatible" (OpenAI at COMPATIBLE_BASE_URL)
    client: str = "openai"
    max_retries: int = 2


def make_client(recipe: Recipe, **kwargs: Any) -> openai.OpenAI:
    """The sync client a recipe is recorded and replayed with."""
    kwargs.setdefault("max_retries", recipe.max_retries)
    if recipe.client == "azure":
        return openai.AzureOpenAI(
            azure_endpoint=AZURE_ENDPOINT,
            api_version=AZURE_API_VERSION,
            api_key=API_KEY,
            **kwargs,
        )
    if recipe.client == "compatible":
        kwargs.setdefault("base_url", COMPATIBLE_BASE_URL)
    if recipe.client == "azure_v1":
        kwargs.setdefault("base_url", AZURE_V1_BASE_URL)
    return openai.OpenAI(api_key=API_KEY, **kwargs)


def _message_text(completion: Any) -> object:
    return completion.choices[0].message.content


def _streamed_text(stream: Iterable[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def _raised(call: Callable[..., object]) -> Callable[..., object]:
    """Turn an expected SDK exception into a summary: (class name, HTTP status or None)."""

    def run(client: Any, **request: Any) -> object:
        try:
            result = call(client, **request)
            if isinstance(result, Iterable):
                list(result)
        except Exception as exc:  # noqa: BLE001 - the summary is the exception itself
            return (type(exc).__name__, getattr(exc, "status_code", None))
        return ("no error", None)

    return run


def _tool_round_trip(client: Any) -> object:
    first = client.chat.completions.create(
        model=CHAT_MODEL, messages=[WEATHER_QUESTION], tools=[WEATHER_TOOL], tool_choice="auto"
    )
    calls = [c.function.arguments for c in first.choices[0].message.tool_calls]
    second = client.chat.completions.create(
        model=CHAT_MODEL, messages=WEATHER_FOLLOW_UP, tools=[WEATHER_TOOL]
    )
    return (calls, second.choices[0].message.content)


def _stream_tool_calls(client: Any, **request: Any) -> object:
    stream = client.chat.completions.create(
        model=CHAT_MODEL, messages=[WEATHER_QUESTION], tools=[WEATHER_TOOL], stream=True, **request
    )
    arguments: dict[int, str] = {}
    for chunk in stream:
        for call in (chunk.choices[0].delta.tool_calls if chunk.choices else None) or []:
            arguments[call.index] = arguments.get(call.index, "") + (call.function.arguments or "")
    return arguments


def _stream_azure(client: Any, **request: Any) -> object:
    stream = client.chat.completions.create(
        model="gpt-4o-deploy", messages=STREAM_MESSAGES, stream=True, **request
    )
    return [len(c.choices) for c in stream]


def _parse_event(client: Any) -> object:
    completion = client.chat.completions.parse(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Alice and Bob go to a science fair on Friday."}],
        response_format=CalendarEvent,
    )
    return completion.choices[0].message.parsed


def _responses_stream(client: Any) -> object:
    stream = client.responses.create(
        model=CHAT_MODEL,
        instructions="Answer in one sentence.",
        input="Capital of France?",
        stream=True,
    )
    return "".join(e.delta for e in stream if e.type == "response.output_text.delta")


def _responses_stream_summary(client: Any, **request: Any) -> object:
    """The streamed text deltas and the last event's type."""
    events = list(
        client.responses.create(
            model=CHAT_MODEL,
            instructions="Answer in one sentence.",
            input="Capital of France?",
            stream=True,
            **request,
        )
    )
    texts = [e.delta for e in events if e.type == "response.output_text.delta"]
    return ("".join(texts), events[-1].type)


def _legacy_stream(client: Any, **request: Any) -> object:
    stream = client.completions.create(
        model="gpt-3.5-turbo-instruct",
        prompt="Say this is a test",
        max_tokens=7,
        stream=True,
        **request,
    )
    return "".join(c.choices[0].text for c in stream if c.choices)


def per_task_messages(task: int) -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"Echo task {task}."}]


def per_task_usage(task: int) -> dict[str, Any]:
    """What each task's streamed call is billed (distinct, so totals cannot mix sessions)."""
    return chat_usage(10 + task, 2 + task)


def _stream_each_task(client: Any) -> object:
    return [
        _streamed_text(
            client.chat.completions.create(
                model=CHAT_MODEL, messages=per_task_messages(task), stream=True, **request
            )
        )
        for request in ({}, INCLUDE_USAGE)
        for task in range(PER_TASK_STREAMS)
    ]


def _chat_stream(client: Any, **request: Any) -> object:
    return _streamed_text(
        client.chat.completions.create(
            model=CHAT_MODEL, messages=STREAM_MESSAGES, stream=True, **request
        )
    )


def both_ways(
    name: str,
    events: list[dict[str, Any] | str],
    call: Callable[..., object],
    expected: object,
    expected_asking: object = None,
    **options: Any,
) -> Recipe:
    """A stream cassette with two requests: as the application wrote it, and the same request
    asking for usage (as convotel sends it by default, or an application asking itself)."""
    return Recipe(
        name,
        (sse_response(events), sse_response(asking_for_usage(events, STREAM_USAGE))),
        lambda c: (call(c), call(c, **INCLUDE_USAGE)),
        (expected, expected if expected_asking is None else expected_asking),
        **options,
    )


PER_TASK_STREAMS = 8
CHAT_TEXT = "The capital of France is Paris."
STREAM_PIECES = ["Hello", " there", "!"]
TOOL_STREAM_EVENTS: list[Event] = [
    chat_chunk({"role": "assistant", "content": None, "refusal": None}),
    chat_chunk({"tool_calls": [wire.tool_call_head(0, "call_paris", "get_weather")]}),
    chat_chunk({"tool_calls": [wire.tool_call_fragment(0, '{"ci')]}),
    chat_chunk({"tool_calls": [wire.tool_call_fragment(0, 'ty":"Paris"}')]}),
    chat_chunk({"tool_calls": [wire.tool_call_head(1, "call_tokyo", "get_weather")]}),
    chat_chunk({"tool_calls": [wire.tool_call_fragment(1, '{"city":"Tokyo"}')]}),
    chat_chunk({}, finish_reason="tool_calls"),
    wire.DONE,
]
AZURE_FILTER = {
    "hate": {"filtered": False, "severity": "safe"},
    "self_harm": {"filtered": False, "severity": "safe"},
    "sexual": {"filtered": False, "severity": "safe"},
    "violence": {"filtered": False, "severity": "safe"},
}
RATE_LIMITED = json_response(
    error_body(
        "Rate limit reached for gpt-4o-mini on requests per min (RPM).",
        "requests",
        "rate_limit_exceeded",
    ),
    status=429,
    headers={"retry-after-ms": "1", "x-ratelimit-remaining-requests": "0"},
)
#: How OpenAI-compatible servers refuse the option: a 400 naming it (Azure before 2024-09-01 and
#: others), or a 422 validation error of a FastAPI/pydantic server that forbids extra fields.
STREAM_OPTIONS_REJECTED = json_response(
    error_body(
        "Unrecognized request argument supplied: stream_options",
        "invalid_request_error",
        None,
        "stream_options",
    ),
    status=400,
)
STREAM_OPTIONS_UNPROCESSABLE = json_response(
    {
        "detail": [
            {
                "type": "extra_forbidden",
                "loc": ["body", "stream_options"],
                "msg": "Extra inputs are not permitted",
                "input": {"include_usage": True},
            }
        ]
    },
    status=422,
)
BAD_TEMPERATURE = json_response(
    error_body(
        "Invalid value for 'temperature': must be between 0 and 2.",
        "invalid_request_error",
        "invalid_value",
        "temperature",
    ),
    status=400,
)
MODEL_NOT_FOUND = json_response(
    error_body(
        "The model `gpt-4o-mini` does not exist or you do not have access to it.",
        "invalid_request_error",
        "model_not_found",
    ),
    status=404,
)
SERVER_ERROR = json_response(
    error_body(
        "The server had an error while processing your request. Sorry about that!", "server_error"
    ),
    status=500,
    headers={"retry-after-ms": "1"},
)

# --- shapes OpenInference users rely on (issue #18) ----------------------------------------------

WEATHER_FUNCTION: dict[str, Any] = {
    key: WEATHER_TOOL["function"][key] for key in ("name", "description", "parameters")
}
FUNCTION_CALL = {"name": "get_weather", "arguments": '{"city":"Paris"}'}
#: A legacy function-calling round trip: the model's call, then the function's result.
FUNCTION_CALL_FOLLOW_UP: list[dict[str, Any]] = [
    WEATHER_QUESTION,
    {"role": "assistant", "content": None, "function_call": FUNCTION_CALL},
    {"role": "function", "name": "get_weather", "content": "18°C, cloudy"},
]
FUNCTION_CALL_STREAM_EVENTS: list[Event] = [
    chat_chunk({"role": "assistant", "content": None, "refusal": None}),
    chat_chunk({"function_call": {"name": "get_weather", "arguments": ""}}),
    chat_chunk({"function_call": {"arguments": '{"ci'}}),
    chat_chunk({"function_call": {"arguments": 'ty":"Paris"}'}}),
    chat_chunk({}, finish_reason="function_call"),
    wire.DONE,
]
IMAGE_URL = "https://example.com/cat.jpg"
#: An image given as a plain URL string (accepted by OpenAI-compatible servers), and no text.
IMAGE_ONLY_MESSAGES: list[dict[str, Any]] = [
    {"role": "user", "content": [{"type": "image_url", "image_url": IMAGE_URL}]}
]
#: A request whose messages carry no text: the assistant's tool call is the last message.
TOOL_CALL_ONLY_MESSAGES: list[dict[str, Any]] = [
    {"role": "assistant", "content": None, "tool_calls": WEATHER_TOOL_CALLS[:1]}
]
RESPONSES_REASONING_ITEM: dict[str, Any] = {
    "id": "rs_67ccd3a9",
    "type": "reasoning",
    "summary": [],
}


def _function_call_round_trip(client: Any) -> object:
    first = client.chat.completions.create(
        model=CHAT_MODEL, messages=[WEATHER_QUESTION], functions=[WEATHER_FUNCTION]
    )
    second = client.chat.completions.create(
        model=CHAT_MODEL, messages=FUNCTION_CALL_FOLLOW_UP, functions=[WEATHER_FUNCTION]
    )
    return (first.choices[0].message.function_call.arguments, _message_text(second))


def _stream_function_call(client: Any, **request: Any) -> object:
    stream = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[WEATHER_QUESTION],
        functions=[WEATHER_FUNCTION],
        stream=True,
        **request,
    )
    deltas = [c.choices[0].delta.function_call for c in stream if c.choices]
    return "".join(d.arguments or "" for d in deltas if d is not None)


RECIPES: tuple[Recipe, ...] = (
    Recipe(
        "chat_basic",
        (json_response(chat_completion({"content": CHAT_TEXT}, chat_usage(24, 8))),),
        lambda c: _message_text(
            c.chat.completions.create(
                model=CHAT_MODEL,
                messages=BASIC_MESSAGES,
                temperature=0.2,
                max_tokens=50,
                user="end-user-hash",
            )
        ),
        CHAT_TEXT,
    ),
    Recipe(
        "chat_reasoning_cached",
        (
            json_response(
                chat_completion(
                    {"content": "42"},
                    chat_usage(1200, 300, cached=1024, reasoning=256),
                    model="o4-mini-2025-04-16",
                )
            ),
        ),
        lambda c: _message_text(
            c.chat.completions.create(
                model="o4-mini",
                messages=[{"role": "user", "content": "The answer to everything?"}],
                reasoning_effort="low",
            )
        ),
        "42",
    ),
    Recipe(
        "chat_tools",
        (
            json_response(
                chat_completion(
                    {"content": None, "tool_calls": WEATHER_TOOL_CALLS},
                    chat_usage(80, 40),
                    finish_reason="tool_calls",
                )
            ),
            json_response(
                chat_completion({"content": "Paris: 18°C, Tokyo: 22°C."}, chat_usage(130, 12))
            ),
        ),
        _tool_round_trip,
        (['{"city":"Paris"}', '{"city":"Tokyo"}'], "Paris: 18°C, Tokyo: 22°C."),
    ),
    Recipe(
        "chat_multimodal",
        (json_response(chat_completion({"content": "A cat and a tiny PNG."}, chat_usage(900, 8))),),
        lambda c: _message_text(
            c.chat.completions.create(model=CHAT_MODEL, messages=MULTIMODAL_MESSAGES)
        ),
        "A cat and a tiny PNG.",
    ),
    Recipe(
        "chat_parse",
        (
            json_response(
                chat_completion(
                    {
                        "content": '{"name":"Science fair","date":"Friday",'
                        '"participants":["Alice","Bob"]}'
                    },
                    chat_usage(92, 18),
                )
            ),
        ),
        _parse_event,
        CalendarEvent(name="Science fair", date="Friday", participants=["Alice", "Bob"]),
    ),
    both_ways(
        "chat_stream",
        text_stream_chunks(STREAM_PIECES, include_usage=False),
        _chat_stream,
        "Hello there!",
    ),
    Recipe(
        "chat_stream_usage",
        (sse_response(text_stream_chunks(STREAM_PIECES, include_usage=True)),),
        lambda c: _streamed_text(
            c.chat.completions.create(
                model=CHAT_MODEL,
                messages=STREAM_MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            )
        ),
        "Hello there!",
    ),
    Recipe(
        "chat_stream_per_task",
        tuple(
            sse_response(
                text_stream_chunks(
                    ["echo", f" task {task}"], include_usage=usage, usage=per_task_usage(task)
                )
            )
            for usage in (False, True)
            for task in range(PER_TASK_STREAMS)
        ),
        _stream_each_task,
        [f"echo task {task}" for task in range(PER_TASK_STREAMS)] * 2,
    ),
    both_ways(
        "chat_stream_tools",
        TOOL_STREAM_EVENTS,
        _stream_tool_calls,
        {0: '{"city":"Paris"}', 1: '{"city":"Tokyo"}'},
    ),
    both_ways(
        "chat_stream_error",
        [
            chat_chunk({"role": "assistant", "content": ""}),
            chat_chunk({"content": "Hel"}),
            error_body("The model is overloaded. Please retry.", "server_error", "overloaded"),
        ],
        _raised(
            lambda c, **request: c.chat.completions.create(
                model=CHAT_MODEL, messages=STREAM_MESSAGES, stream=True, **request
            )
        ),
        ("APIError", None),
    ),
    Recipe(
        "chat_stream_rejected",
        (
            STREAM_OPTIONS_REJECTED,
            sse_response(text_stream_chunks(STREAM_PIECES, include_usage=False)),
            sse_response(text_stream_chunks(STREAM_PIECES, include_usage=False)),
        ),
        lambda c: (_raised(_chat_stream)(c, **INCLUDE_USAGE), _chat_stream(c), _chat_stream(c)),
        (("BadRequestError", 400), "Hello there!", "Hello there!"),
        client="compatible",
    ),
    Recipe(
        "chat_stream_unprocessable",
        (
            STREAM_OPTIONS_UNPROCESSABLE,
            sse_response(text_stream_chunks(STREAM_PIECES, include_usage=False)),
        ),
        lambda c: (_raised(_chat_stream)(c, **INCLUDE_USAGE), _chat_stream(c)),
        (("UnprocessableEntityError", 422), "Hello there!"),
        client="compatible",
    ),
    Recipe(
        "chat_stream_rejected_then_failed",
        (STREAM_OPTIONS_REJECTED, MODEL_NOT_FOUND),
        lambda c: (_raised(_chat_stream)(c, **INCLUDE_USAGE), _raised(_chat_stream)(c)),
        (("BadRequestError", 400), ("NotFoundError", 404)),
        client="compatible",
    ),
    Recipe(
        "chat_stream_bad_temperature",
        (BAD_TEMPERATURE,),
        lambda c: _raised(_chat_stream)(c, temperature=7, **INCLUDE_USAGE),
        ("BadRequestError", 400),
    ),
    Recipe(
        "chat_retry_429",
        (RATE_LIMITED, json_response(chat_completion({"content": CHAT_TEXT}, chat_usage(24, 8)))),
        lambda c: _message_text(
            c.chat.completions.create(model=CHAT_MODEL, messages=BASIC_MESSAGES)
        ),
        CHAT_TEXT,
    ),
    Recipe(
        "chat_500",
        (SERVER_ERROR,),
        _raised(lambda c: c.chat.completions.create(model=CHAT_MODEL, messages=BASIC_MESSAGES)),
        ("InternalServerError", 500),
        max_retries=0,
    ),
    Recipe(
        "chat_500_retries_exhausted",
        (SERVER_ERROR, SERVER_ERROR, SERVER_ERROR),
        _raised(lambda c: c.chat.completions.create(model=CHAT_MODEL, messages=BASIC_MESSAGES)),
        ("InternalServerError", 500),
    ),
    Recipe(
        "chat_400",
        (BAD_TEMPERATURE,),
        _raised(
            lambda c: c.chat.completions.create(
                model=CHAT_MODEL, messages=BASIC_MESSAGES, temperature=7
            )
        ),
        ("BadRequestError", 400),
    ),
    Recipe(
        "chat_malformed_json",
        (json_response('{"id": "chatcmpl-broken", "object": "chat.completion", "choi'),),
        _raised(lambda c: c.chat.completions.create(model=CHAT_MODEL, messages=BASIC_MESSAGES)),
        ("JSONDecodeError", None),
    ),
    Recipe(
        "chat_unexpected_shape",
        (
            json_response(
                {"id": "chatcmpl-odd", "object": "chat.completion", "choices": "none", "usage": 5}
            ),
        ),
        lambda c: c.chat.completions.create(model=CHAT_MODEL, messages=BASIC_MESSAGES).id,
        "chatcmpl-odd",
    ),
    Recipe(
        "azure_chat",
        (
            json_response(
                {
                    **chat_completion(
                        {"content": CHAT_TEXT}, chat_usage(24, 8), model="gpt-4o-2024-11-20"
                    ),
                    "prompt_filter_results": [
                        {"prompt_index": 0, "content_filter_results": AZURE_FILTER}
                    ],
                }
            ),
        ),
        lambda c: _message_text(
            c.chat.completions.create(
                model="gpt-4o-deploy", messages=BASIC_MESSAGES, temperature=0.2
            )
        ),
        CHAT_TEXT,
        client="azure",
    ),
    both_ways(
        "azure_chat_stream",
        [
            {
                "choices": [],
                "created": 0,
                "id": "",
                "model": "",
                "object": "",
                "prompt_filter_results": [
                    {"prompt_index": 0, "content_filter_results": AZURE_FILTER}
                ],
            },
            *text_stream_chunks(STREAM_PIECES, include_usage=False),
        ],
        _stream_azure,
        [0, 1, 1, 1, 1, 1],
        [0, 1, 1, 1, 1, 1, 0],  # the usage-only chunk the application asked for
        client="azure",
    ),
    Recipe(
        "responses_basic",
        (
            json_response(
                response_object(
                    [RESPONSES_MESSAGE_ITEM], usage=responses_usage(36, 9, cached=16, reasoning=4)
                )
            ),
        ),
        lambda c: (
            c.responses.create(
                model=CHAT_MODEL,
                instructions="Answer in one sentence.",
                input="Capital of France?",
                temperature=1.0,
            ).output_text
        ),
        RESPONSES_TEXT,
    ),
    Recipe(
        "responses_tools",
        (
            json_response(
                response_object(
                    [RESPONSES_FUNCTION_CALL_ITEM],
                    usage=responses_usage(60, 15, cached=0, reasoning=0),
                )
            ),
        ),
        lambda c: (
            c.responses.create(
                model=CHAT_MODEL,
                input=[{"role": "user", "content": "Weather in Paris?"}],
                tools=[RESPONSES_WEATHER_TOOL],
            )
            .output[0]
            .arguments
        ),
        '{"city":"Paris"}',
    ),
    Recipe(
        "responses_stream",
        (sse_response(responses_stream_events(), named=True),),
        _responses_stream,
        RESPONSES_TEXT,
    ),
    Recipe(
        "responses_stream_failed",
        (sse_response(responses_failed_stream_events(), named=True),),
        _responses_stream_summary,
        ("Paris is", "response.failed"),
    ),
    Recipe(
        "responses_stream_error_event",
        (sse_response(responses_error_event_stream_events(), named=True),),
        _responses_stream_summary,
        ("Paris is", "error"),
    ),
    Recipe(
        "responses_stream_incomplete",
        (sse_response(responses_incomplete_stream_events(), named=True),),
        lambda c: _responses_stream_summary(c, max_output_tokens=3),
        (RESPONSES_INCOMPLETE_TEXT, "response.incomplete"),
    ),
    Recipe(
        "embeddings",
        (json_response(embeddings_body(base64_encoded=True)),),
        lambda c: [
            list(d.embedding)
            for d in c.embeddings.create(model="text-embedding-3-small", input=["cat", "dog"]).data
        ],
        EMBEDDING_VECTORS,
    ),
    Recipe(
        "embeddings_float",
        (json_response(embeddings_body(base64_encoded=False)),),
        lambda c: [
            d.embedding
            for d in c.embeddings.create(
                model="text-embedding-3-small",
                input="cat and dog",
                encoding_format="float",
                dimensions=3,
            ).data
        ],
        EMBEDDING_VECTORS,
    ),
    Recipe(
        "completions_legacy",
        (json_response(legacy_completion("\n\nThis is indeed a test")),),
        lambda c: (
            c.completions.create(
                model="gpt-3.5-turbo-instruct",
                prompt="Say this is a test",
                max_tokens=7,
                temperature=0,
            )
            .choices[0]
            .text
        ),
        "\n\nThis is indeed a test",
    ),
    both_ways(
        "completions_legacy_stream",
        [
            legacy_chunk("This"),
            legacy_chunk(" is"),
            legacy_chunk(" a test"),
            legacy_chunk("", "stop"),
            "[DONE]",
        ],
        _legacy_stream,
        "This is a test",
    ),
    Recipe(
        "models_list",
        (
            json_response(
                {
                    "object": "list",
                    "data": [
                        {
                            "id": "gpt-4o-mini",
                            "object": "model",
                            "created": CREATED,
                            "owned_by": "system",
                        },
                        {
                            "id": "text-embedding-3-small",
                            "object": "model",
                            "created": CREATED,
                            "owned_by": "system",
                        },
                    ],
                }
            ),
        ),
        lambda c: [m.id for m in c.models.list()],
        ["gpt-4o-mini", "text-embedding-3-small"],
    ),
    Recipe(
        "chat_function_call",
        (
            json_response(
                chat_completion(
                    {"content": None, "function_call": FUNCTION_CALL},
                    chat_usage(61, 16),
                    finish_reason="function_call",
                )
            ),
            json_response(
                chat_completion({"content": "It is 18°C and cloudy in Paris."}, chat_usage(90, 11))
            ),
        ),
        _function_call_round_trip,
        ('{"city":"Paris"}', "It is 18°C and cloudy in Paris."),
    ),
    both_ways(
        "chat_function_call_stream",
        FUNCTION_CALL_STREAM_EVENTS,
        _stream_function_call,
        '{"city":"Paris"}',
    ),
    Recipe(
        "chat_image_only",
        (json_response(chat_completion({"content": "A cat on a sofa."}, chat_usage(95, 6))),),
        lambda c: _message_text(
            c.chat.completions.create(model=CHAT_MODEL, messages=IMAGE_ONLY_MESSAGES)
        ),
        "A cat on a sofa.",
    ),
    Recipe(
        "chat_tool_call_last",
        (json_response(chat_completion({"content": "Checking Paris."}, chat_usage(40, 4))),),
        lambda c: _message_text(
            c.chat.completions.create(
                model=CHAT_MODEL, messages=TOOL_CALL_ONLY_MESSAGES, tools=[WEATHER_TOOL]
            )
        ),
        "Checking Paris.",
    ),
    Recipe(
        "chat_empty_reply",
        (
            json_response(
                chat_completion(
                    {"content": ""},
                    chat_usage(12, 64, reasoning=64),
                    finish_reason="length",
                    model="o4-mini-2025-04-16",
                )
            ),
        ),
        lambda c: _message_text(
            c.chat.completions.create(
                model="o4-mini", messages=STREAM_MESSAGES, max_completion_tokens=64
            )
        ),
        "",
    ),
    Recipe(
        "responses_reasoning_only",
        (
            json_response(
                response_object(
                    [RESPONSES_REASONING_ITEM],
                    status="incomplete",
                    usage=responses_usage(12, 16, cached=0, reasoning=16),
                    incomplete_reason="max_output_tokens",
                )
            ),
        ),
        lambda c: (
            (
                c.responses.create(
                    model="o4-mini", input="Capital of France?", max_output_tokens=16
                )
            ).output_text
        ),
        "",
    ),
    Recipe(
        "azure_v1_chat",
        (json_response(chat_completion({"content": CHAT_TEXT}, chat_usage(24, 8))),),
        lambda c: _message_text(
            c.chat.completions.create(model="gpt-4o-deploy", messages=BASIC_MESSAGES)
        ),
        CHAT_TEXT,
        client="azure_v1",
    ),
)

RECIPES_BY_NAME: dict[str, Recipe] = {recipe.name: recipe for recipe in RECIPES}
