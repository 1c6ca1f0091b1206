"""What the fake model says in text: the topic and subject of a question, an answer built from
templates, and a summary of tool results. A pure function of the conversation and a seed."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from convotel.demo.fake_tokens import content_text

__all__ = [
    "STOPWORDS",
    "Topic",
    "compose_answer",
    "proper_nouns",
    "stem",
    "subject_of",
    "summarize_tool_results",
    "topic_of",
    "words_of",
]

# fmt: off
STOPWORDS = frozenset([
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


def words_of(text: str) -> list[str]:
    """The lower-cased words of ``text`` (letters and apostrophes)."""
    return [token.lower() for token in re.findall(r"[A-Za-zÀ-ÿ']+", text)]


def stem(word: str) -> str:
    """``word`` without a plural ``s`` (so "charges" matches "charge")."""
    return word[:-1] if len(word) > 3 and word.endswith("s") else word


def proper_nouns(text: str) -> list[str]:
    """Capitalised words that do not start a sentence (a crude place/name detector)."""
    found: list[str] = []
    for sentence in re.split(r"(?<=[.!?])\s+", text):
        words = re.findall(r"[A-Za-zÀ-ÿ']+", sentence)
        for word in words[1:]:
            if word[0].isupper() and word.lower() not in STOPWORDS and word not in found:
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
            if lowered in STOPWORDS and phrase:
                break
            if lowered not in STOPWORDS:
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
    content = [word for word in words_of(text) if word not in STOPWORDS and len(word) > 2]
    specific = [word for word in content if word not in _GENERIC_WORDS] or content
    if not specific:
        return "this"
    return max(specific, key=lambda word: (len(word), word))


def topic_of(text: str) -> str | None:
    """The name of the topic whose keywords ``text`` mentions most, or None."""
    words = {stem(word) for word in words_of(text)}
    best, best_score = None, 0
    for name, topic in _TOPICS.items():
        score = len(words & {stem(keyword) for keyword in topic.keywords})
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
    words = set(words_of(last_user))
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
    topic = topic_of(last_user)
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
