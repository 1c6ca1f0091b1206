"""Write the vcrpy cassettes under ``cassettes/dspy/`` from hand-written OpenAI wire-format bodies.

DSPy's LiteLLM path reaches OpenAI through the OpenAI SDK (httpx2), which vcrpy records and
replays. No network is needed: each interaction below is the request DSPy's ChatAdapter sends
(only the parts the tests' matcher compares: model and the user's ``[[ ## field ## ]]`` values)
and the response the public API reference documents. Run from the repository root::

    python tests/dspy/generate_cassettes.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from dspy_loopback import adapter_reply, completion_body, stream_events

CASSETTES = Path(__file__).resolve().parents[2] / "cassettes" / "dspy"
CHAT_URI = "https://api.openai.com/v1/chat/completions"
EMBEDDINGS_URI = "https://api.openai.com/v1/embeddings"


def chat_request(question: str, *, stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Your input fields are:\n1. `question` (str):"},
            {"role": "user", "content": f"[[ ## question ## ]]\n{question}\n\nRespond with ..."},
        ],
    }
    if stream:
        body["stream"] = True
    return body


def interaction(
    uri: str, request: dict[str, Any], status: int, body: str, content_type: str
) -> dict[str, Any]:
    return {
        "request": {
            "body": json.dumps(request),
            "headers": {"content-type": ["application/json"]},
            "method": "POST",
            "uri": uri,
        },
        "response": {
            "body": {"string": body},
            "headers": {"content-type": [content_type]},
            "status": {"code": status, "message": "OK" if status == 200 else "Error"},
        },
    }


def chat(question: str, answer: str) -> dict[str, Any]:
    reply = adapter_reply(answer=answer)
    return interaction(
        CHAT_URI,
        chat_request(question),
        200,
        json.dumps(completion_body(reply)),
        "application/json",
    )


def chat_stream(question: str, answer: str) -> dict[str, Any]:
    events = b"".join(stream_events(adapter_reply(answer=answer))).decode()
    return interaction(
        CHAT_URI, chat_request(question, stream=True), 200, events, "text/event-stream"
    )


def chat_error(question: str, status: int, message: str) -> dict[str, Any]:
    error = {"error": {"message": message, "type": "invalid_request_error", "code": None}}
    return interaction(
        CHAT_URI, chat_request(question), status, json.dumps(error), "application/json"
    )


def embeddings(texts: list[str]) -> dict[str, Any]:
    request = {"model": "text-embedding-3-small", "input": texts, "encoding_format": "float"}
    response = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": [0.1 * (i + 1), 0.2, -0.3]}
            for i in range(len(texts))
        ],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 3 * len(texts), "total_tokens": 3 * len(texts)},
    }
    return interaction(EMBEDDINGS_URI, request, 200, json.dumps(response), "application/json")


CASSETTE_INTERACTIONS: dict[str, list[dict[str, Any]]] = {
    "litellm_predict.yaml": [chat("What is the capital of France?", "Paris")],
    "litellm_two_sessions.yaml": [
        chat("question from s-1", "answer for s-1"),
        chat("question from s-2", "answer for s-2"),
    ],
    "litellm_stream.yaml": [chat_stream("Stream the capital of Italy", "Rome")],
    "litellm_unauthorized.yaml": [
        chat_error("Who are you?", 401, "Incorrect API key provided: sk-test."),
    ],
    "litellm_embeddings.yaml": [embeddings(["hello", "world"])],
}


def main() -> None:
    CASSETTES.mkdir(parents=True, exist_ok=True)
    for name, interactions in CASSETTE_INTERACTIONS.items():
        cassette = {"interactions": interactions, "version": 1}
        (CASSETTES / name).write_text(yaml.safe_dump(cassette, sort_keys=True, width=100))


if __name__ == "__main__":
    main()
