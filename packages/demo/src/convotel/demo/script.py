"""Who talks to the demo chatbot, about what, and through which SDK.

The cast is data, so tests and the end-to-end check can reason about it: four users, seven
conversations (one session each) over OpenAI, Mistral and LlamaIndex, with streamed turns, tool
calls and one conversation whose API calls fail before they succeed; and the feedback three of the
users give afterwards (:data:`FEEDBACK`).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any, Literal

Provider = Literal["openai", "mistral", "llama_index"]
#: What goes wrong in a turn: the API rate-limits the first attempt (the SDK retries on its own),
#: or fails more often than the SDK retries (the bot sees the error and retries the turn).
Fault = Literal["rate_limited", "server_error"]

OPENAI_MODEL = "gpt-4o-mini"
MISTRAL_MODEL = "mistral-small-latest"
SYSTEM_PROMPT = (
    "You are Convo, a friendly assistant for travel, cooking, code and account questions. "
    "Answer in two or three sentences."
)


@dataclass(frozen=True)
class ScriptedTurn:
    """One thing the user says, and how the bot should send it."""

    text: str
    stream: bool = False
    tools: bool = False
    fault: Fault | None = None


@dataclass(frozen=True)
class Conversation:
    """One session: a user, a topic, a provider and the turns in order."""

    slug: str
    user_id: str
    provider: Provider
    turns: tuple[ScriptedTurn, ...]

    def session_id(self, run_id: str) -> str:
        """The session id of this conversation in one run of the demo."""
        return f"{self.slug}-{run_id}"


CONVERSATIONS: tuple[Conversation, ...] = (
    # First, so that importing LlamaIndex (slow) overlaps the other conversations.
    Conversation(
        "book-club",
        "dmitri",
        "llama_index",
        (
            ScriptedTurn("Our book club wants a novel for next month. Any ideas?"),
            ScriptedTurn("How many chapters should we read each week?", stream=True),
            ScriptedTurn("Thanks, see you next time!"),
        ),
    ),
    Conversation(
        "lisbon-trip",
        "alice",
        "openai",
        (
            ScriptedTurn("Hi! I'm planning three days in Lisbon next month.", stream=True),
            ScriptedTurn("What's the weather like in Lisbon right now?", tools=True),
            ScriptedTurn("Which museum should I book for the first morning?", stream=True),
            ScriptedTurn("Thanks, that helps a lot!"),
        ),
    ),
    Conversation(
        "weeknight-dinner",
        "alice",
        "openai",
        (
            ScriptedTurn("Give me a quick vegetarian dinner recipe with pasta."),
            ScriptedTurn("Can I make the sauce ahead for the whole week?", stream=True),
        ),
    ),
    Conversation(
        "python-bug",
        "bob",
        "openai",
        (
            ScriptedTurn("My Python loop skips items when I remove them from a list.", stream=True),
            ScriptedTurn("How would I test that fix with pytest?", stream=True),
            ScriptedTurn("Thanks!"),
        ),
    ),
    Conversation(
        "double-charge",
        "bob",
        "openai",
        (
            ScriptedTurn("I was charged twice on my invoice this month.", fault="rate_limited"),
            ScriptedTurn("Can you refund the second charge to my card?", fault="server_error"),
            ScriptedTurn("Great, thank you."),
        ),
    ),
    Conversation(
        "porto-weekend",
        "chloe",
        "openai",
        (
            ScriptedTurn(
                "Compare the weather in Porto and Madrid for a weekend trip.",
                stream=True,
                tools=True,
            ),
            ScriptedTurn("Which city would you pick for walking tours?"),
        ),
    ),
    Conversation(
        "marathon-plan",
        "chloe",
        "mistral",
        (
            ScriptedTurn("Bonjour! I want to start training for a marathon."),
            ScriptedTurn("How many runs a week should I do in the first month?", stream=True),
            ScriptedTurn("And what is a good warm-up before running?", stream=True),
        ),
    ),
)


@dataclass(frozen=True)
class ScriptedFeedback:
    """What a conversation's user thinks of it (of its turn ``turn``, 1-based, if given), given
    with :func:`convotel.record_feedback` once the conversations are over."""

    slug: str
    name: str
    label: str
    score: float
    explanation: str | None = None
    turn: int | None = None


FEEDBACK: tuple[ScriptedFeedback, ...] = (
    ScriptedFeedback(
        "double-charge", "thumbs", "down", 0, "Two errors before it would look at my refund."
    ),
    ScriptedFeedback("lisbon-trip", "thumbs", "up", 1, "The museum tip was spot on."),
    ScriptedFeedback(
        "porto-weekend", "thumbs", "down", 0, "I asked which city, it never picked one.", turn=2
    ),
)


# ---------------------------------------------------------------------------------- the tool

WEATHER_TOOL_NAME = "get_weather"
WEATHER_TOOL_DESCRIPTION = "Current weather for a city: temperature and conditions."
WEATHER_TOOL_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "City name, e.g. Lisbon"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
_CONDITIONS = ("sunny", "partly cloudy", "light rain", "windy", "clear skies", "overcast")


def get_weather(city: str, unit: str = "celsius") -> dict[str, Any]:
    """The demo's tool: made-up but stable weather for ``city``."""
    rng = random.Random(city.strip().lower())
    celsius = rng.randint(8, 29)
    temperature = celsius if unit == "celsius" else round(celsius * 9 / 5 + 32)
    return {
        "city": city,
        "temperature": temperature,
        "unit": unit,
        "conditions": rng.choice(_CONDITIONS),
        "humidity_percent": rng.randint(35, 90),
    }


def run_tool(name: str, arguments_json: str) -> str:
    """Run a tool call the model asked for; returns the JSON result (an error object if bad)."""
    if name != WEATHER_TOOL_NAME:
        return json.dumps({"error": f"unknown tool {name!r}"})
    try:
        arguments = json.loads(arguments_json or "{}")
        city = str(arguments["city"])
    except (ValueError, KeyError, TypeError) as error:
        return json.dumps({"error": f"bad arguments: {error}"})
    return json.dumps(get_weather(city, str(arguments.get("unit", "celsius"))))
