"""Streamed turns count their tokens by default, and the application never notices.

convotel sends streamed chat and legacy completions with ``stream_options.include_usage`` unless
the application decided itself, hides the extra usage-only chunk, and falls back to the
application's own request on servers that reject the option. The stream cassettes hold both the
application's request and the one asking for usage; which one was played shows what was sent.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Iterable
from types import SimpleNamespace
from typing import Any

import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletionChunk
from openai.types.completion_usage import CompletionUsage
from openai_cassettes import Instrument, replay
from openai_wire import (
    AZURE_API_VERSION,
    AZURE_ENDPOINT,
    CHAT_MODEL,
    INCLUDE_USAGE,
    PER_TASK_STREAMS,
    RECIPES_BY_NAME,
    STREAM_MESSAGES,
    WEATHER_QUESTION,
    WEATHER_TOOL,
    make_client,
    per_task_messages,
    per_task_usage,
)
from openinference.semconv.trace import SpanAttributes
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE
from opentelemetry.trace import StatusCode

from convotel import TraceConfig, using_session
from convotel.openai import OpenAIInstrumentor
from convotel.openai.endpoints import ChatCompletions
from convotel.openai.stream_usage import (
    REJECTED_EVENT,
    RejectingServers,
    rejects_stream_options,
    server_key,
    sync_usage_wrapper,
)
from convotel.openai.streaming import ChatStreamAccumulator
from convotel.sessions import TokenCounts, group_by_session
from convotel.spans import STREAM_OUTCOME, Tracing

OnlySpan = Callable[[], ReadableSpan]
Finished = Callable[[], list[ReadableSpan]]
StreamCall = Callable[..., Any]
#: Which interaction of a two-request stream cassette was played (see ``both_ways``).
AS_WRITTEN = {0: 1}
ASKING_FOR_USAGE = {1: 1}
TOKEN_KEYS = (
    SpanAttributes.LLM_TOKEN_COUNT_PROMPT,
    SpanAttributes.LLM_TOKEN_COUNT_COMPLETION,
    SpanAttributes.LLM_TOKEN_COUNT_TOTAL,
)


def chat(client: Any, **request: Any) -> Any:
    return client.chat.completions.create(
        model=CHAT_MODEL, messages=STREAM_MESSAGES, stream=True, **request
    )


def chat_with_tools(client: Any, **request: Any) -> Any:
    return client.chat.completions.create(
        model=CHAT_MODEL, messages=[WEATHER_QUESTION], tools=[WEATHER_TOOL], stream=True, **request
    )


def azure_chat(client: Any, **request: Any) -> Any:
    return client.chat.completions.create(
        model="gpt-4o-deploy", messages=STREAM_MESSAGES, stream=True, **request
    )


def legacy_completion(client: Any, **request: Any) -> Any:
    return client.completions.create(
        model="gpt-3.5-turbo-instruct",
        prompt="Say this is a test",
        max_tokens=7,
        stream=True,
        **request,
    )


STREAMS: dict[str, tuple[str, StreamCall]] = {
    "chat": ("chat_stream", chat),
    "chat with tools": ("chat_stream_tools", chat_with_tools),
    "azure chat": ("azure_chat_stream", azure_chat),
    "legacy completion": ("completions_legacy_stream", legacy_completion),
}


def as_sent(chunks: Iterable[Any]) -> list[tuple[dict[str, Any], str]]:
    """Each chunk as the application can see it: set fields only (``to_dict``) and its JSON."""
    return [(chunk.to_dict(), chunk.to_json()) for chunk in chunks]


def uninstrumented(cassette: str, call: StreamCall, **request: Any) -> list[Any]:
    """The chunks the SDK yields without convotel."""
    with replay(cassette):
        return list(call(make_client(RECIPES_BY_NAME[cassette]), **request))


def tokens(span: ReadableSpan) -> tuple[object, ...]:
    attributes = span.attributes or {}
    return tuple(attributes.get(key) for key in TOKEN_KEYS)


def billed(usage: Any) -> tuple[int, int, int]:
    return (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)


# --- asked for by default, hidden from the application ------------------------------------------


@pytest.mark.parametrize("case", sorted(STREAMS))
def test_streamed_turn_counts_the_billed_tokens_and_the_app_sees_its_own_chunks(
    case: str, instrument: Instrument, only_span: OnlySpan
) -> None:
    cassette, call = STREAMS[case]
    own_chunks = as_sent(uninstrumented(cassette, call))
    usage = uninstrumented(cassette, call, **INCLUDE_USAGE)[-1].usage
    instrument()

    with replay(cassette) as played:
        chunks = list(call(make_client(RECIPES_BY_NAME[cassette])))

    assert played.play_counts == ASKING_FOR_USAGE
    assert as_sent(chunks) == own_chunks  # no usage chunk, no `"usage": null` fields
    assert tokens(only_span()) == billed(usage)


@pytest.mark.parametrize(
    ("usage", "hidden"),
    [
        (CompletionUsage(prompt_tokens=3, completion_tokens=2, total_tokens=5), True),
        ({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}, True),
        (False, False),  # a stray value: the chunk is not the usage chunk convotel asked for
        (0, False),
        ("usage", False),
        (None, False),
    ],
)
def test_only_a_chunk_carrying_usage_counts_is_hidden(usage: Any, hidden: bool) -> None:
    chunk = ChatCompletionChunk.construct(choices=[], usage=usage)
    accumulator = ChatStreamAccumulator(hide_usage_chunk=True)

    assert accumulator.process(chunk) is (not hidden)


@pytest.mark.parametrize("choices", [None, "", 0, False])
def test_a_chunk_without_a_choices_list_is_not_the_usage_chunk(choices: Any) -> None:
    usage = CompletionUsage(prompt_tokens=3, completion_tokens=2, total_tokens=5)
    chunk = ChatCompletionChunk.construct(choices=choices, usage=usage)
    accumulator = ChatStreamAccumulator(hide_usage_chunk=True)

    assert accumulator.process(chunk) is True


async def test_async_stream_counts_the_billed_tokens_and_hides_the_usage_chunk(
    async_client: openai.AsyncOpenAI, instrument: Instrument, only_span: OnlySpan
) -> None:
    own_chunks = as_sent(uninstrumented("chat_stream", chat))
    usage = uninstrumented("chat_stream", chat, **INCLUDE_USAGE)[-1].usage
    instrument()

    with replay("chat_stream") as played:
        stream = await chat(async_client)
        chunks = [chunk async for chunk in stream]

    assert played.play_counts == ASKING_FOR_USAGE
    assert as_sent(chunks) == own_chunks
    assert tokens(only_span()) == billed(usage) == (19, 3, 22)


def test_stream_helper_final_completion_is_what_it_is_without_convotel(
    client: openai.OpenAI, instrument: Instrument, only_span: OnlySpan
) -> None:
    def run(sdk: openai.OpenAI) -> tuple[list[str], dict[str, Any]]:
        with sdk.chat.completions.stream(model=CHAT_MODEL, messages=STREAM_MESSAGES) as stream:
            kinds = [event.type for event in stream]
            return kinds, stream.get_final_completion().to_dict()

    with replay("chat_stream"):
        own = run(make_client(RECIPES_BY_NAME["chat_stream"]))
    instrument()
    with replay("chat_stream") as played:
        seen = run(client)

    assert played.play_counts == ASKING_FOR_USAGE
    assert seen == own
    assert seen[1].get("usage") is None  # the application did not ask for usage
    assert tokens(only_span()) == (19, 3, 22)


async def test_async_stream_helper_gets_no_usage_but_the_span_does(
    async_client: openai.AsyncOpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with replay("chat_stream") as played:
        async with async_client.chat.completions.stream(
            model=CHAT_MODEL, messages=STREAM_MESSAGES
        ) as stream:
            completion = await stream.get_final_completion()

    assert played.play_counts == ASKING_FOR_USAGE
    assert completion.usage is None
    assert completion.choices[0].message.content == "Hello there!"
    assert tokens(only_span()) == (19, 3, 22)


async def test_each_concurrent_session_totals_the_tokens_its_streams_were_billed(
    instrumented: OpenAIInstrumentor, finished: Finished
) -> None:
    client = openai.AsyncOpenAI(api_key="sk-test-not-a-real-key")

    async def converse(task: int) -> None:
        with using_session(f"s-{task}"):
            stream = await client.chat.completions.create(
                model=CHAT_MODEL, messages=per_task_messages(task), stream=True
            )
            async for _ in stream:
                await asyncio.sleep(0)

    with replay("chat_stream_per_task"):
        # the cassette's second half: the same requests asking for usage, one per task
        await asyncio.gather(*(converse(task) for task in range(PER_TASK_STREAMS)))

    grouping = group_by_session(finished())
    for task in range(PER_TASK_STREAMS):
        session = grouping.get(f"s-{task}")
        assert session is not None
        usage = per_task_usage(task)
        assert session.tokens == TokenCounts(
            usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]
        )


def test_error_mid_stream_still_reaches_the_app_unchanged(
    client: openai.OpenAI, instrument: Instrument, only_span: OnlySpan
) -> None:
    def received_before_the_error(sdk: openai.OpenAI) -> tuple[list[Any], str]:
        received: list[Any] = []
        with pytest.raises(openai.APIError) as raised:
            received.extend(chat(sdk))
        return as_sent(received), str(raised.value)

    with replay("chat_stream_error"):
        own = received_before_the_error(make_client(RECIPES_BY_NAME["chat_stream_error"]))
    instrument()
    with replay("chat_stream_error") as played:
        seen = received_before_the_error(client)

    assert played.play_counts == ASKING_FOR_USAGE
    assert seen == own
    assert only_span().status.status_code is StatusCode.ERROR
    assert tokens(only_span()) == (None, None, None)  # the stream failed before its usage


# --- what is never changed ----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["config", "environment"])
def test_opt_out_sends_the_request_unchanged(
    how: str,
    client: openai.OpenAI,
    instrument: Instrument,
    only_span: OnlySpan,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    own_chunks = as_sent(uninstrumented("chat_stream", chat))
    if how == "config":
        instrument(TraceConfig(request_stream_usage=False))
    else:
        monkeypatch.setenv("CONVOTEL_REQUEST_STREAM_USAGE", "false")
        instrument(TraceConfig())

    with replay("chat_stream") as played:
        chunks = list(chat(client))

    assert played.play_counts == AS_WRITTEN
    assert as_sent(chunks) == own_chunks
    assert tokens(only_span()) == (None, None, None)  # the server was not asked for usage
    assert only_span().attributes[STREAM_OUTCOME] == "completed"  # type: ignore[index]


def test_usage_the_app_asked_for_is_sent_delivered_and_recorded_as_is(
    client: openai.OpenAI, instrument: Instrument, only_span: OnlySpan
) -> None:
    own_chunks = as_sent(uninstrumented("chat_stream", chat, **INCLUDE_USAGE))
    instrument()

    with replay("chat_stream") as played:
        chunks = list(chat(client, **INCLUDE_USAGE))

    assert played.play_counts == ASKING_FOR_USAGE
    assert as_sent(chunks) == own_chunks  # the usage chunk and every `"usage": null` included
    assert chunks[-1].choices == []
    assert tokens(only_span()) == billed(chunks[-1].usage)


@pytest.mark.parametrize("path", ["with_raw_response", "with_streaming_response"])
def test_raw_response_streams_are_sent_unchanged(
    path: str, client: openai.OpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    """The application may read the raw body there, which convotel cannot filter."""
    create = getattr(client.chat.completions, path).create
    with replay("chat_stream") as played:
        response = create(model=CHAT_MODEL, messages=STREAM_MESSAGES, stream=True)
        if path == "with_streaming_response":
            with response as opened:
                list(opened.parse())
        else:
            list(response.parse())

    assert played.play_counts == AS_WRITTEN
    assert tokens(only_span()) == (None, None, None)


def test_responses_api_streams_report_usage_without_being_asked(
    client: openai.OpenAI, instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with replay("responses_stream"):
        events = list(
            client.responses.create(
                model=CHAT_MODEL,
                instructions="Answer in one sentence.",
                input="Capital of France?",
                stream=True,
            )
        )

    usage = events[-1].response.usage
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (36, 9, 45)
    assert tokens(only_span()) == (36, 9, 45)


def test_after_uninstrument_cached_methods_send_requests_unchanged(
    client: openai.OpenAI, instrumented: OpenAIInstrumentor
) -> None:
    create = client.chat.completions.create  # a bound wrapper, kept by the application
    instrumented.uninstrument()
    with replay("chat_stream") as played:
        list(create(model=CHAT_MODEL, messages=STREAM_MESSAGES, stream=True))
    assert played.play_counts == AS_WRITTEN


# --- servers that reject stream_options ----------------------------------------------------------


def compatible_client(**options: Any) -> openai.OpenAI:
    return make_client(RECIPES_BY_NAME["chat_stream_rejected"], **options)


def compatible_async_client() -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        api_key="sk-test-not-a-real-key", base_url=str(compatible_client().base_url)
    )


def rejection_events(span: ReadableSpan) -> list[dict[str, Any]]:
    return [dict(event.attributes or {}) for event in span.events if event.name == REJECTED_EVENT]


def test_rejected_option_is_retried_once_unchanged_and_remembered(
    instrument: Instrument, finished: Finished, caplog: pytest.LogCaptureFixture
) -> None:
    own_chunks = as_sent(uninstrumented("chat_stream", chat))
    instrument()
    client = compatible_client()

    with caplog.at_level(logging.INFO, "convotel"), replay("chat_stream_rejected") as played:
        first = list(chat(client))
        assert dict(played.play_counts) == {0: 1, 1: 1}  # rejected, then the app's request
        second = list(chat(client))

    # the second call went unchanged straight away (the 400 cannot be played twice)
    assert dict(played.play_counts) == {0: 1, 1: 1, 2: 1}
    assert as_sent(first) == as_sent(second) == own_chunks
    first_span, second_span = finished()
    assert rejection_events(first_span) == [{HTTP_RESPONSE_STATUS_CODE: 400}]
    assert rejection_events(second_span) == []
    for span in (first_span, second_span):
        assert span.status.status_code is StatusCode.OK
        assert span.attributes[STREAM_OUTCOME] == "completed"  # type: ignore[index]
        assert tokens(span) == (None, None, None)  # this server cannot report stream usage
    (logged,) = [r for r in caplog.records if "rejected stream_options" in r.getMessage()]
    assert "llm.compatible.test" in logged.getMessage()


async def test_async_rejected_option_is_retried_unchanged(
    instrument: Instrument, only_span: OnlySpan
) -> None:
    own_chunks = as_sent(uninstrumented("chat_stream", chat))
    instrument()
    with replay("chat_stream_rejected") as played:
        stream = await chat(compatible_async_client())
        chunks = [chunk async for chunk in stream]

    assert dict(played.play_counts) == {0: 1, 1: 1}
    assert as_sent(chunks) == own_chunks
    assert rejection_events(only_span()) == [{HTTP_RESPONSE_STATUS_CODE: 400}]


def test_stream_helper_on_a_rejecting_server_works_as_without_convotel(
    instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with (
        replay("chat_stream_rejected") as played,
        compatible_client().chat.completions.stream(
            model=CHAT_MODEL, messages=STREAM_MESSAGES
        ) as stream,
    ):
        completion = stream.get_final_completion()

    assert dict(played.play_counts) == {0: 1, 1: 1}
    assert completion.choices[0].message.content == "Hello there!"
    assert only_span().status.status_code is StatusCode.OK


def test_unprocessable_entity_naming_the_option_is_a_rejection_too(
    instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with replay("chat_stream_unprocessable") as played:
        text = "".join(c.choices[0].delta.content or "" for c in chat(compatible_client()))

    assert dict(played.play_counts) == {0: 1, 1: 1}
    assert text == "Hello there!"
    assert rejection_events(only_span()) == [{HTTP_RESPONSE_STATUS_CODE: 422}]


def test_when_the_unchanged_request_fails_too_the_app_gets_its_own_error(
    instrument: Instrument, only_span: OnlySpan
) -> None:
    recipe = RECIPES_BY_NAME["chat_stream_rejected_then_failed"]
    with replay(recipe.name):  # without convotel: the 400 is not the application's to see
        with pytest.raises(openai.BadRequestError):
            chat(make_client(recipe), **INCLUDE_USAGE)
        with pytest.raises(openai.NotFoundError) as own:
            chat(make_client(recipe))
    instrument()

    with replay(recipe.name) as played, pytest.raises(openai.NotFoundError) as seen:
        chat(compatible_client())

    assert dict(played.play_counts) == {0: 1, 1: 1}
    error, expected = seen.value, own.value
    assert (error.status_code, error.message, error.body) == (
        expected.status_code,
        expected.message,
        expected.body,
    )
    assert type(error.__context__) is type(expected.__context__)  # not chained to the rejection
    span = only_span()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[HTTP_RESPONSE_STATUS_CODE] == 404  # type: ignore[index]
    assert rejection_events(span) == [{HTTP_RESPONSE_STATUS_CODE: 400}]


def test_a_bad_request_about_something_else_is_not_retried(
    instrumented: OpenAIInstrumentor, only_span: OnlySpan
) -> None:
    with replay("chat_stream_bad_temperature") as played, pytest.raises(openai.BadRequestError):
        chat(make_client(RECIPES_BY_NAME["chat_stream_bad_temperature"]), temperature=7)

    assert dict(played.play_counts) == {0: 1}  # one request: the error is the app's own
    assert rejection_events(only_span()) == []


def test_a_rejection_is_remembered_for_its_server_only(
    client: openai.OpenAI, instrumented: OpenAIInstrumentor, finished: Finished
) -> None:
    with replay("chat_stream_rejected"):
        list(chat(compatible_client()))
    with replay("chat_stream") as played:
        list(chat(client))  # api.openai.com is still asked for usage

    assert played.play_counts == ASKING_FOR_USAGE
    assert tokens(finished()[-1]) == (19, 3, 22)


def test_rejecting_servers_are_bounded_and_least_recently_used_go_first() -> None:
    servers = RejectingServers(limit=2)
    servers.add("a")
    servers.add("b")
    assert "a" in servers  # used: now the most recent
    servers.add("c")
    assert ("a" in servers, "b" in servers, "c" in servers) == (True, False, True)
    assert len(servers) == 2
    assert 3 not in servers


def test_server_key_tells_servers_and_azure_api_versions_apart() -> None:
    def azure(version: str) -> Any:
        return openai.AzureOpenAI(
            azure_endpoint=AZURE_ENDPOINT, api_version=version, api_key="k"
        ).chat.completions

    keys = {
        server_key(openai.OpenAI(api_key="k").chat.completions),
        server_key(compatible_client().chat.completions),
        server_key(azure(AZURE_API_VERSION)),
        server_key(azure("2024-02-01")),
    }
    assert len(keys) == 4
    assert None not in keys
    assert server_key(object()) is None


def _status_error(status: int, body: object, message: str = "Error") -> openai.APIStatusError:
    transport_client = type(openai.OpenAI(api_key="k")._client)
    http_module = next(c.__module__ for c in transport_client.__mro__ if "httpx" in c.__module__)
    http = sys.modules[http_module.partition(".")[0]]
    request = http.Request("POST", "https://llm.compatible.test/v1/chat/completions")
    response = http.Response(status, request=request)  # httpx, or httpx2 for openai 3.x
    return openai.APIStatusError(message, response=response, body=body)


@pytest.mark.parametrize(
    ("error", "rejects"),
    [
        (_status_error(400, {"error": {"message": "Unrecognized: stream_options"}}), True),
        (_status_error(400, None, "Error code: 400 - stream_options not allowed"), True),
        (_status_error(422, {"detail": [{"loc": ["body", "stream_options"]}]}), True),
        (_status_error(400, {"error": {"message": "temperature must be <= 2"}}), False),
        (_status_error(500, {"error": {"message": "stream_options broke us"}}), False),
        (ValueError("stream_options"), False),
    ],
)
def test_a_rejection_is_a_400_or_422_naming_stream_options(
    error: BaseException, rejects: bool
) -> None:
    assert rejects_stream_options(error) is rejects


# --- the fallback, over odd errors and servers ---------------------------------------------------

_REJECTION_TEXTS = st.sampled_from(["stream_options", "Unrecognized: stream_options", "other"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    status=st.sampled_from([400, 401, 404, 422, 429, 500]),
    message=_REJECTION_TEXTS,
    body=st.one_of(st.none(), _REJECTION_TEXTS, st.dictionaries(_REJECTION_TEXTS, st.integers())),
    retry_fails=st.booleans(),
    base_url=st.one_of(st.none(), st.just("https://llm.compatible.test/v1"), st.integers()),
)
def test_the_fallback_retries_exactly_the_rejections_and_the_app_gets_the_sdks_own_outcome(
    status: int, message: str, body: object, retry_fails: bool, base_url: object
) -> None:
    rejection = _status_error(status, body, message)
    is_rejection = status in (400, 422) and "stream_options" in f"{message} {body}"
    own_error = ValueError("the application's own request failed")
    own_result = object()
    sent: list[dict[str, Any]] = []

    def sdk_create(*args: Any, **kwargs: Any) -> Any:
        sent.append(kwargs)
        if len(sent) == 1:
            raise rejection
        if retry_fails:
            raise own_error
        return own_result

    endpoint = ChatCompletions(TraceConfig)
    wrapper = sync_usage_wrapper(endpoint)(lambda: Tracing(TracerProvider().get_tracer("t")))
    resource = SimpleNamespace(_client=SimpleNamespace(base_url=base_url, default_query={}))
    request = {"model": CHAT_MODEL, "messages": STREAM_MESSAGES, "stream": True}

    try:
        outcome: object = wrapper(sdk_create, resource, (), dict(request))
    except Exception as exc:  # noqa: BLE001 - the outcome is compared by identity below
        outcome = exc

    if not is_rejection:
        assert outcome is rejection
        assert len(sent) == 1
    else:
        assert outcome is (own_error if retry_fails else own_result)
        assert sent[1] == request  # the application's own request, unchanged
    assert sent[0]["stream_options"] == {"include_usage": True}
    remembered = is_rejection and base_url is not None
    assert len(endpoint.rejecting) == int(remembered)
