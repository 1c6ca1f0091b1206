"""OpenAI's own conversations become sessions (#19): ``conversation=``, the Conversations API
and ``previous_response_id`` chains, replayed through the real SDK (sync and async, streamed and
not) from the cassettes of `provider_session_wire.py`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import openai
import pytest
from openai_cassettes import Instrument
from openai_wire import API_KEY
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from provider_session_wire import (
    CASSETTE_DIR,
    CHAIN,
    CHAIN_A,
    CHAIN_B,
    CONVERSATION,
    CREATED_CONVERSATION,
    MODEL,
    QUESTIONS,
    RECIPES,
    Recipe,
)
from vcr import VCR
from vcr.cassette import Cassette

from convotel import TraceConfig, pseudonyms, using_session, using_user
from convotel.openai import OpenAIInstrumentor
from convotel.openai import sessions as openai_sessions
from convotel.openai.sessions import RESPONSE_CHAINS, call_context, conversation_id
from convotel.propagation import SessionSpanProcessor

SOURCE = "convotel.session.source"
_REPLAYER = VCR(
    cassette_library_dir=str(CASSETTE_DIR),
    record_mode="none",
    match_on=("method", "scheme", "host", "port", "path", "query", "body"),
)
RECIPE = {recipe.name: recipe for recipe in RECIPES}


@contextmanager
def replay(name: str) -> Iterator[Cassette]:
    with _REPLAYER.use_cassette(f"{name}.yaml") as cassette:
        yield cassette
    assert cassette.all_played, f"{name}: not every recorded request was made"


@pytest.fixture(autouse=True)
def _fresh_chains() -> Iterator[None]:
    RESPONSE_CHAINS.clear()
    yield
    RESPONSE_CHAINS.clear()


def sessions_of(spans: list[ReadableSpan]) -> list[tuple[Any, Any]]:
    return [(span.attributes.get("session.id"), span.attributes.get(SOURCE)) for span in spans]


def run_async(recipe: Recipe) -> object:
    """Make a recipe's calls through ``AsyncOpenAI`` (each sync call's async twin)."""

    async def main() -> object:
        client = openai.AsyncOpenAI(api_key=API_KEY, max_retries=0)
        return await _ASYNC_CALLS[recipe.name](client)

    return asyncio.run(main())


async def _async_chain(client: openai.AsyncOpenAI) -> object:
    ids = []
    for n in range(5):
        previous = {"previous_response_id": CHAIN[n - 1]} if n else {}
        response = await client.responses.create(model=MODEL, input=QUESTIONS[n], **previous)
        ids.append(response.id)
    return ids


async def _async_chain_stream(client: openai.AsyncOpenAI) -> object:
    texts = []
    for n in range(2):
        previous = {"previous_response_id": CHAIN[n - 1]} if n else {}
        stream = await client.responses.create(
            model=MODEL, input=QUESTIONS[n], stream=True, **previous
        )
        texts.append("".join([e.delta async for e in stream if e.type.endswith("text.delta")]))
    return texts


async def _async_conversation(client: openai.AsyncOpenAI) -> object:
    first = await client.responses.create(
        model=MODEL, input=QUESTIONS[0], conversation=CONVERSATION
    )
    second = await client.responses.create(
        model=MODEL, input=QUESTIONS[1], conversation={"id": CONVERSATION}
    )
    return [first.id, second.id]


async def _async_conversation_stream(client: openai.AsyncOpenAI) -> object:
    stream = await client.responses.create(
        model=MODEL, input=QUESTIONS[0], conversation=CONVERSATION, stream=True
    )
    return "".join([e.delta async for e in stream if e.type.endswith("text.delta")])


async def _async_conversations_api(client: openai.AsyncOpenAI) -> object:
    created = await client.conversations.create(
        items=[{"type": "message", "role": "user", "content": QUESTIONS[0]}]
    )
    added = await client.conversations.items.create(
        created.id, items=[{"type": "message", "role": "user", "content": QUESTIONS[1]}]
    )
    listed = await client.conversations.items.list(created.id)
    response = await client.responses.create(
        model=MODEL, input=QUESTIONS[2], conversation=created.id
    )
    return [created.id, len(added.data), len([item async for item in listed]), response.id]


_ASYNC_CALLS: dict[str, Callable[[openai.AsyncOpenAI], Any]] = {
    "responses_chain_5": _async_chain,
    "responses_chain_stream": _async_chain_stream,
    "responses_conversation": _async_conversation,
    "responses_conversation_stream": _async_conversation_stream,
    "conversations_items": _async_conversations_api,
}


def run(name: str, mode: str) -> object:
    """Replay cassette ``name`` through the sync or async client."""
    recipe = RECIPE[name]
    with replay(name):
        if mode == "async":
            return run_async(recipe)
        return recipe.call(openai.OpenAI(api_key=API_KEY, max_retries=0))


MODES = ("sync", "async")


# --- previous_response_id chains --------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_five_turn_previous_response_chain_is_one_session(
    instrumented: OpenAIInstrumentor, finished: Callable[[], list[ReadableSpan]], mode: str
) -> None:
    assert run("responses_chain_5", mode) == list(CHAIN)
    spans = finished()
    assert [span.name for span in spans] == ["Response"] * 5
    assert (
        sessions_of(spans)
        == [(CHAIN[0], "openai.response")] + [(CHAIN[0], "openai.previous_response")] * 4
    )


@pytest.mark.parametrize("mode", MODES)
def test_streamed_chain_is_one_session(
    instrumented: OpenAIInstrumentor, finished: Callable[[], list[ReadableSpan]], mode: str
) -> None:
    assert run("responses_chain_stream", mode) == ["Answer 0.", "Answer 1."]
    assert sessions_of(finished()) == [
        (CHAIN[0], "openai.response"),
        (CHAIN[0], "openai.previous_response"),
    ]


def test_two_interleaved_chains_stay_apart(
    instrumented: OpenAIInstrumentor, finished: Callable[[], list[ReadableSpan]]
) -> None:
    run("responses_chains_interleaved", "sync")
    assert [session for session, _ in sessions_of(finished())] == [
        CHAIN_A[0],
        CHAIN_B[0],
        CHAIN_A[0],
        CHAIN_B[0],
        CHAIN_A[0],
    ]


def test_chain_whose_start_was_never_seen_starts_at_the_response_it_continues(
    instrumented: OpenAIInstrumentor, finished: Callable[[], list[ReadableSpan]]
) -> None:
    """Another process (or before a restart) answered the first two turns."""
    client = openai.OpenAI(api_key=API_KEY, max_retries=0)
    with replay("responses_chain_5"):
        for n in range(2):
            previous = {"previous_response_id": CHAIN[n - 1]} if n else {}
            client.responses.create(model=MODEL, input=QUESTIONS[n], **previous)
        RESPONSE_CHAINS.clear()  # this process never saw them
        for n in range(2, 5):
            client.responses.create(
                model=MODEL, input=QUESTIONS[n], previous_response_id=CHAIN[n - 1]
            )
    assert [session for session, _ in sessions_of(finished())] == [CHAIN[0]] * 2 + [CHAIN[1]] * 3


def test_forgotten_chain_entries_keep_the_map_bounded(
    instrumented: OpenAIInstrumentor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(RESPONSE_CHAINS, "limit", 3)
    client = openai.OpenAI(api_key=API_KEY, max_retries=0)
    with replay("responses_chain_5"):
        RECIPE["responses_chain_5"].call(client)
    assert len(RESPONSE_CHAINS) == 3
    assert RESPONSE_CHAINS.session_of(CHAIN[4]) == CHAIN[0]
    assert RESPONSE_CHAINS.session_of(CHAIN[0]) is None  # the oldest went first


# --- explicit sessions win -------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_explicit_session_overrides_provider_ids(
    instrumented: OpenAIInstrumentor, finished: Callable[[], list[ReadableSpan]], mode: str
) -> None:
    with using_session("app-session-7"):
        run("responses_conversation", mode)
        run("responses_chain_5", mode)
    assert sessions_of(finished()) == [("app-session-7", "context")] * 7


def test_chain_started_in_an_explicit_session_continues_in_it(
    instrumented: OpenAIInstrumentor, finished: Callable[[], list[ReadableSpan]]
) -> None:
    client = openai.OpenAI(api_key=API_KEY, max_retries=0)
    with replay("responses_chain_5"):
        with using_session("app-session-8"):
            client.responses.create(model=MODEL, input=QUESTIONS[0])
        for n in range(1, 5):
            client.responses.create(
                model=MODEL, input=QUESTIONS[n], previous_response_id=CHAIN[n - 1]
            )
    assert (
        sessions_of(finished())
        == [("app-session-8", "context")] + [("app-session-8", "openai.previous_response")] * 4
    )


# --- conversations -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_conversation_parameter_string_or_object_is_the_session(
    instrumented: OpenAIInstrumentor, finished: Callable[[], list[ReadableSpan]], mode: str
) -> None:
    run("responses_conversation", mode)
    assert sessions_of(finished()) == [(CONVERSATION, "openai.conversation")] * 2


@pytest.mark.parametrize("mode", MODES)
def test_streamed_conversation_is_the_session(
    instrumented: OpenAIInstrumentor, finished: Callable[[], list[ReadableSpan]], mode: str
) -> None:
    assert run("responses_conversation_stream", mode) == "Answer 0."
    assert sessions_of(finished()) == [(CONVERSATION, "openai.conversation")]


@pytest.mark.parametrize("mode", MODES)
def test_conversations_api_calls_are_in_the_conversation_session(
    instrumented: OpenAIInstrumentor, finished: Callable[[], list[ReadableSpan]], mode: str
) -> None:
    run("conversations_items", mode)
    spans = finished()
    assert [span.name for span in spans] == [
        "Conversations.create",
        "ConversationItems.create",
        "ConversationItems.list",
        "Response",
    ]
    assert sessions_of(spans) == [(CREATED_CONVERSATION, "openai.conversation")] * 4
    assert [span.attributes["openinference.span.kind"] for span in spans[:3]] == ["CHAIN"] * 3
    assert QUESTIONS[1] in str(spans[1].attributes["input.value"])


# --- switches, user ids, GenAI ----------------------------------------------------------------


@pytest.mark.parametrize("how", ["config", "environment"])
def test_provider_sessions_can_be_switched_off(
    instrument: Instrument,
    finished: Callable[[], list[ReadableSpan]],
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    if how == "config":
        instrument(TraceConfig(provider_sessions=False))
    else:
        monkeypatch.setenv("CONVOTEL_PROVIDER_SESSIONS", "false")
        instrument(TraceConfig())
    run("responses_chain_5", "sync")
    run("responses_conversation", "sync")
    assert sessions_of(finished()) == [(None, None)] * 7
    assert len(RESPONSE_CHAINS) == 0


def test_provider_user_ids_are_opt_in(
    instrument: Instrument, finished: Callable[[], list[ReadableSpan]]
) -> None:
    instrument()
    run("responses_user_ids", "sync")
    assert [span.attributes.get("user.id") for span in finished()] == [None, None]


def test_safety_identifier_then_user_become_user_id_when_opted_in(
    instrument: Instrument, finished: Callable[[], list[ReadableSpan]]
) -> None:
    instrument(TraceConfig(provider_user_ids=True))
    run("responses_user_ids", "sync")
    with using_user("app-user-1"):
        run("responses_user_ids", "sync")
    users = [span.attributes.get("user.id") for span in finished()]
    assert users == ["sid_9f86d081", "legacy-user-7", "app-user-1", "app-user-1"]


def test_provider_user_ids_are_pseudonymised_with_a_user_id_key(
    instrument: Instrument, finished: Callable[[], list[ReadableSpan]]
) -> None:
    instrument(TraceConfig(provider_user_ids=True, user_id_key="provider-key"))
    try:
        run("responses_user_ids", "sync")
    finally:
        pseudonyms._configured.clear()
    users = [span.attributes.get("user.id") for span in finished()]
    assert users == [
        pseudonyms.pseudonymous_user_id("sid_9f86d081", key="provider-key"),
        pseudonyms.pseudonymous_user_id("legacy-user-7", key="provider-key"),
    ]


def test_response_not_stored_starts_no_session(
    instrumented: OpenAIInstrumentor, finished: Callable[[], list[ReadableSpan]]
) -> None:
    run("responses_user_ids", "sync")  # the first response is store=False
    assert sessions_of(finished()) == [
        (None, None),
        ("resp_user20a1b2c3", "openai.response"),
    ]


def test_genai_conversation_id_follows_the_provider_session(
    instrument: Instrument, finished: Callable[[], list[ReadableSpan]]
) -> None:
    instrument(TraceConfig(enable_genai_semconv=True))
    run("responses_chain_5", "sync")
    run("responses_conversation", "sync")
    spans = finished()
    assert [span.attributes.get("gen_ai.conversation.id") for span in spans] == [CHAIN[0]] * 5 + [
        CONVERSATION
    ] * 2


# --- the whole trace joins the session ---------------------------------------------------------


@pytest.fixture
def session_instrumented(
    session_tracer_provider: TracerProvider,
) -> Iterator[OpenAIInstrumentor]:
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=session_tracer_provider, config=TraceConfig())
    yield instrumentor
    instrumentor.uninstrument()


def test_web_request_root_span_joins_the_provider_session(
    session_instrumented: OpenAIInstrumentor,
    session_tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
) -> None:
    """Each turn is one web request; its HTTP root span gets the chain's session: from the
    response for the first turn, from the request for the others."""
    web = session_tracer_provider.get_tracer("web-framework")
    client = openai.OpenAI(api_key=API_KEY, max_retries=0)
    with replay("responses_chain_5"):
        for n in range(5):
            with web.start_as_current_span("POST /chat"), web.start_as_current_span("handler"):
                previous = {"previous_response_id": CHAIN[n - 1]} if n else {}
                client.responses.create(model=MODEL, input=QUESTIONS[n], **previous)
    roots = [s for s in span_exporter.get_finished_spans() if s.name == "POST /chat"]
    handlers = [s for s in span_exporter.get_finished_spans() if s.name == "handler"]
    assert (
        sessions_of(roots)
        == [(CHAIN[0], "openai.response")] + [(CHAIN[0], "openai.previous_response")] * 4
    )
    assert [s.attributes.get("session.id") for s in handlers] == [CHAIN[0]] * 5


def test_session_processor_records_the_source_it_stamps(
    session_instrumented: OpenAIInstrumentor, span_exporter: InMemorySpanExporter
) -> None:
    assert SessionSpanProcessor  # the processor of session_tracer_provider
    with using_session("app-9"):
        run("responses_conversation", "sync")
    assert sessions_of(list(span_exporter.get_finished_spans())) == [("app-9", "context")] * 2


# --- bad input never reaches the caller ---------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("conv_1", "conv_1"),
        ({"id": "conv_2"}, "conv_2"),
        ({"id": ""}, None),
        ("   ", None),
        (42, None),
        (object(), None),
        ({"name": "x"}, None),
        ("c" * 300, "c" * 256),
    ],
)
def test_conversation_id_reads_only_usable_ids(value: object, expected: str | None) -> None:
    assert conversation_id(value) == expected


def test_a_failing_session_reader_loses_only_the_session(
    instrumented: OpenAIInstrumentor,
    finished: Callable[[], list[ReadableSpan]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("bug in the session reader")

    monkeypatch.setattr(openai_sessions, "call_context", broken)
    assert run("responses_conversation", "sync") == ["resp_conv10a1b2c3", "resp_conv20a1b2c3"]
    spans = finished()
    assert [span.name for span in spans] == ["Response"] * 2
    assert sessions_of(spans) == [(None, None)] * 2


def test_no_context_is_built_without_conversation_fields() -> None:
    assert (
        call_context(openai_sessions.responses_request_session, (), {"input": "hi"}, TraceConfig())
        is None
    )
    with using_session("s"):
        assert (
            call_context(
                openai_sessions.responses_request_session, (), {"conversation": "c"}, TraceConfig()
            )
            is None
        )
