"""Hand-written Responses / Conversations API exchanges for the provider-session tests (#19).

Each `Recipe` is one cassette in `cassettes/openai/provider_sessions/`, in the public API's wire
format (built from `openai_wire`'s Responses bodies and the wire kit `convotel.demo.wire`).
Regenerate them from the repository root with

    python tests/openai/provider_session_wire.py

Every call here is made sync; the tests replay the same cassettes through the async client too
(the SDK sends the same bodies).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from openai_wire import (
    CREATED,
    RESPONSES_MESSAGE_ITEM,
    Recipe,
    WireResponse,
    _numbered,
    _responses_message_done,
    _responses_stream_opening,
    json_response,
    response_object,
    responses_usage,
    sse_response,
)

CASSETTE_DIR = Path(__file__).resolve().parents[2] / "cassettes" / "openai" / "provider_sessions"
MODEL = "gpt-4o-mini"
CONVERSATION = "conv_68c1a2b3c4d5e6f7"
CREATED_CONVERSATION = "conv_68c2f0e1d2c3b4a5"
#: The five turns of one ``previous_response_id`` chain.
CHAIN = tuple(f"resp_chain{n}0a1b2c3" for n in range(1, 6))
#: Two chains whose turns alternate: A1, B1, A2, B2, A3.
CHAIN_A = tuple(f"resp_alpha{n}0a1b2c3" for n in range(1, 4))
CHAIN_B = tuple(f"resp_bravo{n}0a1b2c3" for n in range(1, 3))
QUESTIONS = (
    "I'm planning a trip to Lisbon.",
    "What should I see first?",
    "And where do I eat?",
    "How do I get around?",
    "Thanks, summarise it.",
)


def reply_item(text: str, number: int) -> dict[str, Any]:
    return {
        **RESPONSES_MESSAGE_ITEM,
        "id": f"msg_68c{number:05d}",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def response_body(
    response_id: str,
    text: str,
    *,
    previous: str | None = None,
    conversation: str | None = None,
    store: bool = True,
    status: str = "completed",
    number: int = 1,
) -> dict[str, Any]:
    """A Responses API response with its chain and conversation fields."""
    output = [reply_item(text, number)] if status == "completed" else []
    usage = responses_usage(20 + number, 8, cached=0, reasoning=0) if output else None
    body = response_object(output, status=status, usage=usage)
    body.update(id=response_id, previous_response_id=previous, store=store, instructions=None)
    body["conversation"] = None if conversation is None else {"id": conversation}
    return body


def stream_events(response_id: str, text: str, **fields: Any) -> list[dict[str, Any]]:
    """The events of a streamed response: created, text deltas, completed."""
    opening = _responses_stream_opening([text])
    for event in opening:
        if "response" in event:
            event["response"] = response_body(response_id, text, status="in_progress", **fields)
    item = reply_item(text, fields.get("number", 1))
    for event in opening:
        if event.get("item_id"):
            event["item_id"] = item["id"]
        if "item" in event:
            event["item"] = {**event["item"], "id": item["id"]}
    done = _responses_message_done(item)
    completed = {
        "type": "response.completed",
        "response": response_body(response_id, text, **fields),
    }
    return _numbered([*opening, *done, completed])


def _answer(n: int) -> str:
    return f"Answer {n}."


def _chain_turn(client: Any, n: int, ids: tuple[str, ...], **extra: Any) -> str:
    previous = {"previous_response_id": ids[n - 1]} if n > 0 else {}
    response = client.responses.create(model=MODEL, input=QUESTIONS[n], **previous, **extra)
    return str(response.id)


def _chain(client: Any) -> object:
    return [_chain_turn(client, n, CHAIN) for n in range(5)]


def _interleaved(client: Any) -> object:
    order = [(CHAIN_A, 0), (CHAIN_B, 0), (CHAIN_A, 1), (CHAIN_B, 1), (CHAIN_A, 2)]
    return [_chain_turn(client, n, ids) for ids, n in order]


def _conversation(client: Any) -> object:
    first = client.responses.create(model=MODEL, input=QUESTIONS[0], conversation=CONVERSATION)
    second = client.responses.create(
        model=MODEL, input=QUESTIONS[1], conversation={"id": CONVERSATION}
    )
    return [first.id, second.id]


def _stream_text(stream: Any) -> str:
    return "".join(event.delta for event in stream if event.type == "response.output_text.delta")


def _chain_stream(client: Any) -> object:
    first = _stream_text(client.responses.create(model=MODEL, input=QUESTIONS[0], stream=True))
    second = _stream_text(
        client.responses.create(
            model=MODEL, input=QUESTIONS[1], previous_response_id=CHAIN[0], stream=True
        )
    )
    return [first, second]


def _conversation_stream(client: Any) -> object:
    stream = client.responses.create(
        model=MODEL, input=QUESTIONS[0], conversation=CONVERSATION, stream=True
    )
    return _stream_text(stream)


def _conversations_api(client: Any) -> object:
    created = client.conversations.create(
        items=[{"type": "message", "role": "user", "content": QUESTIONS[0]}]
    )
    added = client.conversations.items.create(
        created.id, items=[{"type": "message", "role": "user", "content": QUESTIONS[1]}]
    )
    listed = client.conversations.items.list(created.id)
    response = client.responses.create(model=MODEL, input=QUESTIONS[2], conversation=created.id)
    return [created.id, len(added.data), len(listed.data), response.id]


def _user_ids(client: Any) -> object:
    first = client.responses.create(
        model=MODEL, input=QUESTIONS[0], safety_identifier="sid_9f86d081", store=False
    )
    second = client.responses.create(model=MODEL, input=QUESTIONS[1], user="legacy-user-7")
    return [first.id, second.id]


def _item(number: int, text: str) -> dict[str, Any]:
    return {
        "type": "message",
        "id": f"msg_68d{number:05d}",
        "status": "completed",
        "role": "user",
        "content": [{"type": "input_text", "text": text}],
    }


def _item_list(*items: dict[str, Any]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": list(items),
        "first_id": items[0]["id"],
        "last_id": items[-1]["id"],
        "has_more": False,
    }


def _responses(*bodies: dict[str, Any]) -> tuple[WireResponse, ...]:
    return tuple(json_response(body) for body in bodies)


def _chain_bodies(ids: tuple[str, ...], n: int) -> dict[str, Any]:
    return response_body(ids[n], _answer(n), previous=ids[n - 1] if n else None, number=n + 1)


RECIPES: tuple[Recipe, ...] = (
    Recipe(
        "responses_chain_5",
        _responses(*(_chain_bodies(CHAIN, n) for n in range(5))),
        _chain,
        list(CHAIN),
    ),
    Recipe(
        "responses_chains_interleaved",
        _responses(
            _chain_bodies(CHAIN_A, 0),
            _chain_bodies(CHAIN_B, 0),
            _chain_bodies(CHAIN_A, 1),
            _chain_bodies(CHAIN_B, 1),
            _chain_bodies(CHAIN_A, 2),
        ),
        _interleaved,
        [CHAIN_A[0], CHAIN_B[0], CHAIN_A[1], CHAIN_B[1], CHAIN_A[2]],
    ),
    Recipe(
        "responses_conversation",
        _responses(
            response_body("resp_conv10a1b2c3", _answer(0), conversation=CONVERSATION),
            response_body("resp_conv20a1b2c3", _answer(1), conversation=CONVERSATION, number=2),
        ),
        _conversation,
        ["resp_conv10a1b2c3", "resp_conv20a1b2c3"],
    ),
    Recipe(
        "responses_chain_stream",
        (
            sse_response(stream_events(CHAIN[0], _answer(0)), named=True),
            sse_response(stream_events(CHAIN[1], _answer(1), previous=CHAIN[0]), named=True),
        ),
        _chain_stream,
        [_answer(0), _answer(1)],
    ),
    Recipe(
        "responses_conversation_stream",
        (
            sse_response(
                stream_events("resp_convs0a1b2c3", _answer(0), conversation=CONVERSATION),
                named=True,
            ),
        ),
        _conversation_stream,
        _answer(0),
    ),
    Recipe(
        "conversations_items",
        (
            json_response(
                {
                    "id": CREATED_CONVERSATION,
                    "object": "conversation",
                    "created_at": CREATED,
                    "metadata": {},
                }
            ),
            json_response(_item_list(_item(2, QUESTIONS[1]))),
            json_response(_item_list(_item(1, QUESTIONS[0]), _item(2, QUESTIONS[1]))),
            json_response(
                response_body("resp_items0a1b2c3", _answer(2), conversation=CREATED_CONVERSATION)
            ),
        ),
        _conversations_api,
        [CREATED_CONVERSATION, 1, 2, "resp_items0a1b2c3"],
    ),
    Recipe(
        "responses_user_ids",
        _responses(
            response_body("resp_user10a1b2c3", _answer(0), store=False),
            response_body("resp_user20a1b2c3", _answer(1), number=2),
        ),
        _user_ids,
        ["resp_user10a1b2c3", "resp_user20a1b2c3"],
    ),
)


def main() -> None:
    import generate_openai_cassettes

    generate_openai_cassettes.CASSETTE_DIR = CASSETTE_DIR
    CASSETTE_DIR.mkdir(parents=True, exist_ok=True)
    for recipe in RECIPES:
        print(f"wrote {generate_openai_cassettes.record(recipe)}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
