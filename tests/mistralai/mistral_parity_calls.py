"""The calls of the OpenInference parity cassettes (issue #18), shared by the generator and the
parity test so the replayed requests are the recorded ones."""

from __future__ import annotations

from typing import Any

from mistral_spans import CHAT_MODEL, HELLO, WEATHER_QUESTION, WEATHER_TOOL
from mistralai.client import Mistral

from convotel.demo import wire

#: The model's tool call in a tool loop, as the API returned it and the application sends it back.
WEATHER_CALL = wire.ToolCall("D681PevKs", "get_weather", '{"city": "Paris"}')
#: A tool loop's second call: the question, the model's tool call, the tool's named result.
TOOL_HISTORY: list[Any] = [
    *WEATHER_QUESTION,
    wire.mistral_assistant_message("", [WEATHER_CALL]),
    {"role": "tool", "name": "get_weather", "tool_call_id": "D681PevKs", "content": "18°C, cloudy"},
]
IMAGE_URL = "https://images.example.test/eiffel-tower.jpg"
#: A text part and an image given as a plain URL string (Mistral's short form).
IMAGE_MESSAGES: list[Any] = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "Which monument is this?"},
            {"type": "image_url", "image_url": IMAGE_URL},
        ],
    }
]
#: The answers of the ``n=2`` call, in choice order.
TWO_ANSWERS = ("Bonjour !", "Salut !")


def chat_tool_history(client: Mistral) -> None:
    client.chat.complete(model=CHAT_MODEL, messages=TOOL_HISTORY, tools=[WEATHER_TOOL])


def chat_image_url(client: Mistral) -> None:
    client.chat.complete(model=CHAT_MODEL, messages=IMAGE_MESSAGES)


def chat_empty_reply(client: Mistral) -> None:
    client.chat.complete(model=CHAT_MODEL, messages=HELLO, max_tokens=1)


def chat_two_choices(client: Mistral) -> None:
    client.chat.complete(model=CHAT_MODEL, messages=HELLO, n=2)
