"""The deterministic "model" behind the loopback server: tokens, replies, tool calls, embeddings.

Everything here is a pure function of the request, so the same conversation always gets the same
answer, and different conversations get different ones.

Tokenizer (documented, deliberately simple): a token is a run of word characters (``\\w+``) or one
single non-space, non-word character. ``"Hello, world!"`` is 4 tokens. Chat prompts add
``TOKENS_PER_MESSAGE`` for every message and ``TOKENS_REPLY_PRIMER`` once, like OpenAI's published
counting recipe; tool definitions are counted over their JSON text.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")
_STREAM_PIECE_PATTERN = re.compile(r"\s*(?:\w+|[^\w\s])")
TOKENS_PER_MESSAGE = 3
TOKENS_REPLY_PRIMER = 3

# fmt: off
_STOPWORDS = frozenset([
    "a", "an", "the", "and", "or", "but", "if", "then", "so", "to", "of", "in", "on", "at",
    "for", "with", "about", "from", "by", "as", "is", "are", "was", "were", "be", "been", "am",
    "do", "does", "did", "i", "you", "he", "she", "it", "we", "they", "me", "my", "your", "our",
    "their", "this", "that", "these", "those", "what", "which", "who", "whom", "how", "when",
    "where", "why", "can", "could", "would", "should", "will", "shall", "may", "might", "must",
    "please", "tell", "give", "get", "make", "let", "know", "want", "need", "like", "just",
    "some", "any", "there", "here", "not", "no", "yes", "hi", "hello", "hey", "thanks", "thank",
    "ok", "okay", "also", "more", "most", "very", "really", "much", "many", "one", "two", "up",
    "down", "out", "into", "over", "again", "today", "tomorrow", "now", "than", "too", "its",
    "it's", "i'm", "i'd", "i'll", "don't", "can't", "what's", "bonjour", "hola", "merci",
    "good", "great", "best", "ahead", "before", "after", "first", "second", "last", "next",
    "whole", "quick", "each", "every",
])
_GENERIC_WORDS = frozenset([
    "recipe", "plan", "tips", "ideas", "idea", "help", "question", "advice", "fix", "problem",
    "issue", "way", "thing", "things", "something", "suggest", "suggestion", "recommend",
    "recommendation", "week", "weeks", "month", "months", "day", "days", "time", "year",
    "years",
])
# fmt: on
_DETERMINERS = frozenset({"a", "an", "the", "my", "your", "our", "this", "that", "which"})


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


# ----------------------------------------------------------------------------------------------
# Replies


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


@dataclass(frozen=True)
class ReplyPlan:
    """What the fake model answers: text, or tool calls, plus the usage it reports."""

    text: str
    tool_calls: tuple[ToolCallPlan, ...] = ()
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    pieces: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Topic:
    """What the fake model can talk about: trigger words and answer templates (``{subject}``)."""

    keywords: frozenset[str]
    templates: tuple[str, ...]


def _about(keywords: str, *templates: str) -> Topic:
    """A topic from space-separated ``keywords`` and its answer templates."""
    return Topic(frozenset(keywords.split()), templates)


_TOPICS: dict[str, Topic] = {
    "weather": _about(
        "weather rain sunny forecast temperature umbrella",
        "For {subject}, it helps to check the forecast the evening before: coastal cities "
        "change quickly, so a light jacket and a small umbrella cover most surprises.",
        "Weather in {subject} is usually mild in spring and autumn; summer afternoons can be "
        "hot, so plan outdoor walks for the morning.",
        "If you are worried about rain in {subject}, pick indoor plans for the afternoon and "
        "keep the mornings for the viewpoints.",
    ),
    "travel": _about(
        "trip travel visit itinerary flight hotel museum city days weekend holiday "
        "vacation tour see",
        "A good plan for {subject} is one neighbourhood per half day: start with the old town, "
        "have lunch near the market, then spend the evening by the river.",
        "In {subject} I would book the popular museum for the first morning, keep the second "
        "day for a day trip, and leave the last evening free for a long dinner.",
        "Three days in {subject} is enough for the highlights if you group sights by area and "
        "use public transport between them instead of taxis.",
    ),
    "cooking": _about(
        "recipe cook cooking dinner lunch bake pasta soup vegetarian ingredients oven eat "
        "meal sauce",
        "For {subject}, start with a hot pan, season in layers, and taste before serving; a "
        "squeeze of lemon at the end brightens almost everything.",
        "A simple {subject} for four takes about 30 minutes: prepare the vegetables first, cook"
        " the base slowly, and add fresh herbs only at the end.",
        "If you want {subject} to be quick on a weeknight, make a double batch of the sauce on "
        "Sunday and keep half in the fridge.",
    ),
    "code": _about(
        "python code function bug error exception list dict loop test tests class async "
        "sql query api script regex",
        "The easiest way to reason about {subject} is a small pure function: pass the data in, "
        "return the result, and cover the edge cases with two or three pytest tests.",
        "The usual cause of that {subject} problem is shared mutable state; copy the input "
        "first, or build a new list with a comprehension instead of editing in place.",
        "For {subject}, read the traceback from the bottom up: the last frame that is in your "
        "own code is usually where the fix belongs.",
    ),
    "billing": _about(
        "invoice bill billing charge charged refund payment order subscription account "
        "plan card price",
        "I can see why the {subject} looks wrong. Charges are posted on the first of the month,"
        " so a plan change in the middle shows up as two partial lines.",
        "Refunds for the {subject} go back to the original card and usually appear within five "
        "business days; you will also get a confirmation e-mail.",
        "Your {subject} can be changed at any time from the account page; the new price applies"
        " from the next billing cycle.",
    ),
    "books": _about(
        "book books read reading novel author story poem library fiction chapter",
        "If you liked {subject}, try a shorter novel with the same mood next; reading two "
        "chapters a night is a pace most people can keep.",
        "{subject} works best read slowly: keep a note of the characters in the first few "
        "chapters and the later twists land much better.",
        "For a reading group, {subject} is a good pick because it leaves plenty to argue about "
        "without needing any background.",
    ),
    "fitness": _about(
        "run running gym workout exercise training marathon yoga stretch steps sleep health",
        "For {subject}, consistency beats intensity: three short sessions a week, with one easy"
        " day between them, is a plan you can keep for months.",
        "Build up {subject} by about ten percent a week and take a lighter week every fourth "
        "week so your body can catch up.",
        "A good warm-up for {subject} is five minutes of easy movement followed by a few "
        "dynamic stretches; save the long stretches for afterwards.",
    ),
}
_GREETINGS = frozenset({"hi", "hello", "hey", "bonjour", "hola", "morning"})
_THANKS = frozenset({"thanks", "thank", "merci", "bye", "goodbye", "cheers"})
_OPENERS = (
    "Good question.",
    "Sure.",
    "Happy to help.",
    "Here is what I would do.",
    "Let me think about that.",
    "Absolutely.",
)
_FOLLOW_UP_OPENERS = (
    "Building on what we discussed,",
    "As a next step,",
    "Following up on that,",
    "Good follow-up.",
)
_CLOSERS = (
    "Would you like more detail on any part?",
    "Let me know if you want a shorter version.",
    "I can also turn this into a checklist.",
    "",
    "",
)
_FALLBACK_BODIES = (
    "The short answer about {subject} is that it depends on what you need most: speed, cost or "
    "simplicity. Pick the one that matters and the rest of the choice gets easier.",
    "Here is a practical way to approach {subject}: write down the goal, try the smallest "
    "version first, and adjust once you see how it goes.",
    "Most people find {subject} easier when they split it into two or three steps and tackle "
    "the hardest one first, while they still have energy.",
)


def _words(text: str) -> list[str]:
    return [token.lower() for token in re.findall(r"[A-Za-zÀ-ÿ']+", text)]


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") else word


def proper_nouns(text: str) -> list[str]:
    """Capitalised words that do not start a sentence (a crude place/name detector)."""
    found: list[str] = []
    for sentence in re.split(r"(?<=[.!?])\s+", text):
        words = re.findall(r"[A-Za-zÀ-ÿ']+", sentence)
        for word in words[1:]:
            if word[0].isupper() and word.lower() not in _STOPWORDS and word not in found:
                found.append(word)
    return found


def _noun_phrase(text: str) -> str | None:
    """The first phrase led by a determiner ("the second charge" -> "charge"), if any."""
    words = re.findall(r"[A-Za-zÀ-ÿ'][A-Za-zÀ-ÿ'-]*", text)
    for index, word in enumerate(words):
        if word.lower() not in _DETERMINERS:
            continue
        phrase: list[str] = []
        for following in words[index + 1 : index + 5]:
            lowered = following.lower()
            if lowered in _STOPWORDS and phrase:
                break
            if lowered not in _STOPWORDS:
                phrase.append(lowered)
        while phrase and phrase[-1] in _GENERIC_WORDS:
            phrase.pop()
        if phrase:
            return " ".join(phrase[:2])
    return None


def subject_of(text: str, earlier: Sequence[str] = ()) -> str:
    """The most salient phrase of a question.

    A proper noun of the question, else one from an earlier user message (``earlier``), else the
    first determiner-led noun phrase, else the question's longest specific word.
    """
    for source in (text, *reversed(earlier)):
        nouns = proper_nouns(source)
        if nouns:
            return nouns[0]
    phrase = _noun_phrase(text)
    if phrase:
        return phrase
    content = [word for word in _words(text) if word not in _STOPWORDS and len(word) > 2]
    specific = [word for word in content if word not in _GENERIC_WORDS] or content
    if not specific:
        return "this"
    return max(specific, key=lambda word: (len(word), word))


def _topic(text: str) -> str | None:
    words = {_stem(word) for word in _words(text)}
    best, best_score = None, 0
    for name, topic in _TOPICS.items():
        score = len(words & {_stem(keyword) for keyword in topic.keywords})
        if score > best_score:
            best, best_score = name, score
    return best


def compose_answer(messages: Sequence[Mapping[str, Any]], seed: int) -> str:
    """A plausible assistant answer to the last user message of a conversation."""
    rng = random.Random(seed)
    last_user = next(
        (content_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"),
        "",
    )
    words = set(_words(last_user))
    earlier_turns = sum(1 for m in messages if m.get("role") == "assistant")
    earlier_users = [
        content_text(m.get("content")) for m in messages[:-1] if m.get("role") == "user"
    ]
    subject = subject_of(last_user, earlier_users)
    if words & _THANKS and len(words) <= 8:
        return rng.choice(
            (
                "You're welcome! Have a great day.",
                "Glad I could help. Come back any time.",
                "My pleasure. Good luck with it!",
            )
        )
    if words & _GREETINGS and len(words) <= 4:
        return rng.choice(
            (
                "Hello! What can I help you with today?",
                "Hi there. What would you like to talk about?",
                "Hey! Ask me anything: travel, cooking, code or your account.",
            )
        )
    topic = _topic(last_user)
    bodies = _TOPICS[topic].templates if topic else _FALLBACK_BODIES
    opener = rng.choice(_FOLLOW_UP_OPENERS if earlier_turns else _OPENERS)
    body = rng.choice(bodies).format(subject=subject)
    if opener.endswith(","):
        body = body[0].lower() + body[1:] if not body.startswith(subject) else body
    closer = rng.choice(_CLOSERS)
    return " ".join(part for part in (opener, body, closer) if part)


def summarize_tool_results(messages: Sequence[Mapping[str, Any]], seed: int) -> str:
    """An answer that reports the tool results at the end of the conversation."""
    rng = random.Random(seed)
    results: list[str] = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        results.insert(0, content_text(message.get("content")))
    sentences: list[str] = []
    for raw in results:
        try:
            data = json.loads(raw)
        except ValueError:
            data = raw
        if isinstance(data, dict):
            facts = ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in data.items())
            sentences.append(f"I checked: {facts}.")
        else:
            sentences.append(f"The tool says: {str(data).strip()}.")
    closer = rng.choice(
        (
            "Based on that, plan for a relaxed day and keep a layer with you.",
            "That should help you decide; want me to check anything else?",
            "Let me know if you would like the same for another day.",
        )
    )
    return " ".join([*sentences, closer])


# ----------------------------------------------------------------------------------------------
# Tool calls


def _tool_function(tool: Mapping[str, Any]) -> Mapping[str, Any]:
    function = tool.get("function")
    return function if isinstance(function, Mapping) else tool


def _tool_words(tool: Mapping[str, Any]) -> set[str]:
    function = _tool_function(tool)
    name = str(function.get("name", ""))
    name_words = re.sub(r"([a-z])([A-Z])", r"\1 \2", name).replace("_", " ").replace("-", " ")
    text = f"{name_words} {function.get('description', '')}"
    return {_stem(word) for word in _words(text) if word not in _STOPWORDS}


def choose_tool(
    tools: Sequence[Mapping[str, Any]], tool_choice: object, user_text: str
) -> Mapping[str, Any] | None:
    """The tool the fake model calls for this turn, or None to answer in text."""
    if not tools or tool_choice == "none":
        return None
    if isinstance(tool_choice, Mapping):
        wanted = (tool_choice.get("function") or {}).get("name")
        return next((t for t in tools if _tool_function(t).get("name") == wanted), None)
    words = {_stem(word) for word in _words(user_text) if word not in _STOPWORDS}
    user_topic = _topic(user_text)

    def score(tool: Mapping[str, Any]) -> int:
        tool_words = _tool_words(tool)
        same_topic = user_topic is not None and user_topic == _topic(" ".join(tool_words))
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
