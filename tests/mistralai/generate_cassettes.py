"""Write the Mistral cassettes in ``cassettes/mistralai/`` from hand-written wire responses.

Run with the latest ``mistralai`` installed: ``python tests/mistralai/generate_cassettes.py``.

Each scenario makes real SDK calls through an ``httpx2.MockTransport`` that answers with the
bodies below (Mistral's wire format: compact JSON, ``text/event-stream`` with ``data: {...}``
lines and ``data: [DONE]``). vcrpy records the exact request the SDK sent and the response, with
the ``authorization`` header filtered out. The tests replay these files with
``record_mode="none"`` through the SDK's default transport.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx2
import vcr  # type: ignore[import-untyped]
from mistral_parity_calls import (
    TWO_ANSWERS,
    WEATHER_CALL,
    chat_empty_reply,
    chat_image_url,
    chat_tool_history,
    chat_two_choices,
)
from mistral_spans import (
    CONVERSATION_ERROR_INPUT,
    HELLO,
    JSON_MODE_MESSAGES,
    WEATHER_QUESTION,
    WEATHER_TOOL,
)
from mistralai.client import Mistral, errors

from convotel.demo import wire

CASSETTE_DIR = Path(__file__).resolve().parents[2] / "cassettes" / "mistralai"

CHAT_MODEL = "mistral-small-latest"
FIM_MODEL = "codestral-latest"
EMBED_MODEL = "mistral-embed"
AGENT_ID = "ag_0198d2c5e1a47b3c9f2e8d6a4b1c0e9f"
CONVERSATION_ID = "conv_0198d2c6f3b27e8a9c4d1f0b2a3e5c7d"
CREATED = 1767225600


@dataclass(frozen=True)
class WireResponse:
    """One HTTP response exactly as the Mistral API sends it."""

    status: int
    body: str
    content_type: str = "application/json"


def compact(payload: Any) -> str:
    """A JSON body as the API sends it (no spaces)."""
    return wire.encode_event(payload)


def sse(events: Iterable[wire.Event], *, event_names: bool = False) -> str:
    """Server-sent events: ``data: {...}`` blocks (``event:`` lines too with ``event_names``)."""
    return wire.sse_body(events, named=event_names).decode()


usage = wire.mistral_usage
COMPLETION = wire.MistralEnvelope("5d5f3e2a9c8b4f7e8a1b2c3d4e5f6a7b", CHAT_MODEL, CREATED)
CHUNKS = wire.MistralEnvelope("8e1c4b7a2d5f4e3b9c0a1d2e3f4a5b6c", CHAT_MODEL, CREATED)


def chat_completion(
    message: dict[str, Any], finish_reason: str, *, model: str = CHAT_MODEL, tokens: tuple[int, int]
) -> str:
    envelope = replace(COMPLETION, model=model)
    return compact(
        wire.mistral_chat_completion(envelope, message, usage(*tokens), finish_reason=finish_reason)
    )


def chunk(
    delta: dict[str, Any],
    finish_reason: str | None = None,
    *,
    model: str = CHAT_MODEL,
    usage: dict[str, int] | None = None,
) -> dict[str, Any]:
    envelope = replace(CHUNKS, model=model)
    return wire.mistral_chat_chunk(envelope, delta, finish_reason=finish_reason, usage=usage)


def error_body(message: str, error_type: str, code: str | None) -> str:
    return compact(wire.mistral_error_body(message, error_type, code))


def answer(text: str) -> dict[str, Any]:
    """The assistant message of a plain text answer."""
    return wire.mistral_assistant_message(text)


def conversation_usage(prompt: int, completion: int) -> dict[str, Any]:
    """The ``usage`` of a Conversations API response (no connectors used)."""
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "connector_tokens": None,
        "connectors": None,
    }


def conversation_response(
    entry_id: str, times: tuple[str, str], content: str, *, tokens: tuple[int, int]
) -> str:
    """A ``conversation.response`` with one assistant message entry (``times``: created and
    completed)."""
    entry = {
        "object": "entry",
        "type": "message.output",
        "created_at": times[0],
        "completed_at": times[1],
        "id": entry_id,
        "agent_id": None,
        "model": "mistral-medium-latest",
        "role": "assistant",
        "content": content,
    }
    return compact(
        {
            "object": "conversation.response",
            "conversation_id": CONVERSATION_ID,
            "outputs": [entry],
            "usage": conversation_usage(*tokens),
        }
    )


CHAT_STREAM_BODY = sse(
    wire.mistral_chat_stream(
        CHUNKS, [{"content": piece} for piece in ("Bon", "jour", " !")], usage(9, 4)
    )
)

# --- scenarios ------------------------------------------------------------------------------------


def chat_complete(client: Mistral) -> None:
    client.chat.complete(model=CHAT_MODEL, messages=HELLO, temperature=0.2, max_tokens=64)


def chat_complete_tools(client: Mistral) -> None:
    client.chat.complete(
        model=CHAT_MODEL, messages=WEATHER_QUESTION, tools=[WEATHER_TOOL], tool_choice="auto"
    )


def chat_complete_json_mode(client: Mistral) -> None:
    client.chat.complete(
        model=CHAT_MODEL,
        messages=JSON_MODE_MESSAGES,
        response_format={"type": "json_object"},
    )


def chat_stream(client: Mistral) -> None:
    with client.chat.stream(model=CHAT_MODEL, messages=HELLO) as stream:
        for _ in stream:
            pass


def chat_stream_tools(client: Mistral) -> None:
    for _ in client.chat.stream(model=CHAT_MODEL, messages=WEATHER_QUESTION, tools=[WEATHER_TOOL]):
        pass


def fim_complete(client: Mistral) -> None:
    client.fim.complete(model=FIM_MODEL, prompt="def add(a, b):\n", suffix="\nprint(add(1, 2))")


def fim_stream(client: Mistral) -> None:
    for _ in client.fim.stream(model=FIM_MODEL, prompt="def add(a, b):\n"):
        pass


def embeddings_create(client: Mistral) -> None:
    client.embeddings.create(model=EMBED_MODEL, inputs=["Bonjour", "Hello"])


def agents_complete(client: Mistral) -> None:
    client.agents.complete(agent_id=AGENT_ID, messages=HELLO)


def agents_stream(client: Mistral) -> None:
    for _ in client.agents.stream(agent_id=AGENT_ID, messages=HELLO):
        pass


def conversations_start(client: Mistral) -> None:
    client.beta.conversations.start(
        inputs="Who wrote Les Misérables?", model="mistral-medium-latest", store=True
    )


def conversations_append(client: Mistral) -> None:
    client.beta.conversations.append(
        conversation_id=CONVERSATION_ID, inputs="When was it published?"
    )


def conversations_start_stream(client: Mistral) -> None:
    for _ in client.beta.conversations.start_stream(
        inputs="Who wrote Les Misérables?", model="mistral-medium-latest"
    ):
        pass


def conversations_append_stream(client: Mistral) -> None:
    for _ in client.beta.conversations.append_stream(
        conversation_id=CONVERSATION_ID, inputs="When was it published?"
    ):
        pass


def conversations_start_stream_error(client: Mistral) -> None:
    for _ in client.beta.conversations.start_stream(
        inputs=CONVERSATION_ERROR_INPUT, model="mistral-medium-latest"
    ):
        pass


def chat(client: Mistral) -> None:
    """Any plain chat call; used for the error scenarios (the SDK raises, we swallow)."""
    try:
        client.chat.complete(model=CHAT_MODEL, messages=HELLO)
    except errors.MistralError as error:
        print(f"  (expected) {type(error).__name__}")


def chat_stream_expect_error(client: Mistral) -> None:
    try:
        for _ in client.chat.stream(model=CHAT_MODEL, messages=HELLO):
            pass
    except errors.MistralError as error:
        print(f"  (expected) {type(error).__name__}")


def moderate(client: Mistral) -> None:
    client.classifiers.moderate(model="mistral-moderation-latest", inputs=["I love this city."])


# --- OpenInference parity (#18): the calls are in mistral_parity_calls ---------------------------


def two_choices() -> str:
    """A completion with one choice per answer of :data:`TWO_ANSWERS`."""
    body = wire.mistral_chat_completion(
        COMPLETION, answer(TWO_ANSWERS[0]), usage(9, 8), finish_reason="stop"
    )
    body["choices"].append(
        {"index": 1, "message": answer(TWO_ANSWERS[1]), "finish_reason": "length"}
    )
    return compact(body)


SCENARIOS: dict[str, tuple[Callable[[Mistral], None], WireResponse]] = {
    "chat_complete": (
        chat_complete,
        WireResponse(
            200,
            chat_completion(answer("Bonjour !"), "stop", tokens=(9, 4)),
        ),
    ),
    "chat_complete_tools": (
        chat_complete_tools,
        WireResponse(
            200,
            chat_completion(
                wire.mistral_assistant_message("", [WEATHER_CALL]),
                "tool_calls",
                tokens=(88, 17),
            ),
        ),
    ),
    "chat_complete_json_mode": (
        chat_complete_json_mode,
        WireResponse(
            200,
            chat_completion(
                answer('{"city": "Paris", "country": "France"}'), "stop", tokens=(27, 12)
            ),
        ),
    ),
    "chat_stream": (
        chat_stream,
        WireResponse(200, CHAT_STREAM_BODY, "text/event-stream; charset=utf-8"),
    ),
    "chat_stream_tools": (
        chat_stream_tools,
        WireResponse(
            200,
            sse(
                [
                    chunk({"role": "assistant", "content": ""}),
                    chunk(
                        {
                            "tool_calls": [
                                {
                                    "id": "Xk3Lm9QzR",
                                    "function": {
                                        "name": "get_weather",
                                        "arguments": '{"city": "Paris"}',
                                    },
                                    "index": 0,
                                }
                            ]
                        },
                        "tool_calls",
                        usage=usage(88, 17),
                    ),
                    wire.DONE,
                ]
            ),
            "text/event-stream; charset=utf-8",
        ),
    ),
    "fim_complete": (
        fim_complete,
        WireResponse(
            200,
            chat_completion(answer("    return a + b"), "stop", model=FIM_MODEL, tokens=(21, 7)),
        ),
    ),
    "fim_stream": (
        fim_stream,
        WireResponse(
            200,
            sse(
                [
                    chunk({"role": "assistant", "content": ""}, model=FIM_MODEL),
                    chunk({"content": "    return"}, model=FIM_MODEL),
                    chunk({"content": " a + b"}, "stop", model=FIM_MODEL, usage=usage(12, 7)),
                    wire.DONE,
                ]
            ),
            "text/event-stream; charset=utf-8",
        ),
    ),
    "embeddings_create": (
        embeddings_create,
        WireResponse(
            200,
            compact(
                wire.mistral_embeddings_body(
                    [[-0.0165, 0.0702, 0.0311], [-0.0241, 0.0558, 0.0127]],
                    body_id="b3a1c9d8e7f64a5b8c7d6e5f4a3b2c1d",
                    model=EMBED_MODEL,
                    prompt_tokens=6,
                )
            ),
        ),
    ),
    "agents_complete": (
        agents_complete,
        WireResponse(
            200,
            chat_completion(
                answer("Bonjour !"), "stop", model="mistral-medium-2508", tokens=(41, 4)
            ),
        ),
    ),
    "agents_stream": (
        agents_stream,
        WireResponse(
            200,
            sse(
                [
                    chunk({"role": "assistant", "content": ""}, model="mistral-medium-2508"),
                    chunk({"content": "Bonjour"}, model="mistral-medium-2508"),
                    chunk(
                        {"content": " !"}, "stop", model="mistral-medium-2508", usage=usage(41, 4)
                    ),
                    wire.DONE,
                ]
            ),
            "text/event-stream; charset=utf-8",
        ),
    ),
    "conversations_start": (
        conversations_start,
        WireResponse(
            200,
            conversation_response(
                "msg_0198d2c6f4a1b2c3d4e5f6a7b8c9d0e1",
                ("2026-01-01T00:00:00.120000Z", "2026-01-01T00:00:00.910000Z"),
                "Victor Hugo wrote Les Misérables.",
                tokens=(11, 8),
            ),
        ),
    ),
    "conversations_append": (
        conversations_append,
        WireResponse(
            200,
            conversation_response(
                "msg_0198d2c7a0b1c2d3e4f5a6b7c8d9e0f1",
                ("2026-01-01T00:01:00.100000Z", "2026-01-01T00:01:00.700000Z"),
                "It was published in 1862.",
                tokens=(32, 9),
            ),
        ),
    ),
    "conversations_start_stream": (
        conversations_start_stream,
        WireResponse(
            200,
            sse(
                [
                    {
                        "type": "conversation.response.started",
                        "created_at": "2026-01-01T00:00:00.050000Z",
                        "conversation_id": CONVERSATION_ID,
                    },
                    {
                        "type": "message.output.delta",
                        "created_at": "2026-01-01T00:00:00.300000Z",
                        "output_index": 0,
                        "id": "msg_0198d2c6f4a1b2c3d4e5f6a7b8c9d0e1",
                        "content_index": 0,
                        "model": "mistral-medium-latest",
                        "agent_id": None,
                        "role": "assistant",
                        "content": "Victor Hugo",
                    },
                    {
                        "type": "message.output.delta",
                        "created_at": "2026-01-01T00:00:00.400000Z",
                        "output_index": 0,
                        "id": "msg_0198d2c6f4a1b2c3d4e5f6a7b8c9d0e1",
                        "content_index": 0,
                        "model": "mistral-medium-latest",
                        "agent_id": None,
                        "role": "assistant",
                        "content": " wrote Les Misérables.",
                    },
                    {
                        "type": "conversation.response.done",
                        "created_at": "2026-01-01T00:00:00.910000Z",
                        "usage": conversation_usage(11, 8),
                    },
                ],
                event_names=True,
            ),
            "text/event-stream; charset=utf-8",
        ),
    ),
    "conversations_append_stream": (
        conversations_append_stream,
        WireResponse(
            200,
            sse(
                [
                    {
                        "type": "conversation.response.started",
                        "created_at": "2026-01-01T00:01:00.040000Z",
                        "conversation_id": CONVERSATION_ID,
                    },
                    {
                        "type": "message.output.delta",
                        "created_at": "2026-01-01T00:01:00.300000Z",
                        "output_index": 0,
                        "id": "msg_0198d2c7a0b1c2d3e4f5a6b7c8d9e0f1",
                        "content_index": 0,
                        "model": "mistral-medium-latest",
                        "agent_id": None,
                        "role": "assistant",
                        "content": "It was published",
                    },
                    {
                        "type": "message.output.delta",
                        "created_at": "2026-01-01T00:01:00.400000Z",
                        "output_index": 0,
                        "id": "msg_0198d2c7a0b1c2d3e4f5a6b7c8d9e0f1",
                        "content_index": 0,
                        "model": "mistral-medium-latest",
                        "agent_id": None,
                        "role": "assistant",
                        "content": " in 1862.",
                    },
                    {
                        "type": "conversation.response.done",
                        "created_at": "2026-01-01T00:01:00.700000Z",
                        "usage": conversation_usage(32, 9),
                    },
                ],
                event_names=True,
            ),
            "text/event-stream; charset=utf-8",
        ),
    ),
    "conversations_start_stream_error": (
        conversations_start_stream_error,
        WireResponse(
            200,
            sse(
                [
                    {
                        "type": "conversation.response.started",
                        "created_at": "2026-01-01T00:02:00.040000Z",
                        "conversation_id": "conv_0198d2c8b5c61f2a3b4c5d6e7f8a9b0c",
                    },
                    {
                        "type": "message.output.delta",
                        "created_at": "2026-01-01T00:02:00.280000Z",
                        "output_index": 0,
                        "id": "msg_0198d2c8b6d7e8f9a0b1c2d3e4f5a6b7",
                        "content_index": 0,
                        "model": "mistral-medium-latest",
                        "agent_id": None,
                        "role": "assistant",
                        "content": "Here is",
                    },
                    {
                        "type": "conversation.response.error",
                        "created_at": "2026-01-01T00:02:01.500000Z",
                        "message": "Internal error while generating the response",
                        "code": 3000,
                    },
                ],
                event_names=True,
            ),
            "text/event-stream; charset=utf-8",
        ),
    ),
    "classifiers_moderate": (
        moderate,
        WireResponse(
            200,
            compact(
                {
                    "id": "4f6e8d0c2b1a4e3d9c8b7a6f5e4d3c2b",
                    "model": "mistral-moderation-2411",
                    "results": [
                        {
                            "categories": {
                                "hate_and_discrimination": False,
                                "violence_and_threats": False,
                            },
                            "category_scores": {
                                "hate_and_discrimination": 0.0009,
                                "violence_and_threats": 0.0002,
                            },
                        }
                    ],
                }
            ),
        ),
    ),
    "chat_tool_history": (
        chat_tool_history,
        WireResponse(
            200,
            chat_completion(answer("It is 18°C and cloudy in Paris."), "stop", tokens=(112, 11)),
        ),
    ),
    "chat_image_url": (
        chat_image_url,
        WireResponse(200, chat_completion(answer("The Eiffel Tower."), "stop", tokens=(1540, 6))),
    ),
    "chat_empty_reply": (
        chat_empty_reply,
        WireResponse(200, chat_completion(answer(""), "length", tokens=(9, 1))),
    ),
    "chat_two_choices": (chat_two_choices, WireResponse(200, two_choices())),
    "error_401_unauthorized": (
        chat,
        WireResponse(401, compact({"message": "Unauthorized", "request_id": "7c1f3a9e5b2d4c8f"})),
    ),
    "error_400_invalid_model": (
        chat,
        WireResponse(
            400, error_body("Invalid model: mistral-small-latest", "invalid_model", "1500")
        ),
    ),
    "error_422_validation": (
        chat,
        WireResponse(
            422,
            compact(
                {
                    "detail": [
                        {
                            "type": "less_than_equal",
                            "loc": ["body", "temperature"],
                            "msg": "Input should be less than or equal to 1.5",
                            "input": 3.0,
                            "ctx": {"le": 1.5},
                        }
                    ]
                }
            ),
        ),
    ),
    "error_500_server": (
        chat,
        WireResponse(500, error_body("Internal server error", "internal_server_error", None)),
    ),
    "error_503_html": (
        chat,
        WireResponse(503, "<html><body>Service Unavailable</body></html>", "text/html"),
    ),
    "error_429_stream": (
        chat_stream_expect_error,
        WireResponse(429, error_body("Requests rate limit exceeded", "rate_limited", "1300")),
    ),
    "malformed_json_body": (
        chat,
        WireResponse(200, '{"id":"5d5f3e2a","object":"chat.completion","model":"mistral-small-lat'),
    ),
    "malformed_stream_chunk": (
        chat_stream_expect_error,
        WireResponse(
            200,
            sse(
                [
                    chunk({"role": "assistant", "content": "Bon"}),
                    '{"id":"8e1c4b7a","choices":[{"index":0,"delta":{"content":"jo',  # cut short
                ]
            ),
            "text/event-stream; charset=utf-8",
        ),
    ),
}


def record(name: str, scenario: Callable[[Mistral], None], response: WireResponse) -> None:
    def answer(request: httpx2.Request) -> httpx2.Response:
        headers = {
            "content-type": response.content_type,
            "mistral-correlation-id": "0198d2c5-0000-7000-8000-000000000000",
        }
        return httpx2.Response(response.status, headers=headers, content=response.body.encode())

    path = CASSETTE_DIR / f"{name}.yaml"
    path.unlink(missing_ok=True)
    recorder = vcr.VCR(
        record_mode="all", filter_headers=["authorization"], decode_compressed_response=True
    )
    http_client = httpx2.Client(transport=httpx2.MockTransport(answer))
    with recorder.use_cassette(str(path)):
        scenario(Mistral(api_key="test-key", client=http_client))
    print(f"wrote {path.relative_to(CASSETTE_DIR.parents[1])}")


def main() -> None:
    CASSETTE_DIR.mkdir(parents=True, exist_ok=True)
    for name, (scenario, response) in SCENARIOS.items():
        record(name, scenario, response)


if __name__ == "__main__":
    main()
