"""The deterministic "model" behind the loopback server: its whole reply to a chat request, and
embeddings.

Everything here is a pure function of the request, so the same conversation always gets the same
answer, and different conversations get different ones. The parts: :mod:`convotel.demo.fake_tokens`
(the tokenizer and the request seed), :mod:`convotel.demo.fake_topics` (the answer text) and
:mod:`convotel.demo.fake_tool_calls` (tool calls); their public names are re-exported here.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from convotel.demo.fake_tokens import (
    TOKEN_PATTERN,
    TOKENS_PER_MESSAGE,
    TOKENS_REPLY_PRIMER,
    content_text,
    count_tokens,
    message_tokens,
    prompt_tokens,
    request_seed,
    stream_pieces,
    tokenize,
)
from convotel.demo.fake_tool_calls import ToolCallPlan, choose_tool, plan_tool_calls
from convotel.demo.fake_topics import (
    compose_answer,
    proper_nouns,
    subject_of,
    summarize_tool_results,
)

__all__ = [
    "TOKENS_PER_MESSAGE",
    "TOKENS_REPLY_PRIMER",
    "TOKEN_PATTERN",
    "ReplyPlan",
    "ToolCallPlan",
    "choose_tool",
    "compose_answer",
    "content_text",
    "count_tokens",
    "embedding_vector",
    "message_tokens",
    "plan_reply",
    "plan_tool_calls",
    "prompt_tokens",
    "proper_nouns",
    "request_seed",
    "stream_pieces",
    "subject_of",
    "summarize_tool_results",
    "tokenize",
]


@dataclass(frozen=True)
class ReplyPlan:
    """What the fake model answers: text, or tool calls, plus the usage it reports."""

    text: str
    tool_calls: tuple[ToolCallPlan, ...] = ()
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    pieces: tuple[str, ...] = field(default=())


# ----------------------------------------------------------------------------------------------
# The whole reply


def plan_reply(request: Mapping[str, Any], *, max_tokens_key: Sequence[str]) -> ReplyPlan:
    """Decide the answer to a chat request and count its tokens.

    ``max_tokens_key`` lists the request fields that cap the completion length, in priority order.
    """
    messages = [m for m in request.get("messages") or () if isinstance(m, Mapping)]
    tools = [t for t in request.get("tools") or () if isinstance(t, Mapping)]
    seed = request_seed(request.get("model"), messages)
    prompt = prompt_tokens(messages, tools)
    last = messages[-1] if messages else {}
    user_text = content_text(last.get("content"))
    if last.get("role") == "user":
        tool = choose_tool(tools, request.get("tool_choice"), user_text)
        if tool is not None:
            calls = plan_tool_calls(
                tool, user_text, seed, parallel=request.get("parallel_tool_calls") is not False
            )
            completion = sum(
                TOKENS_PER_MESSAGE + count_tokens(c.name) + count_tokens(c.arguments_json)
                for c in calls
            )
            return ReplyPlan("", calls, prompt, completion, "tool_calls")
    if last.get("role") == "tool":
        text = summarize_tool_results(messages, seed)
    else:
        text = compose_answer(messages, seed)
    pieces = stream_pieces(text)
    finish_reason = "stop"
    cap = next((request[key] for key in max_tokens_key if isinstance(request.get(key), int)), None)
    if isinstance(cap, int) and 0 < cap < len(pieces):
        pieces = pieces[:cap]
        text = "".join(pieces)
        finish_reason = "length"
    return ReplyPlan(text, (), prompt, count_tokens(text), finish_reason, tuple(pieces))


# ----------------------------------------------------------------------------------------------
# Embeddings


def embedding_vector(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector for ``text`` (same text, same vector)."""
    rng = random.Random(request_seed("embedding", text))
    raw = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(value * value for value in raw)) or 1.0
    return [round(value / norm, 6) for value in raw]
