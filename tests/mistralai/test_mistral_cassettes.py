"""The cassettes are valid Mistral wire format: the real SDK parses each one, uninstrumented."""

from __future__ import annotations

import pytest
import vcr.errors  # type: ignore[import-untyped]
from mistral_cassettes import cassette, replay
from mistral_spans import CONVERSATION_ERROR_INPUT, HELLO, WEATHER_QUESTION, WEATHER_TOOL
from mistralai.client import Mistral, errors
from mistralai.client.models import ResponseErrorEvent, UserMessageTypedDict


@pytest.fixture
def client() -> Mistral:
    return Mistral(api_key="test-key")


def test_chat_complete_cassette_parses(client: Mistral) -> None:
    with replay.use_cassette(cassette("chat_complete")):
        response = client.chat.complete(
            model="mistral-small-latest", messages=HELLO, temperature=0.2, max_tokens=64
        )
    assert response.choices[0].message is not None
    assert response.choices[0].message.content == "Bonjour !"
    assert response.choices[0].finish_reason == "stop"
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (9, 4)


def test_chat_tool_call_cassette_parses(client: Mistral) -> None:
    with replay.use_cassette(cassette("chat_complete_tools")):
        response = client.chat.complete(
            model="mistral-small-latest",
            messages=WEATHER_QUESTION,
            tools=[WEATHER_TOOL],
            tool_choice="auto",
        )
    message = response.choices[0].message
    assert message is not None
    assert message.tool_calls
    assert message.tool_calls[0].function.name == "get_weather"
    assert message.tool_calls[0].function.arguments == '{"city": "Paris"}'
    assert response.choices[0].finish_reason == "tool_calls"


def test_chat_stream_cassette_parses_with_usage_in_last_chunk(client: Mistral) -> None:
    with (
        replay.use_cassette(cassette("chat_stream")),
        client.chat.stream(model="mistral-small-latest", messages=HELLO) as stream,
    ):
        events = list(stream)
    text = "".join(str(event.data.choices[0].delta.content or "") for event in events)
    assert text == "Bonjour !"
    assert len(events) == 5
    last = events[-1].data
    assert last.usage is not None
    assert last.usage.total_tokens == 13
    assert last.choices[0].finish_reason == "stop"


async def test_chat_stream_async_cassette_parses(client: Mistral) -> None:
    with replay.use_cassette(cassette("chat_stream")):
        stream = await client.chat.stream_async(model="mistral-small-latest", messages=HELLO)
        async with stream:
            events = [event async for event in stream]
    assert events[-1].data.choices[0].finish_reason == "stop"


def test_embeddings_cassette_parses(client: Mistral) -> None:
    with replay.use_cassette(cassette("embeddings_create")):
        response = client.embeddings.create(model="mistral-embed", inputs=["Bonjour", "Hello"])
    assert [item.index for item in response.data] == [0, 1]
    assert response.data[0].embedding == [-0.0165, 0.0702, 0.0311]


def test_fim_agents_and_conversation_cassettes_parse(client: Mistral) -> None:
    with replay.use_cassette(cassette("fim_complete")):
        fim = client.fim.complete(
            model="codestral-latest", prompt="def add(a, b):\n", suffix="\nprint(add(1, 2))"
        )
    assert fim.choices[0].message is not None
    assert fim.choices[0].message.content == "    return a + b"
    with replay.use_cassette(cassette("agents_complete")):
        agent = client.agents.complete(
            agent_id="ag_0198d2c5e1a47b3c9f2e8d6a4b1c0e9f", messages=HELLO
        )
    assert agent.model == "mistral-medium-2508"
    with replay.use_cassette(cassette("conversations_start_stream")):
        kinds = [
            event.event
            for event in client.beta.conversations.start_stream(
                inputs="Who wrote Les Misérables?", model="mistral-medium-latest"
            )
        ]
    assert kinds[0] == "conversation.response.started"
    assert kinds[-1] == "conversation.response.done"


def test_conversation_stream_error_cassette_parses_to_the_sdk_error_event(client: Mistral) -> None:
    with replay.use_cassette(cassette("conversations_start_stream_error")):
        events = list(
            client.beta.conversations.start_stream(
                inputs=CONVERSATION_ERROR_INPUT, model="mistral-medium-latest"
            )
        )
    assert [event.event for event in events] == [
        "conversation.response.started",
        "message.output.delta",
        "conversation.response.error",
    ]
    error = events[-1].data
    assert isinstance(error, ResponseErrorEvent)
    assert (error.message, error.code) == ("Internal error while generating the response", 3000)


@pytest.mark.parametrize(
    ("name", "status", "error_type"),
    [
        ("error_401_unauthorized", 401, errors.SDKError),
        ("error_400_invalid_model", 400, errors.SDKError),
        ("error_422_validation", 422, errors.HTTPValidationError),
        ("error_500_server", 500, errors.SDKError),
        ("error_503_html", 503, errors.SDKError),
    ],
)
def test_error_cassettes_raise_the_sdk_error(
    client: Mistral, name: str, status: int, error_type: type[errors.MistralError]
) -> None:
    with replay.use_cassette(cassette(name)), pytest.raises(error_type) as caught:
        client.chat.complete(model="mistral-small-latest", messages=HELLO)
    assert caught.value.status_code == status


def test_request_missing_from_cassette_fails_instead_of_reaching_the_network(
    client: Mistral,
) -> None:
    not_recorded: list[UserMessageTypedDict] = [{"role": "user", "content": "Not recorded"}]
    with (
        replay.use_cassette(cassette("chat_complete")),
        pytest.raises(vcr.errors.CannotOverwriteExistingCassetteException),
    ):
        client.chat.complete(model="mistral-small-latest", messages=not_recorded)
