"""The turn rule on LlamaIndex calls: a web request's root span shows the turn's input and output.

Each test opens an HTTP server span as a web framework would and enters the session inside it;
LlamaIndex runs its real chat, streaming, agent and query code over llama-index-core's mock
models (and, where llama-index-llms-openai is installed, over OpenAI replayed from
``cassettes/llama_index`` with convotel's OpenAI instrumentor active too).
``SessionSpanProcessor`` runs on the provider, before the exporter.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.base.llms.types import ImageBlock, TextBlock
from llama_index.core.llms import ChatMessage, MockLLM
from llama_index_spans import KIND, FinishedSpans, attributes
from opentelemetry import trace as trace_api
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from test_llama_index_agent import weather_agent
from turn_text_support import assert_no_tracing_warnings, llm_spans, root_of

from convotel import TraceConfig, using_session, using_user
from convotel.config import REDACTED_VALUE
from convotel.llama_index import LlamaIndexInstrumentor

INPUT, OUTPUT = "input.value", "output.value"
SESSION, USER = "session.id", "user.id"
QUESTION = "What is the capital of France?"
HISTORY = [
    ChatMessage(role="system", content="Be brief."),
    ChatMessage(role="user", content="What is the capital of Spain?"),
    ChatMessage(role="assistant", content="Madrid."),
    ChatMessage(role="user", content=QUESTION),
]
CASSETTES = Path(__file__).resolve().parents[2] / "cassettes" / "llama_index"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # its parent package (llama_index.llms) is missing
        return False


HAS_LLAMA_INDEX_OPENAI = _installed("llama_index.llms.openai")


@pytest.fixture
def tracer_provider(session_tracer_provider: TracerProvider) -> TracerProvider:
    """The folder's instrumentation traces through the web service's provider."""
    return session_tracer_provider


@pytest.fixture
def echo_llm() -> MockLLM:
    """A mock model streaming its prompt back character by character.

    (``MockLLM(max_tokens=n)`` streams one word more than its final message holds.)
    """
    return MockLLM()


def test_chat_root_shows_the_newest_user_message_and_the_reply_and_joins_the_session(
    spans: FinishedSpans, mock_llm: MockLLM, tracer: trace_api.Tracer
) -> None:
    with (
        tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER),
        using_session("li-1"),
        using_user("u-1"),
    ):
        response = mock_llm.chat(HISTORY)

    root = root_of(spans)
    assert root[INPUT] == QUESTION
    assert root[OUTPUT] == response.message.content
    assert root[OUTPUT]  # MockLLM answers "text text ..."
    assert root["input.mime_type"] == root["output.mime_type"] == "text/plain"
    assert (root[SESSION], root[USER]) == ("li-1", "u-1")


def test_streamed_chat_reply_is_the_streamed_text(
    spans: FinishedSpans, echo_llm: MockLLM, tracer: trace_api.Tracer
) -> None:
    with tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER), using_session("li-s"):
        streamed = "".join(chunk.delta or "" for chunk in echo_llm.stream_chat(HISTORY))

    root = root_of(spans)
    assert streamed
    assert (root[INPUT], root[OUTPUT], root[SESSION]) == (QUESTION, streamed, "li-s")


async def test_async_streamed_chat_reply_is_the_streamed_text(
    spans: FinishedSpans, echo_llm: MockLLM, tracer: trace_api.Tracer
) -> None:
    with tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER):
        stream = await echo_llm.astream_chat(HISTORY)
        streamed = "".join([chunk.delta or "" async for chunk in stream])

    root = root_of(spans)
    assert streamed
    assert (root[INPUT], root[OUTPUT]) == (QUESTION, streamed)


def test_multimodal_message_shows_its_text_parts_joined(
    spans: FinishedSpans, mock_llm: MockLLM, tracer: trace_api.Tracer
) -> None:
    blocks: Any = [
        TextBlock(text="What is in this picture?"),
        ImageBlock(url="https://example.com/eiffel.jpg"),
        TextBlock(text="Answer in one word."),
    ]
    with tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER):
        mock_llm.chat([*HISTORY[:3], ChatMessage(role="user", blocks=blocks)])

    root = root_of(spans)
    assert root[INPUT] == "What is in this picture?\nAnswer in one word."


async def test_agent_turn_takes_the_first_calls_input_and_the_last_calls_reply(
    spans: FinishedSpans, tracer: trace_api.Tracer
) -> None:
    with (
        tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER),
        using_session("li-agent"),
    ):
        result = await weather_agent().run("What is the weather in Paris?")

    assert len(llm_spans(spans)) == 2  # the tool call, then the answer
    root = root_of(spans)
    assert root[INPUT] == "What is the weather in Paris?"
    assert root[OUTPUT] == str(result) == "Answer: Sunny in Paris"
    assert root[SESSION] == "li-agent"


@pytest.mark.parametrize("streaming", [False, True])
def test_query_engine_turn_input_is_the_question_not_the_rendered_prompt(
    spans: FinishedSpans, index: Any, echo_llm: MockLLM, tracer: trace_api.Tracer, streaming: bool
) -> None:
    with tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER):
        response = index.as_query_engine(llm=echo_llm, streaming=streaming).query(QUESTION)
        answer = "".join(response.response_gen) if streaming else str(response)

    (llm,) = llm_spans(spans)
    rendered = attributes(llm)["llm.input_messages.0.message.content"]
    assert rendered.startswith("Context information is below.")
    assert QUESTION in rendered
    root = root_of(spans)
    assert root[INPUT] == QUESTION
    assert root[OUTPUT] == answer


@pytest.mark.parametrize(
    ("config", "expected_input", "expected_output"),
    [
        (TraceConfig(hide_inputs=True, hide_outputs=True), REDACTED_VALUE, REDACTED_VALUE),
        (TraceConfig(hide_input_text=True, hide_output_text=True), REDACTED_VALUE, REDACTED_VALUE),
        (TraceConfig(hide_outputs=True), QUESTION, REDACTED_VALUE),
    ],
)
def test_hidden_text_never_reaches_the_root(
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    mock_llm: MockLLM,
    tracer: trace_api.Tracer,
    config: TraceConfig,
    expected_input: str | None,
    expected_output: str | None,
) -> None:
    instrumentor = LlamaIndexInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, config=config)
    try:
        with tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER):
            mock_llm.chat(HISTORY)
    finally:
        instrumentor.uninstrument()

    root = root_of(FinishedSpans(span_exporter))
    assert (root.get(INPUT), root.get(OUTPUT)) == (expected_input, expected_output)
    if config.hide_inputs or config.hide_input_text:
        assert "Spain" not in repr(root)
        assert "France" not in repr(root)


async def test_hidden_input_messages_of_an_agent_reach_no_model_span_and_not_the_root(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter, tracer: trace_api.Tracer
) -> None:
    # The model calls inside a workflow step carry the step's tags; the step's input summary
    # (a repr of the messages) must not become their input.value.
    instrumentor = LlamaIndexInstrumentor()
    instrumentor.instrument(
        tracer_provider=tracer_provider, config=TraceConfig(hide_input_messages=True)
    )
    try:
        with tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER):
            await weather_agent().run("What is the weather in Paris?")
    finally:
        instrumentor.uninstrument()

    spans = FinishedSpans(span_exporter)
    models = llm_spans(spans)
    assert len(models) == 2
    for model in models:
        assert not any(key.startswith("llm.input_messages") for key in attributes(model))
        assert "ChatMessage(" not in str(attributes(model).get(INPUT, ""))  # no repr of them
    assert "ChatMessage(" not in str(root_of(spans).get(INPUT, ""))


@pytest.mark.parametrize("processor_options", [{"turn_text": False}])
def test_turn_text_off_writes_no_text_on_the_root(
    spans: FinishedSpans, mock_llm: MockLLM, tracer: trace_api.Tracer
) -> None:
    with tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER), using_session("li-off"):
        mock_llm.chat(HISTORY)

    root = root_of(spans)
    assert INPUT not in root
    assert OUTPUT not in root
    assert root[SESSION] == "li-off"


@pytest.mark.parametrize("processor_options", [{"join_trace": False}])
def test_join_trace_off_leaves_the_root_out_of_the_session(
    spans: FinishedSpans, mock_llm: MockLLM, tracer: trace_api.Tracer
) -> None:
    with tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER), using_session("li-no"):
        mock_llm.chat(HISTORY)

    root = root_of(spans)
    assert SESSION not in root
    assert root[INPUT] == QUESTION
    assert attributes(llm_spans(spans)[0])[SESSION] == "li-no"


def test_a_model_call_that_is_its_traces_root_gets_nothing_written(
    spans: FinishedSpans, mock_llm: MockLLM, caplog: pytest.LogCaptureFixture
) -> None:
    mock_llm.chat(HISTORY)

    (span,) = spans.all()
    assert span.parent is None
    assert attributes(span)[INPUT] == QUESTION  # as the adapter recorded it: nothing added
    assert_no_tracing_warnings(caplog)


def test_a_stream_read_after_its_root_ended_writes_nothing_and_breaks_nothing(
    spans: FinishedSpans,
    echo_llm: MockLLM,
    tracer: trace_api.Tracer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER):
        stream = echo_llm.stream_chat(HISTORY)
    streamed = "".join(chunk.delta or "" for chunk in stream)

    assert streamed
    root = root_of(spans)
    assert INPUT not in root
    assert OUTPUT not in root
    assert attributes(llm_spans(spans)[0])[OUTPUT] == streamed
    assert_no_tracing_warnings(caplog)


# --- LlamaIndex over OpenAI: the framework span and the provider span --------------------------

openai_only = pytest.mark.skipif(
    not HAS_LLAMA_INDEX_OPENAI, reason="llama-index-llms-openai is not installed"
)


@pytest.fixture
def openai_llm() -> Any:
    from llama_index.llms.openai import OpenAI

    return OpenAI(
        model="gpt-4o-mini",
        api_key="sk-test-not-a-real-key",
        max_retries=0,
        additional_kwargs={"stream_options": {"include_usage": True}},
    )


@pytest.fixture
def both_instrumented(tracer_provider: TracerProvider, spans: FinishedSpans) -> Iterator[None]:
    from convotel.openai import OpenAIInstrumentor

    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    yield
    instrumentor.uninstrument()


def openai_cassette(name: str) -> Any:
    import vcr  # type: ignore[import-untyped]

    replay = vcr.VCR(
        cassette_library_dir=str(CASSETTES),
        record_mode="none",
        match_on=["method", "scheme", "host", "path"],
        decode_compressed_response=True,
    )
    return replay.use_cassette(f"{name}.yaml", allow_playback_repeats=False)


@openai_only
@pytest.mark.usefixtures("both_instrumented")
@pytest.mark.parametrize("stream", [False, True])
def test_over_openai_one_model_call_writes_the_turn_once(
    spans: FinishedSpans, openai_llm: Any, tracer: trace_api.Tracer, stream: bool
) -> None:
    with (
        openai_cassette("stream_chat" if stream else "chat"),
        tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER),
        using_session("li-oa"),
    ):
        if stream:
            reply = "".join(chunk.delta or "" for chunk in openai_llm.stream_chat(HISTORY))
        else:
            reply = openai_llm.chat(HISTORY).message.content

    assert len(llm_spans(spans)) == 1  # the provider's span; LlamaIndex's became a CHAIN
    framework = [span for span in spans.all() if span.name.startswith("OpenAI.")]
    assert [attributes(span)[KIND] for span in framework] == ["CHAIN"]
    root = root_of(spans)
    assert (root[INPUT], root[OUTPUT], root[SESSION]) == (QUESTION, reply, "li-oa")
    assert reply == "The capital of France is Paris."


@openai_only
@pytest.mark.usefixtures("both_instrumented")
def test_over_openai_a_query_shows_its_question_once(
    spans: FinishedSpans, openai_llm: Any, tracer: trace_api.Tracer
) -> None:
    from llama_index.core import Document, VectorStoreIndex
    from llama_index.embeddings.openai import OpenAIEmbedding  # type: ignore[import-untyped]

    embed_model = OpenAIEmbedding(
        model="text-embedding-3-small", api_key="sk-test-not-a-real-key", max_retries=0
    )
    with openai_cassette("query_engine"):
        index = VectorStoreIndex.from_documents(
            [
                Document(text="Paris is the capital of France.", id_="doc-paris"),
                Document(text="Berlin is the capital of Germany.", id_="doc-berlin"),
            ],
            embed_model=embed_model,
        )
        spans.exporter.clear()
        with tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER):
            response = index.as_query_engine(llm=openai_llm, similarity_top_k=1).query(QUESTION)

    (llm,) = llm_spans(spans)  # the provider's span, under LlamaIndex's
    assert attributes(llm)["input.value"] != QUESTION  # the model saw the rendered prompt
    root = root_of(spans)
    assert (root[INPUT], root[OUTPUT]) == (QUESTION, str(response))
