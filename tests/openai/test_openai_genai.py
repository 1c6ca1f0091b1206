"""The OpenTelemetry GenAI names on OpenAI spans (``TraceConfig(enable_genai_semconv=True)``).

Each call replays a cassette through the real SDK; the ``gen_ai.*`` attributes must equal what
the response said (models, usage, finish reason) and the session set with ``using_session``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
import pytest
from openai_cassettes import Instrument, replay
from openai_wire import BASIC_MESSAGES, CHAT_MODEL, STREAM_MESSAGES
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.semconv._incubating.attributes.gen_ai_attributes import (
    GenAiOperationNameValues,
    GenAiProviderNameValues,
)

from convotel import TraceConfig, using_session
from convotel.openai import OpenAIInstrumentor

OnlySpan = Callable[[], ReadableSpan]
Finished = Callable[[], list[ReadableSpan]]
GENAI_ON = TraceConfig(enable_genai_semconv=True)
OPENAI = GenAiProviderNameValues.OPENAI.value
AZURE_OPENAI = GenAiProviderNameValues.AZURE_AI_OPENAI.value
CHAT = GenAiOperationNameValues.CHAT.value


def genai_of(span: ReadableSpan) -> dict[str, Any]:
    """The span's ``gen_ai.*`` attributes (sequences as lists)."""
    return {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in (span.attributes or {}).items()
        if key.startswith("gen_ai.")
    }


def chat_names(
    session: str,
    usage: Any,
    *,
    request_model: str = CHAT_MODEL,
    response_model: str = "gpt-4o-mini-2024-07-18",
    provider: str = OPENAI,
) -> dict[str, Any]:
    """The GenAI names of a finished chat completion whose response reported ``usage``."""
    return {
        "gen_ai.operation.name": CHAT,
        "gen_ai.provider.name": provider,
        "gen_ai.conversation.id": session,
        "gen_ai.request.model": request_model,
        "gen_ai.response.model": response_model,
        "gen_ai.usage.input_tokens": usage.prompt_tokens,
        "gen_ai.usage.output_tokens": usage.completion_tokens,
        "gen_ai.usage.cache_read.input_tokens": usage.prompt_tokens_details.cached_tokens,
        "gen_ai.usage.reasoning.output_tokens": usage.completion_tokens_details.reasoning_tokens,
        "gen_ai.response.finish_reasons": ["stop"],
    }


def basic_chat(client: openai.OpenAI) -> Any:
    return client.chat.completions.create(
        model=CHAT_MODEL,
        messages=BASIC_MESSAGES,
        temperature=0.2,
        max_tokens=50,
        user="end-user-hash",
    )


def test_chat_writes_session_provider_models_and_recorded_usage(
    client: openai.OpenAI, instrument: Instrument, only_span: OnlySpan
) -> None:
    instrument(GENAI_ON)
    with replay("chat_basic"), using_session("gen-chat"):
        completion = basic_chat(client)

    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (24, 8)
    assert genai_of(only_span()) == chat_names("gen-chat", completion.usage)


async def test_async_chat_writes_the_same_names(
    async_client: openai.AsyncOpenAI, instrument: Instrument, only_span: OnlySpan
) -> None:
    instrument(GENAI_ON)
    with replay("chat_basic"), using_session("gen-async"):
        completion = await async_client.chat.completions.create(
            model=CHAT_MODEL,
            messages=BASIC_MESSAGES,
            temperature=0.2,
            max_tokens=50,
            user="end-user-hash",
        )

    assert genai_of(only_span()) == chat_names("gen-async", completion.usage)


def test_cached_and_reasoning_tokens_are_written(
    client: openai.OpenAI, instrument: Instrument, only_span: OnlySpan
) -> None:
    instrument(GENAI_ON)
    with replay("chat_reasoning_cached"), using_session("gen-o4"):
        completion = client.chat.completions.create(
            model="o4-mini",
            messages=[{"role": "user", "content": "The answer to everything?"}],
            reasoning_effort="low",
        )

    expected = chat_names(
        "gen-o4", completion.usage, request_model="o4-mini", response_model="o4-mini-2025-04-16"
    )
    assert expected["gen_ai.usage.cache_read.input_tokens"] == 1024
    assert expected["gen_ai.usage.reasoning.output_tokens"] == 256
    assert genai_of(only_span()) == expected


def test_streamed_chat_writes_the_usage_of_the_usage_chunk(
    client: openai.OpenAI, instrument: Instrument, only_span: OnlySpan
) -> None:
    instrument(GENAI_ON)
    with replay("chat_stream_usage"), using_session("gen-stream"):
        chunks = list(
            client.chat.completions.create(
                model=CHAT_MODEL,
                messages=STREAM_MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            )
        )

    usage = chunks[-1].usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (19, 3)
    assert genai_of(only_span()) == chat_names("gen-stream", usage)


async def test_async_stream_with_requested_usage_writes_it_and_hides_the_usage_chunk(
    async_client: openai.AsyncOpenAI, instrument: Instrument, only_span: OnlySpan
) -> None:
    instrument(GENAI_ON)
    with replay("chat_stream_usage"), using_session("gen-astream"):  # usage asked by default
        stream = await async_client.chat.completions.create(
            model=CHAT_MODEL, messages=STREAM_MESSAGES, stream=True
        )
        chunks = [chunk async for chunk in stream]

    assert all(chunk.choices for chunk in chunks), "the usage-only chunk stays hidden"
    found = genai_of(only_span())
    assert found["gen_ai.conversation.id"] == "gen-astream"
    assert found["gen_ai.response.model"] == chunks[0].model == "gpt-4o-mini-2024-07-18"
    assert (found["gen_ai.usage.input_tokens"], found["gen_ai.usage.output_tokens"]) == (19, 3)


def test_stream_without_usage_writes_no_token_counts(
    client: openai.OpenAI, instrument: Instrument, only_span: OnlySpan
) -> None:
    instrument(TraceConfig(enable_genai_semconv=True, request_stream_usage=False))
    with replay("chat_stream"), using_session("gen-nousage"):  # the request without usage
        list(
            client.chat.completions.create(model=CHAT_MODEL, messages=STREAM_MESSAGES, stream=True)
        )

    found = genai_of(only_span())
    assert found["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert not [key for key in found if key.startswith("gen_ai.usage.")]


def test_azure_chat_names_the_azure_provider_and_the_deployment(
    azure_client: openai.AzureOpenAI, instrument: Instrument, only_span: OnlySpan
) -> None:
    instrument(GENAI_ON)
    with replay("azure_chat"), using_session("gen-azure"):
        completion = azure_client.chat.completions.create(
            model="gpt-4o-deploy", messages=BASIC_MESSAGES, temperature=0.2
        )

    assert AZURE_OPENAI == "azure.ai.openai"
    assert genai_of(only_span()) == chat_names(
        "gen-azure",
        completion.usage,
        request_model="gpt-4o-deploy",
        response_model="gpt-4o-2024-11-20",
        provider=AZURE_OPENAI,
    )


def test_azure_stream_takes_the_response_model_after_the_prompt_filter_chunk(
    azure_client: openai.AzureOpenAI, instrument: Instrument, only_span: OnlySpan
) -> None:
    """Regression: Azure's first chunk has ``model: ""``; the model of the next chunks counts."""
    instrument(GENAI_ON)
    with replay("azure_chat_stream"), using_session("gen-azure-stream"):
        chunks = list(
            azure_client.chat.completions.create(
                model="gpt-4o-deploy", messages=STREAM_MESSAGES, stream=True
            )
        )

    assert chunks[0].model == ""
    found = genai_of(only_span())
    assert found["gen_ai.provider.name"] == AZURE_OPENAI
    assert found["gen_ai.request.model"] == "gpt-4o-deploy"
    assert found["gen_ai.response.model"] == chunks[1].model == "gpt-4o-mini-2024-07-18"
    assert (found["gen_ai.usage.input_tokens"], found["gen_ai.usage.output_tokens"]) == (19, 3)


def test_responses_api_writes_chat_names_with_its_usage(
    client: openai.OpenAI, instrument: Instrument, only_span: OnlySpan
) -> None:
    instrument(GENAI_ON)
    with replay("responses_basic"), using_session("gen-responses"):
        response = client.responses.create(
            model=CHAT_MODEL,
            instructions="Answer in one sentence.",
            input="Capital of France?",
            temperature=1.0,
        )

    usage = response.usage
    assert usage is not None
    assert genai_of(only_span()) == {
        "gen_ai.operation.name": CHAT,
        "gen_ai.provider.name": OPENAI,
        "gen_ai.conversation.id": "gen-responses",
        "gen_ai.request.model": CHAT_MODEL,
        "gen_ai.response.model": response.model,
        "gen_ai.usage.input_tokens": usage.input_tokens,
        "gen_ai.usage.output_tokens": usage.output_tokens,
        "gen_ai.usage.cache_read.input_tokens": usage.input_tokens_details.cached_tokens,
        "gen_ai.usage.reasoning.output_tokens": usage.output_tokens_details.reasoning_tokens,
        "gen_ai.response.finish_reasons": ["completed"],
    }


def test_embeddings_write_the_embeddings_operation(
    client: openai.OpenAI, instrument: Instrument, only_span: OnlySpan
) -> None:
    instrument(GENAI_ON)
    with replay("embeddings"), using_session("gen-embed"):
        response = client.embeddings.create(model="text-embedding-3-small", input=["cat", "dog"])

    assert genai_of(only_span()) == {
        "gen_ai.operation.name": GenAiOperationNameValues.EMBEDDINGS.value,
        "gen_ai.provider.name": OPENAI,
        "gen_ai.conversation.id": "gen-embed",
        "gen_ai.request.model": "text-embedding-3-small",
        "gen_ai.usage.input_tokens": response.usage.prompt_tokens,
    }


def test_legacy_completion_is_a_text_completion(
    client: openai.OpenAI, instrument: Instrument, only_span: OnlySpan
) -> None:
    """Regression: the legacy Completions API is ``text_completion``, not ``chat``."""
    instrument(GENAI_ON)
    with replay("completions_legacy"), using_session("gen-legacy"):
        completion = client.completions.create(
            model="gpt-3.5-turbo-instruct", prompt="Say this is a test", max_tokens=7, temperature=0
        )

    assert completion.usage is not None
    assert genai_of(only_span()) == {
        "gen_ai.operation.name": GenAiOperationNameValues.TEXT_COMPLETION.value,
        "gen_ai.provider.name": OPENAI,
        "gen_ai.conversation.id": "gen-legacy",
        "gen_ai.request.model": "gpt-3.5-turbo-instruct",
        "gen_ai.response.model": "gpt-3.5-turbo-instruct",
        "gen_ai.usage.input_tokens": completion.usage.prompt_tokens,
        "gen_ai.usage.output_tokens": completion.usage.completion_tokens,
        "gen_ai.response.finish_reasons": ["length"],
    }


def test_failed_call_writes_what_the_request_said_and_no_usage(
    client: openai.OpenAI, instrument: Instrument, only_span: OnlySpan
) -> None:
    instrument(GENAI_ON)
    with replay("chat_500"), using_session("gen-500"), pytest.raises(openai.InternalServerError):
        client.with_options(max_retries=0).chat.completions.create(
            model=CHAT_MODEL, messages=BASIC_MESSAGES
        )

    span = only_span()
    assert genai_of(span) == {
        "gen_ai.operation.name": CHAT,
        "gen_ai.provider.name": OPENAI,
        "gen_ai.conversation.id": "gen-500",
        "gen_ai.request.model": CHAT_MODEL,
    }
    assert (span.attributes or {})["error.type"] == "InternalServerError"


def test_switched_off_no_genai_name_is_written(
    client: openai.OpenAI, instrument: Instrument, finished: Finished
) -> None:
    instrument(TraceConfig(enable_genai_semconv=False))
    with using_session("gen-off"):
        with replay("chat_basic"):
            basic_chat(client)
        with replay("chat_stream_usage"):
            list(
                client.chat.completions.create(
                    model=CHAT_MODEL,
                    messages=STREAM_MESSAGES,
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )
        with replay("embeddings"):
            client.embeddings.create(model="text-embedding-3-small", input=["cat", "dog"])

    spans = finished()
    assert [span.name for span in spans] == ["ChatCompletion", "ChatCompletion", "CreateEmbeddings"]
    assert all((span.attributes or {})["session.id"] == "gen-off" for span in spans)
    assert [genai_of(span) for span in spans] == [{}, {}, {}]


@pytest.mark.parametrize(("value", "written"), [("true", True), ("false", False)])
def test_the_environment_variable_switches_it(
    client: openai.OpenAI,
    tracer_provider: TracerProvider,
    only_span: OnlySpan,
    monkeypatch: pytest.MonkeyPatch,
    value: str,
    written: bool,
) -> None:
    monkeypatch.setenv("OPENINFERENCE_ENABLE_GENAI_SEMCONV", value)
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)  # config from the environment
    try:
        with replay("chat_basic"), using_session("gen-env"):
            basic_chat(client)
    finally:
        instrumentor.uninstrument()

    found = genai_of(only_span())
    assert (found.get("gen_ai.conversation.id") == "gen-env") is written
    assert bool(found) is written
