"""llama-index-llms-openai and -embeddings-openai replayed from cassettes through the SDK's default
transport (``record_mode="none"``: a request the cassette lacks fails the test).

The cassettes are written by ``record_cassettes.py`` beside this file; these clients are built with
the same settings. With convotel's OpenAI instrumentor also active, each model call must still be
one LLM span with tokens (the LlamaIndex span becomes CHAIN).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llama_index.llms.openai")
pytest.importorskip("llama_index.embeddings.openai")

import vcr  # type: ignore[import-untyped]
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.llms import ChatMessage
from llama_index.core.tools import FunctionTool
from llama_index.embeddings.openai import OpenAIEmbedding  # type: ignore[import-untyped]
from llama_index.llms.openai import OpenAI
from llama_index_spans import KIND, FinishedSpans, attributes, token_stream
from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import StatusCode

from convotel import using_session, using_user
from convotel.spans import STREAM_OUTCOME, TIME_TO_FIRST_TOKEN_MS

CASSETTES = Path(__file__).resolve().parents[2] / "cassettes" / "llama_index"
API_KEY = "sk-test-not-a-real-key"
QUESTION = "What is the capital of France?"
DOCUMENTS = [
    ("doc-paris", "Paris is the capital of France."),
    ("doc-berlin", "Berlin is the capital of Germany."),
]
REPLAY = vcr.VCR(
    cassette_library_dir=str(CASSETTES),
    record_mode="none",
    match_on=["method", "scheme", "host", "path", "body"],
    decode_compressed_response=True,
)


@pytest.fixture
def llm() -> OpenAI:
    return OpenAI(
        model="gpt-4o-mini",
        api_key=API_KEY,
        max_retries=0,
        additional_kwargs={"stream_options": {"include_usage": True}},
    )


@pytest.fixture
def embed_model() -> OpenAIEmbedding:
    return OpenAIEmbedding(model="text-embedding-3-small", api_key=API_KEY, max_retries=0)


def cassette(name: str) -> Any:
    return REPLAY.use_cassette(f"{name}.yaml", allow_playback_repeats=False)


def build_index(embed_model: OpenAIEmbedding) -> VectorStoreIndex:
    documents = [Document(text=text, id_=doc_id) for doc_id, text in DOCUMENTS]
    return VectorStoreIndex.from_documents(documents, embed_model=embed_model)


def get_weather(city: str) -> str:
    """Report the current weather in a city."""
    return f"Sunny and 24 degrees in {city}."


def no_secret_recorded(spans: FinishedSpans) -> None:
    for span in spans.all():
        assert API_KEY not in json.dumps(dict(span.attributes or {}), default=str)


def test_chat_is_one_llm_span_with_model_messages_and_tokens(
    spans: FinishedSpans, llm: OpenAI
) -> None:
    with cassette("chat") as played, using_session("oa-1"), using_user("u-1"):
        response = llm.chat([ChatMessage(role="user", content=QUESTION)])

    assert played.all_played
    (span,) = spans.all()
    found = attributes(span)
    assert span.name == "OpenAI.chat"
    assert found[KIND] == "LLM"
    assert found["llm.model_name"] == "gpt-4o-mini"
    assert found["llm.provider"] == "openai"
    assert found["llm.system"] == "openai"
    assert json.loads(found["llm.invocation_parameters"])["temperature"] == 0.1
    assert found["llm.input_messages.0.message.content"] == QUESTION
    assert found["llm.output_messages.0.message.content"] == response.message.content
    assert (
        found["llm.token_count.prompt"],
        found["llm.token_count.completion"],
        found["llm.token_count.total"],
    ) == (14, 7, 21)
    assert found["session.id"] == "oa-1"
    no_secret_recorded(spans)
    spans.captured().assert_session("oa-1", user="u-1", llm_calls=1, tokens=(14, 7, 21))


def test_streamed_chat_records_tokens_from_the_usage_chunk(
    spans: FinishedSpans, llm: OpenAI
) -> None:
    with cassette("stream_chat") as played, using_session("oa-2"):
        chunks = list(llm.stream_chat([ChatMessage(role="user", content=QUESTION)]))

    assert played.all_played
    (span,) = spans.all()
    found = attributes(span)
    assert found[STREAM_OUTCOME] == "completed"
    assert TIME_TO_FIRST_TOKEN_MS in found
    assert found["output.value"] == chunks[-1].message.content == "The capital of France is Paris."
    assert found["llm.token_count.total"] == 21
    spans.captured().assert_session("oa-2", tokens=(14, 7, 21))


async def test_async_chat_records_tokens(spans: FinishedSpans, llm: OpenAI) -> None:
    with cassette("chat"), using_session("oa-async"):
        await llm.achat([ChatMessage(role="user", content=QUESTION)])

    (span,) = spans.all()
    assert span.name == "OpenAI.achat"
    spans.captured().assert_session("oa-async", tokens=(14, 7, 21))


def test_http_error_propagates_unchanged_and_marks_the_span(
    spans: FinishedSpans, llm: OpenAI
) -> None:
    import openai

    with (
        cassette("chat_http_error"),
        using_session("oa-err"),
        pytest.raises(openai.BadRequestError) as raised,
    ):
        llm.chat([ChatMessage(role="user", content=QUESTION)])

    (span,) = spans.all()
    assert span.status.status_code is StatusCode.ERROR
    assert attributes(span)["http.response.status_code"] == 400
    assert span.events[0].attributes is not None
    assert span.events[0].attributes["exception.message"] == str(raised.value)
    spans.captured().assert_session("oa-err", errors=1)


def test_malformed_stream_raises_to_the_app_and_ends_the_span_in_error(
    spans: FinishedSpans, llm: OpenAI
) -> None:
    with cassette("stream_chat_malformed"), pytest.raises(json.JSONDecodeError):
        for _chunk in llm.stream_chat([ChatMessage(role="user", content=QUESTION)]):
            pass

    (span,) = spans.all()
    assert span.status.status_code is StatusCode.ERROR
    assert attributes(span)[STREAM_OUTCOME] == "error"


def test_query_engine_over_openai_counts_the_tokens_once(
    spans: FinishedSpans, llm: OpenAI, embed_model: OpenAIEmbedding
) -> None:
    with cassette("query_engine") as played:
        index = build_index(embed_model)
        spans.exporter.clear()
        with using_session("rag-1"), using_user("u-9"):
            response = index.as_query_engine(llm=llm, similarity_top_k=1).query(QUESTION)

    assert played.all_played
    assert str(response) == "Paris is the capital of France."
    retriever = spans.one("VectorIndexRetriever.retrieve")
    assert "Paris" in attributes(retriever)["retrieval.documents.0.document.content"]
    embedding = spans.one("OpenAIEmbedding.get_query_embedding")
    assert attributes(embedding)["embedding.model_name"] == "text-embedding-3-small"
    (llm_span,) = spans.of_kind("LLM")
    assert attributes(llm_span)["llm.token_count.prompt_details.cache_read"] == 64
    captured = spans.captured()
    captured.assert_every_span_in_a_session()
    captured.assert_session("rag-1", user="u-9", turns=1, llm_calls=1, tokens=(152, 8, 160))


def test_streamed_query_over_openai_stays_in_its_trace(
    spans: FinishedSpans, llm: OpenAI, embed_model: OpenAIEmbedding
) -> None:
    with cassette("query_engine_stream"):
        index = build_index(embed_model)
        spans.exporter.clear()
        with using_session("rag-2"):
            response = index.as_query_engine(llm=llm, similarity_top_k=1, streaming=True).query(
                QUESTION
            )
        text = "".join(token_stream(response))

    assert text == "Paris is the capital of France."
    query = spans.one("RetrieverQueryEngine.query")
    assert attributes(query)["output.value"] == text
    spans.captured().assert_session("rag-2", turns=1, llm_calls=1, tokens=(152, 8, 160))


async def test_agent_with_a_tool_call_over_openai(spans: FinishedSpans, llm: OpenAI) -> None:
    agent = FunctionAgent(
        tools=[FunctionTool.from_defaults(get_weather)],
        llm=llm,
        system_prompt="You answer weather questions with the get_weather tool.",
    )
    with cassette("agent_tool_call") as played, using_session("agent-oa"), using_user("u-3"):
        result = await agent.run("What is the weather in Paris?")

    assert played.all_played
    assert str(result) == "It is sunny and 24 degrees in Paris."
    first, _ = spans.of_kind("LLM")
    assert attributes(first)[
        "llm.output_messages.0.message.tool_calls.0.tool_call.function.name"
    ] == ("get_weather")
    assert json.loads(attributes(first)["llm.tools.0.tool.json_schema"])["type"] == "function"
    (tool,) = spans.of_kind("TOOL")
    assert attributes(tool)["output.value"] == "Sunny and 24 degrees in Paris."
    assert attributes(spans.one("FunctionAgent.run"))[KIND] == "AGENT"
    captured = spans.captured()
    captured.assert_every_span_in_a_session()
    captured.assert_session("agent-oa", user="u-3", turns=1, llm_calls=2, tokens=(205, 26, 231))


# --- with convotel's OpenAI instrumentor active too ------------------------------------------


@pytest.fixture
def openai_instrumented(tracer_provider: TracerProvider, spans: FinishedSpans) -> Iterator[None]:
    if importlib.util.find_spec("convotel.openai") is None:
        pytest.skip("convotel-openai is not installed")
    from convotel.openai import OpenAIInstrumentor

    instrumentor = OpenAIInstrumentor()
    # llama-index-llms-openai pins openai < 3; convotel-openai declares openai >= 3.
    instrumentor.instrument(tracer_provider=tracer_provider, skip_dep_check=True)
    yield
    instrumentor.uninstrument()


def only_llm_span_below(spans: FinishedSpans, framework_name: str) -> None:
    (llm_span,) = spans.of_kind("LLM")
    framework = spans.one(framework_name)
    assert spans.parent(llm_span) is framework, "the provider span nests under LlamaIndex's"
    assert attributes(framework)[KIND] == "CHAIN"
    assert not any(key.startswith("llm.token_count") for key in attributes(framework))


@pytest.mark.usefixtures("openai_instrumented")
def test_with_both_instrumentors_a_chat_is_one_llm_span(spans: FinishedSpans, llm: OpenAI) -> None:
    with cassette("chat"), using_session("both-1"):
        llm.chat([ChatMessage(role="user", content=QUESTION)])

    only_llm_span_below(spans, "OpenAI.chat")
    spans.captured().assert_session("both-1", llm_calls=1, tokens=(14, 7, 21))


@pytest.mark.usefixtures("openai_instrumented")
def test_with_both_instrumentors_a_stream_is_one_llm_span(
    spans: FinishedSpans, llm: OpenAI
) -> None:
    with cassette("stream_chat"), using_session("both-2"):
        stream = llm.stream_chat([ChatMessage(role="user", content=QUESTION)])
        for _chunk in stream:
            pass

    only_llm_span_below(spans, "OpenAI.stream_chat")
    spans.captured().assert_session("both-2", llm_calls=1, tokens=(14, 7, 21))


@pytest.mark.usefixtures("openai_instrumented")
def test_with_both_instrumentors_a_stream_not_asking_for_usage_counts_its_tokens_once(
    spans: FinishedSpans, llm: OpenAI
) -> None:
    """convotel asks for the usage LlamaIndex did not ask for (the cassette's request has it)
    and hides the usage chunk from LlamaIndex: its span has no tokens to count twice."""
    with cassette("stream_chat"):
        asked = list(llm.stream_chat([ChatMessage(role="user", content=QUESTION)]))
    spans.exporter.clear()
    default_llm = OpenAI(model="gpt-4o-mini", api_key=API_KEY, max_retries=0)
    with cassette("stream_chat") as played, using_session("both-default"):
        chunks = list(default_llm.stream_chat([ChatMessage(role="user", content=QUESTION)]))

    assert played.all_played
    assert [c.delta for c in chunks] == [c.delta for c in asked][:-1]  # no usage-only chunk
    assert chunks[-1].message.content == asked[-1].message.content
    assert all(chunk.raw.usage is None for chunk in chunks)  # LlamaIndex saw no usage
    only_llm_span_below(spans, "OpenAI.stream_chat")
    spans.captured().assert_session("both-default", llm_calls=1, tokens=(14, 7, 21))


@pytest.mark.usefixtures("openai_instrumented")
def test_with_both_instrumentors_a_stream_consumed_after_its_session_block_nests_under_its_call(
    spans: FinishedSpans, llm: OpenAI
) -> None:
    with cassette("stream_chat"):
        with using_session("both-late"):
            stream = llm.stream_chat([ChatMessage(role="user", content=QUESTION)])
        caller = context_api.get_current()
        assert trace_api.get_current_span() is trace_api.INVALID_SPAN
        for _chunk in stream:  # the HTTP request is made at the first step
            assert context_api.get_current() is caller, "no step leaves its context behind"

    only_llm_span_below(spans, "OpenAI.stream_chat")
    spans.captured().assert_session("both-late", llm_calls=1, tokens=(14, 7, 21))


@pytest.mark.usefixtures("openai_instrumented")
async def test_with_both_instrumentors_an_async_stream_is_one_llm_span_and_leaks_nothing(
    spans: FinishedSpans, llm: OpenAI
) -> None:
    with cassette("stream_chat"), using_session("both-async"):
        caller = context_api.get_current()
        stream = await llm.astream_chat([ChatMessage(role="user", content=QUESTION)])
        assert context_api.get_current() is caller
        async for _chunk in stream:
            assert context_api.get_current() is caller

    only_llm_span_below(spans, "OpenAI.astream_chat")
    spans.captured().assert_session("both-async", llm_calls=1, tokens=(14, 7, 21))


@pytest.mark.usefixtures("openai_instrumented")
async def test_with_both_instrumentors_an_agent_counts_each_call_once(
    spans: FinishedSpans, llm: OpenAI
) -> None:
    agent = FunctionAgent(
        tools=[FunctionTool.from_defaults(get_weather)],
        llm=llm,
        system_prompt="You answer weather questions with the get_weather tool.",
    )
    with cassette("agent_tool_call"), using_session("both-3"):
        await agent.run("What is the weather in Paris?")

    captured = spans.captured()
    captured.assert_every_span_in_a_session()
    captured.assert_session("both-3", llm_calls=2, tokens=(205, 26, 231))


@pytest.mark.usefixtures("openai_instrumented")
def test_with_both_instrumentors_a_query_engine_counts_tokens_once(
    spans: FinishedSpans, llm: OpenAI, embed_model: OpenAIEmbedding
) -> None:
    with cassette("query_engine_stream"):
        index = build_index(embed_model)
        spans.exporter.clear()
        with using_session("both-4"):
            response = index.as_query_engine(llm=llm, similarity_top_k=1, streaming=True).query(
                QUESTION
            )
        "".join(token_stream(response))

    captured = spans.captured()
    captured.assert_every_span_in_a_session()
    captured.assert_session("both-4", llm_calls=1, tokens=(152, 8, 160))


def test_request_missing_from_the_cassette_fails_instead_of_reaching_the_network(
    spans: FinishedSpans, llm: OpenAI
) -> None:
    with cassette("chat"), pytest.raises(Exception) as raised:  # noqa: PT011
        llm.chat([ChatMessage(role="user", content="A question nobody recorded")])

    chain: list[BaseException] = []
    error: BaseException | None = raised.value
    while error is not None:  # the SDK wraps the transport's error in APIConnectionError
        chain.append(error)
        error = error.__cause__ or error.__context__
    assert any("CannotOverwriteExistingCassetteException" in type(e).__name__ for e in chain)
    (span,) = spans.all()
    assert span.status.status_code is StatusCode.ERROR
