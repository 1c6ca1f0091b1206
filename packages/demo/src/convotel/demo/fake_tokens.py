"""The demo tokenizer: how the fake model counts and streams tokens, and the seed that makes
every answer a pure function of its request.

Tokenizer (documented, deliberately simple): a token is a run of word characters (``\\w+``) or one
single non-space, non-word character. ``"Hello, world!"`` is 4 tokens. Chat prompts add
``TOKENS_PER_MESSAGE`` for every message and ``TOKENS_REPLY_PRIMER`` once, like OpenAI's published
counting recipe; tool definitions are counted over their JSON text.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "TOKENS_PER_MESSAGE",
    "TOKENS_REPLY_PRIMER",
    "TOKEN_PATTERN",
    "content_text",
    "count_tokens",
    "message_tokens",
    "prompt_tokens",
    "request_seed",
    "stream_pieces",
    "tokenize",
]
TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")
_STREAM_PIECE_PATTERN = re.compile(r"\s*(?:\w+|[^\w\s])")
TOKENS_PER_MESSAGE = 3
TOKENS_REPLY_PRIMER = 3


def tokenize(text: str) -> list[str]:
    """Split text into the demo tokenizer's tokens."""
    return TOKEN_PATTERN.findall(text)


def count_tokens(text: str) -> int:
    """Number of tokens in ``text`` under the demo tokenizer."""
    return len(TOKEN_PATTERN.findall(text))


def stream_pieces(text: str) -> list[str]:
    """Split text into streaming deltas, one token each (with its leading whitespace).

    Joining the pieces gives back ``text`` exactly.
    """
    pieces = _STREAM_PIECE_PATTERN.findall(text)
    consumed = sum(len(piece) for piece in pieces)
    if consumed < len(text):
        if pieces:
            pieces[-1] += text[consumed:]
        else:
            pieces = [text]
    return pieces


def content_text(content: object) -> str:
    """Text of a message ``content``: a string, or a list of parts (``{"type": "text", ...}``)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        ]
        return " ".join(texts)
    return ""


def message_tokens(message: Mapping[str, Any]) -> int:
    """Prompt tokens of one chat message: content, tool calls and the per-message overhead."""
    total = TOKENS_PER_MESSAGE + count_tokens(content_text(message.get("content")))
    name = message.get("name")
    if isinstance(name, str):
        total += count_tokens(name)
    for call in message.get("tool_calls") or ():
        if isinstance(call, dict):
            function = call.get("function") or {}
            total += count_tokens(str(function.get("name", "")))
            arguments = function.get("arguments", "")
            total += count_tokens(
                arguments if isinstance(arguments, str) else json.dumps(arguments)
            )
    return total


def prompt_tokens(messages: Sequence[Mapping[str, Any]], tools: Sequence[Any] | None) -> int:
    """Prompt tokens of a chat request: every message, the reply primer and the tool definitions."""
    total = TOKENS_REPLY_PRIMER + sum(message_tokens(message) for message in messages)
    if tools:
        total += count_tokens(json.dumps(list(tools), sort_keys=True))
    return total


def request_seed(*parts: object) -> int:
    """A stable integer seed from JSON-serialisable request parts."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).digest()
    return int.from_bytes(digest[:8], "big")
