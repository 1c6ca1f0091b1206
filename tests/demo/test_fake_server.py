"""The loopback server against the real OpenAI and Mistral SDKs (no instrumentation involved)."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from mistralai.client import Mistral, errors
from mistralai.client.models import ToolTypedDict, UserMessageTypedDict
from mistralai.client.utils import BackoffStrategy, RetryConfig
from openai.types.chat import (
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageParam,
    ChatCompletionUserMessageParam,
)

from convotel.demo.fake_replies import count_tokens, stream_pieces, tokenize
from convotel.demo.fake_server import FAULT_HEADER, FakeLLMServer, FaultSpec

WEATHER_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
}
WEATHER_TOOL: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": WEATHER_PARAMETERS,
    },
}
MISTRAL_WEATHER_TOOL: ToolTypedDict = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": WEATHER_PARAMETERS,
    },
}


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as running:
        yield running


@pytest.fixture
def client(server: FakeLLMServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.openai_base_url, api_key="test-key") as sdk:
        yield sdk


@pytest.fixture
def mistral(server: FakeLLMServer) -> Iterator[Mistral]:
    retry = RetryConfig("backoff", BackoffStrategy(10, 50, 1.5, 2000), False)
    with Mistral(
        api_key="test-key", server_url=server.mistral_server_url, retry_config=retry
    ) as sdk:
        yield sdk


def http(method: str, url: str, body: bytes | None = None, **headers: str) -> tuple[int, Any]:
    """A raw request (stdlib only), for what the SDKs refuse to send; returns status and JSON."""
    request = urllib.request.Request(url, body, {"content-type": "application/json", **headers})
    request.method = method
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def user(text: str) -> ChatCompletionUserMessageParam:
    return {"role": "user", "content": text}


def mistral_user(text: str) -> UserMessageTypedDict:
    return {"role": "user", "content": text}


# -- tokenizer ---------------------------------------------------------------------------------


def test_tokenizer_splits_words_and_single_punctuation() -> None:
    assert tokenize("Hello, world! It's 3.5°C") == [
        "Hello",
        ",",
        "world",
        "!",
        "It",
        "'",
        "s",
        "3",
        ".",
        "5",
        "°",
        "C",
    ]


def test_stream_pieces_rejoin_to_the_text_one_token_each() -> None:
    text = "  Sure. Ask me about Lisbon's weather!\n"
    pieces = stream_pieces(text)
    assert "".join(pieces) == text
    assert len(pieces) == count_tokens(text)


# -- OpenAI ------------------------------------------------------------------------------------


def test_openai_chat_reports_token_counts_of_the_documented_tokenizer(
    client: openai.OpenAI,
) -> None:
    response = client.chat.completions.create(model="gpt-4o-mini", messages=[user("Hello, world!")])
    answer = response.choices[0].message.content
    assert answer
    assert response.usage is not None
    # 3 per message + 4 content tokens + 3 reply primer
    assert response.usage.prompt_tokens == 10
    assert response.usage.completion_tokens == count_tokens(answer)
    assert response.usage.total_tokens == 10 + count_tokens(answer)
    assert response.model == "gpt-4o-mini-2024-07-18"
    assert response.choices[0].finish_reason == "stop"
    assert response.id.startswith("chatcmpl-")


def test_openai_answers_are_deterministic_per_conversation_and_vary_between_them(
    client: openai.OpenAI,
) -> None:
    questions = [
        "Plan three days in Lisbon for me",
        "What should I cook for a vegetarian dinner?",
        "Why does my Python loop skip items in a list?",
        "I was charged twice on my invoice",
    ]
    first = [
        client.chat.completions.create(model="gpt-4o-mini", messages=[user(q)])
        .choices[0]
        .message.content
        for q in questions
    ]
    again = client.chat.completions.create(model="gpt-4o-mini", messages=[user(questions[0])])
    assert again.choices[0].message.content == first[0]
    assert len(set(first)) == len(questions)
    assert "Lisbon" in (first[0] or "")


def test_openai_stream_with_include_usage_ends_with_a_usage_only_chunk(
    client: openai.OpenAI,
) -> None:
    messages = [user("Any tips for training for a marathon?")]
    plain = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    *body, last = chunks
    assert last.choices == []
    assert last.usage is not None
    assert plain.usage is not None
    assert last.usage.prompt_tokens == plain.usage.prompt_tokens
    assert last.usage.completion_tokens == plain.usage.completion_tokens
    assert all(c.usage is None for c in body)


def test_openai_stream_without_include_usage_sends_no_usage(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[user("Recommend a book")], stream=True
        )
    )
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)


def test_openai_tool_call_round_trip(client: openai.OpenAI) -> None:
    messages: list[ChatCompletionMessageParam] = [user("What's the weather in Lisbon today?")]
    first = client.chat.completions.create(
        model="gpt-4o-mini", messages=messages, tools=[WEATHER_TOOL]
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls or []
    assert len(calls) == 1
    call = calls[0]
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Lisbon", "unit": "celsius"}
    assert first.usage is not None
    assert first.usage.completion_tokens > 0
    messages.append(
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.function.name, "arguments": call.function.arguments},
                }
            ],
        }
    )
    messages.append(
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature_c": 21})}
    )
    second = client.chat.completions.create(
        model="gpt-4o-mini", messages=messages, tools=[WEATHER_TOOL]
    )
    assert second.choices[0].finish_reason == "stop"
    assert "temperature c 21" in (second.choices[0].message.content or "")


def test_openai_parallel_tool_calls_one_per_place_unless_disabled(client: openai.OpenAI) -> None:
    messages = [user("Compare the weather in Lisbon and Porto")]
    both = client.chat.completions.create(
        model="gpt-4o-mini", messages=messages, tools=[WEATHER_TOOL]
    )
    cities = [
        json.loads(c.function.arguments)["city"]
        for c in both.choices[0].message.tool_calls or []
        if c.type == "function"
    ]
    assert cities == ["Lisbon", "Porto"]
    one = client.chat.completions.create(
        model="gpt-4o-mini", messages=messages, tools=[WEATHER_TOOL], parallel_tool_calls=False
    )
    assert len(one.choices[0].message.tool_calls or []) == 1


def test_openai_tool_choice_none_answers_in_text(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[user("Weather in Lisbon?")],
        tools=[WEATHER_TOOL],
        tool_choice="none",
    )
    assert response.choices[0].message.tool_calls is None
    assert response.choices[0].message.content


def test_openai_streamed_tool_call_arguments_reassemble(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[user("Weather in Madrid please")],
        tools=[WEATHER_TOOL],
        stream=True,
        stream_options={"include_usage": True},
    )
    names: dict[int, str] = {}
    arguments: dict[int, str] = {}
    fragments = 0
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                fragments += 1
                if delta.function and delta.function.name:
                    names[delta.index] = delta.function.name
                if delta.function and delta.function.arguments:
                    arguments[delta.index] = (
                        arguments.get(delta.index, "") + delta.function.arguments
                    )
    assert finish == "tool_calls"
    assert names == {0: "get_weather"}
    assert json.loads(arguments[0]) == {"city": "Madrid", "unit": "celsius"}
    assert fragments > 2


def test_openai_max_tokens_truncates_with_finish_reason_length(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model="gpt-4o-mini", messages=[user("Plan a trip to Rome")], max_tokens=5
    )
    assert response.choices[0].finish_reason == "length"
    assert response.usage is not None
    assert response.usage.completion_tokens == 5
    assert count_tokens(response.choices[0].message.content or "") == 5


def test_openai_embeddings_base64_default_and_floats_agree(client: openai.OpenAI) -> None:
    as_base64 = client.embeddings.create(
        model="text-embedding-3-small", input=["hello world", "hi"]
    )
    as_floats = client.embeddings.create(
        model="text-embedding-3-small", input=["hello world", "hi"], encoding_format="float"
    )
    assert len(as_base64.data[0].embedding) == 1536
    assert as_base64.data[0].embedding == pytest.approx(as_floats.data[0].embedding, abs=1e-6)
    assert as_base64.data[0].embedding != as_base64.data[1].embedding
    assert as_floats.usage.prompt_tokens == 3
    short = client.embeddings.create(model="text-embedding-3-small", input="x", dimensions=16)
    assert len(short.data[0].embedding) == 16


async def test_async_openai_client_streams_and_serves_concurrent_requests(
    server: FakeLLMServer,
) -> None:
    async with openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="k") as client:

        async def ask(question: str) -> str:
            stream = await client.chat.completions.create(
                model="gpt-4o-mini", messages=[user(question)], stream=True
            )
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

        answers = await asyncio.gather(*(ask(f"Ideas for dinner number {i}") for i in range(8)))
    assert all(answers)
    assert len(server.served) == 8
    assert all(r.stream and r.status == 200 for r in server.served)


# -- faults ------------------------------------------------------------------------------------


def test_openai_sdk_retries_an_injected_429_and_succeeds(
    server: FakeLLMServer, client: openai.OpenAI
) -> None:
    response = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[user("Why is my bill higher?")],
        extra_headers={FAULT_HEADER: "429"},
    )
    assert response.choices[0].message.content
    assert [(r.status, r.retry_count) for r in server.served] == [(429, 0), (200, 1)]


def test_openai_500_beyond_the_sdk_retries_raises_then_the_same_request_succeeds(
    server: FakeLLMServer, client: openai.OpenAI
) -> None:
    request: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "messages": [user("Refund my order")],
        "extra_headers": {FAULT_HEADER: "500*3;retry-after-ms=1"},
    }
    with pytest.raises(openai.InternalServerError) as raised:
        client.chat.completions.create(**request)
    assert raised.value.status_code == 500
    assert raised.value.body == {
        "message": "The server had an error while processing your request. Sorry about that!",
        "type": "server_error",
        "param": None,
        "code": None,
    }
    assert client.chat.completions.create(**request).choices[0].message.content
    assert [r.status for r in server.served] == [500, 500, 500, 200]


def test_openai_rate_limit_error_carries_retry_after_headers(server: FakeLLMServer) -> None:
    client = openai.OpenAI(base_url=server.openai_base_url, api_key="k", max_retries=0)
    with client, pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[user("hi")],
            extra_headers={FAULT_HEADER: "429;retry-after-ms=1500"},
        )
    assert raised.value.response.headers["retry-after-ms"] == "1500"
    assert raised.value.response.headers["retry-after"] == "2"
    assert raised.value.code == "rate_limit_exceeded"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("429", FaultSpec(429, 1, 20)),
        ("503*2", FaultSpec(503, 2, 20)),
        ("500*4;retry-after-ms=5", FaultSpec(500, 4, 5)),
        ("delay-ms=300", FaultSpec(None, delay_ms=300)),
        ("reset-after=2*3", FaultSpec(None, 3, reset_after=2)),
        ("truncate", FaultSpec(None, damage="truncate")),
        ("malformed-json*2", FaultSpec(None, 2, damage="malformed-json")),
        ("malformed-sse", FaultSpec(None, damage="malformed-sse")),
    ],
)
def test_fault_header_parses(header: str, expected: FaultSpec) -> None:
    assert FaultSpec.parse(header) == expected


@pytest.mark.parametrize(
    "header", ["teapot", "200", "429*x", "500;wait=3", "delay-ms=-1", "reset-after=", "truncate=1"]
)
def test_malformed_fault_header_is_a_400(server: FakeLLMServer, header: str) -> None:
    body = json.dumps({"model": "gpt-4o-mini", "messages": [user("hi")]}).encode()
    url = f"{server.openai_base_url}/chat/completions"
    status, answer = http("POST", url, body, **{FAULT_HEADER: header})
    assert status == 400
    assert FAULT_HEADER in answer["error"]["message"]


def _streamed_texts(client: openai.OpenAI, question: str, fault: str | None = None) -> list[str]:
    headers = {FAULT_HEADER: fault} if fault else {}
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[user(question)], stream=True, extra_headers=headers
    )
    return [chunk.choices[0].delta.content or "" for chunk in stream]


def test_reset_after_k_events_breaks_the_stream_after_k_chunks(
    server: FakeLLMServer, client: openai.OpenAI
) -> None:
    question = "Plan three days in Lisbon for me"
    complete = _streamed_texts(client, question)
    received: list[str] = []
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[user(question)],
        stream=True,
        extra_headers={FAULT_HEADER: "reset-after=3"},
    )
    # newer openai releases wrap the transport error in APIConnectionError; 2.0.0 lets it through
    with pytest.raises(Exception) as raised:  # noqa: PT011 - the type depends on the SDK version
        received.extend(chunk.choices[0].delta.content or "" for chunk in stream)
    assert received == complete[:3]
    error = raised.value
    if isinstance(error, openai.APIConnectionError):
        assert isinstance(error.__cause__, Exception)
        error = error.__cause__
    assert "reset" in str(error).lower()


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("truncate", lambda complete: complete[: (len(complete) + 1) // 2]),  # + the [DONE] event
        ("malformed-sse", lambda complete: complete[:1] + complete[2:]),  # the 2nd event is ignored
    ],
)
def test_damaged_streams_end_early_or_lose_the_event_without_a_field_name(
    client: openai.OpenAI, fault: str, expected: Any
) -> None:
    complete = _streamed_texts(client, "What should I cook for a vegetarian dinner?")
    damaged = _streamed_texts(client, "What should I cook for a vegetarian dinner?", fault)
    assert damaged == expected(complete)


@pytest.mark.parametrize("fault", ["truncate", "malformed-json"])
def test_damaged_json_bodies_do_not_parse_though_the_status_is_200(
    server: FakeLLMServer, client: openai.OpenAI, fault: str
) -> None:
    with pytest.raises(json.JSONDecodeError):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[user("hi")], extra_headers={FAULT_HEADER: fault}
        )
    assert [r.status for r in server.served] == [200]


def test_malformed_json_in_a_stream_breaks_its_second_event(client: openai.OpenAI) -> None:
    received: list[str] = []
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[user("Recommend a book")],
        stream=True,
        extra_headers={FAULT_HEADER: "malformed-json"},
    )
    with pytest.raises(json.JSONDecodeError):
        received.extend(chunk.choices[0].delta.content or "" for chunk in stream)
    assert received == [""]  # the first (role) event arrived intact


def test_delay_outlasts_a_short_client_timeout_and_the_arrival_is_counted(
    server: FakeLLMServer,
) -> None:
    impatient = openai.OpenAI(
        base_url=server.openai_base_url, api_key="k", max_retries=0, timeout=0.1
    )
    with impatient, pytest.raises(openai.APITimeoutError):
        impatient.chat.completions.create(
            model="gpt-4o-mini",
            messages=[user("hi")],
            extra_headers={FAULT_HEADER: "delay-ms=2000"},
        )
    assert server.wait_for_arrivals(1, timeout=0)
    assert server.arrivals == 1
    assert server.served == []  # still sleeping: no answer yet
    assert not server.wait_for_arrivals(2, timeout=0.01)


# -- malformed requests ------------------------------------------------------------------------


def test_malformed_json_body_gets_a_400_in_openai_error_shape(server: FakeLLMServer) -> None:
    status, answer = http("POST", f"{server.openai_base_url}/chat/completions", b"{not json")
    assert status == 400
    assert answer["error"]["type"] == "invalid_request_error"
    assert server.served[-1].status == 400


def test_missing_messages_is_a_bad_request_error_in_the_sdk(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-4o-mini", messages=[])


def test_unknown_openai_model_is_a_404_model_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="no-such-model", messages=[user("hi")])
    assert raised.value.code == "model_not_found"


def test_unknown_mistral_model_is_a_400_invalid_model(server: FakeLLMServer) -> None:
    body = json.dumps({"model": "gpt-4o-mini", "messages": [user("hi")]}).encode()
    status, answer = http("POST", f"{server.mistral_server_url}/v1/chat/completions", body)
    assert status == 400
    assert answer["type"] == "invalid_model"


def test_unknown_route_is_a_404_in_mistral_error_shape(server: FakeLLMServer) -> None:
    status, answer = http("POST", f"{server.mistral_server_url}/v1/nothing", b"{}")
    assert status == 404
    assert answer["object"] == "error"


def test_models_are_listed_per_provider(server: FakeLLMServer, client: openai.OpenAI) -> None:
    assert "gpt-4o-mini" in [m.id for m in client.models.list()]
    status, listed = http("GET", f"{server.mistral_server_url}/v1/models")
    assert status == 200
    assert "mistral-small-latest" in [m["id"] for m in listed["data"]]


# -- Mistral -----------------------------------------------------------------------------------


def test_mistral_complete_reports_usage_and_mistral_ids(mistral: Mistral) -> None:
    response = mistral.chat.complete(
        model="mistral-small-latest", messages=[mistral_user("A soup recipe?")]
    )
    text = response.choices[0].message.content if response.choices[0].message else None
    assert isinstance(text, str)
    assert text
    assert response.usage.prompt_tokens == 3 + count_tokens("A soup recipe?") + 3
    assert response.usage.completion_tokens == count_tokens(text)
    assert response.object == "chat.completion"
    assert response.model == "mistral-small-latest"
    assert len(response.id) == 32


def test_mistral_stream_carries_usage_in_the_last_chunk(mistral: Mistral) -> None:
    events = list(
        mistral.chat.stream(
            model="mistral-small-latest",
            messages=[mistral_user("How do I start running?")],
        )
    )
    text = "".join(str(e.data.choices[0].delta.content or "") for e in events)
    *body, last = events
    assert last.data.usage is not None
    assert last.data.usage.completion_tokens == count_tokens(text) > 0
    assert last.data.choices[0].finish_reason == "stop"
    assert all(e.data.usage is None for e in body)


def test_mistral_tool_call_has_a_nine_character_id(mistral: Mistral) -> None:
    response = mistral.chat.complete(
        model="mistral-small-latest",
        messages=[mistral_user("Is it sunny in Paris?")],
        tools=[MISTRAL_WEATHER_TOOL],
    )
    message = response.choices[0].message
    assert message is not None
    assert response.choices[0].finish_reason == "tool_calls"
    calls = message.tool_calls or []
    assert len(calls) == 1
    assert len(calls[0].id or "") == 9
    assert calls[0].function.name == "get_weather"
    assert json.loads(str(calls[0].function.arguments))["city"] == "Paris"


def test_mistral_streamed_tool_call_arrives_whole(mistral: Mistral) -> None:
    events = list(
        mistral.chat.stream(
            model="mistral-small-latest",
            messages=[mistral_user("Weather in Berlin?")],
            tools=[MISTRAL_WEATHER_TOOL],
        )
    )
    calls = [call for e in events for call in (e.data.choices[0].delta.tool_calls or [])]
    assert len(calls) == 1
    assert json.loads(str(calls[0].function.arguments)) == {"city": "Berlin", "unit": "celsius"}
    assert events[-1].data.choices[0].finish_reason == "tool_calls"


def test_mistral_embeddings(mistral: Mistral) -> None:
    response = mistral.embeddings.create(model="mistral-embed", inputs=["first text", "second"])
    assert [len(d.embedding or []) for d in response.data] == [1024, 1024]
    assert response.usage.prompt_tokens == 3


def test_mistral_sdk_retries_an_injected_429_with_its_retry_config(
    server: FakeLLMServer, mistral: Mistral
) -> None:
    response = mistral.chat.complete(
        model="mistral-small-latest",
        messages=[mistral_user("hello")],
        http_headers={FAULT_HEADER: "429;retry-after-ms=1"},
    )
    assert response.choices
    assert [r.status for r in server.served] == [429, 200]


def test_mistral_error_without_retries_raises_with_mistral_error_body(
    server: FakeLLMServer,
) -> None:
    sdk = Mistral(api_key="k", server_url=server.mistral_server_url)
    with sdk, pytest.raises(errors.SDKError) as raised:
        sdk.chat.complete(
            model="mistral-small-latest",
            messages=[mistral_user("hello")],
            http_headers={FAULT_HEADER: "503"},
        )
    assert raised.value.status_code == 503
    assert json.loads(raised.value.body)["object"] == "error"


def test_mistral_user_agent_is_recognised_on_the_bare_v1_path(server: FakeLLMServer) -> None:
    with Mistral(api_key="k", server_url=server.url) as sdk:
        response = sdk.chat.complete(model="mistral-small-latest", messages=[mistral_user("hi")])
    assert response.object == "chat.completion"
    assert server.served[-1].flavour == "mistral"


# -- lifecycle ---------------------------------------------------------------------------------


def test_stop_releases_the_port_and_the_url() -> None:
    server = FakeLLMServer().start()
    host, port = server.url.removeprefix("http://").split(":")
    with pytest.raises(RuntimeError, match="already running"):
        server.start()
    server.stop()
    server.stop()
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.url
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect((host, int(port)))
