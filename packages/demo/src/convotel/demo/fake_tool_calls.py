"""Which tool the fake model calls and with what arguments (one call per place mentioned when
parallel calls are allowed)."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from convotel.demo.fake_topics import STOPWORDS, proper_nouns, stem, subject_of, topic_of, words_of

__all__ = ["ToolCallPlan", "choose_tool", "plan_tool_calls"]


@dataclass(frozen=True)
class ToolCallPlan:
    """One tool call the fake model decides to make."""

    call_id: str
    name: str
    arguments: dict[str, Any]

    @property
    def arguments_json(self) -> str:
        """The arguments as the JSON string both wire formats carry."""
        return json.dumps(self.arguments)


def _tool_function(tool: Mapping[str, Any]) -> Mapping[str, Any]:
    function = tool.get("function")
    return function if isinstance(function, Mapping) else tool


def _tool_words(tool: Mapping[str, Any]) -> set[str]:
    function = _tool_function(tool)
    name = str(function.get("name", ""))
    name_words = re.sub(r"([a-z])([A-Z])", r"\1 \2", name).replace("_", " ").replace("-", " ")
    text = f"{name_words} {function.get('description', '')}"
    return {stem(word) for word in words_of(text) if word not in STOPWORDS}


def choose_tool(
    tools: Sequence[Mapping[str, Any]], tool_choice: object, user_text: str
) -> Mapping[str, Any] | None:
    """The tool the fake model calls for this turn, or None to answer in text."""
    if not tools or tool_choice == "none":
        return None
    if isinstance(tool_choice, Mapping):
        wanted = (tool_choice.get("function") or {}).get("name")
        return next((t for t in tools if _tool_function(t).get("name") == wanted), None)
    words = {stem(word) for word in words_of(user_text) if word not in STOPWORDS}
    user_topic = topic_of(user_text)

    def score(tool: Mapping[str, Any]) -> int:
        tool_words = _tool_words(tool)
        same_topic = user_topic is not None and user_topic == topic_of(" ".join(tool_words))
        return len(words & tool_words) + int(same_topic)

    scored = sorted(
        ((score(tool), index) for index, tool in enumerate(tools)),
        key=lambda pair: (-pair[0], pair[1]),
    )
    best_score, best_index = scored[0]
    if best_score > 0 or tool_choice in ("required", "any"):
        return tools[best_index]
    return None


_PLACE_PARAMETER = re.compile(r"city|location|place|destination|town|country|where", re.I)


def _argument_value(name: str, schema: Mapping[str, Any], user_text: str, place: str) -> object:
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        lowered = user_text.lower()
        return next((value for value in enum if str(value).lower() in lowered), enum[0])
    kind = schema.get("type")
    if kind in ("integer", "number"):
        match = re.search(r"\d+(?:\.\d+)?", user_text)
        number = float(match.group()) if match else 1.0
        return int(number) if kind == "integer" else number
    if kind == "boolean":
        return False
    if kind == "array":
        return [place]
    if _PLACE_PARAMETER.search(name):
        return place
    if "date" in name.lower() or "day" in name.lower():
        return "today"
    return subject_of(user_text) if name.lower() != "query" else user_text.strip()


def plan_tool_calls(
    tool: Mapping[str, Any], user_text: str, seed: int, parallel: bool
) -> tuple[ToolCallPlan, ...]:
    """Tool calls for ``tool``: one per place mentioned (when parallel calls are allowed)."""
    function = _tool_function(tool)
    parameters = function.get("parameters") or {}
    properties: Mapping[str, Any] = parameters.get("properties") or {}
    required = parameters.get("required") or list(properties)
    places = proper_nouns(user_text) or [subject_of(user_text)]
    takes_place = any(_PLACE_PARAMETER.search(name) for name in required)
    targets = places[:3] if (parallel and takes_place) else places[:1]
    rng = random.Random(seed)
    calls = []
    for place in targets:
        arguments = {
            name: _argument_value(name, properties.get(name) or {}, user_text, place)
            for name in required
            if name in properties
        }
        suffix = "".join(
            rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
            for _ in range(24)
        )
        calls.append(ToolCallPlan(f"call_{suffix}", str(function.get("name", "tool")), arguments))
    return tuple(calls)
