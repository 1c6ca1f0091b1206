"""The OpenTelemetry GenAI names on LlamaIndex spans (``TraceConfig(enable_genai_semconv=True)``).

A LlamaIndex chat model calling the OpenAI SDK (the demo's ``OpenAIClientLLM``) talks to the
loopback ``FakeLLMServer``: alone, LlamaIndex's LLM span carries the names and the usage; with
convotel's OpenAI instrumentor too, the provider span claims the call and the LlamaIndex span
(now CHAIN) must not count ``gen_ai.usage.*`` a second time. ``llama-index-llms-openai`` (run by
``nox -s tests_llama_index_openai``) is replayed from its cassettes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.llms import ChatMessage, MockLLM
from llama_index_spans import KIND, FinishedSpans
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv._incubating.attributes.gen_ai_attributes import (
    GenAiOperationNameValues,
    GenAiProviderNameValues,
)

from convotel import TraceConfig, using_session
from convotel.demo.fake_server import FakeLLMServer
from convotel.demo.llama_index_llm import OpenAIClientLLM
from convotel.instrumentor import ConvotelInstrumentor
from convotel.llama_index import LlamaIndexInstrumentor
from convotel.openai import OpenAIInstrumentor

CHAT = GenAiOperationNameValues.CHAT.value
OPENAI = GenAiProviderNameValues.OPENAI.value
MODEL = "gpt-4o-mini"
SNAPSHOT = "gpt-4o-mini-2024-07-18"  # the model the server (and the cassettes) say answered
QUESTION = "What is the capital of France?"
GENAI_ON = TraceConfig(enable_genai_semconv=True)
#: Instruments LlamaIndex (and OpenAI if asked) with a TraceConfig (``None``: the environment).
Instrument = Callable[..., FinishedSpans]


def genai_of(span: ReadableSpan) -> dict[str, Any]:
    """The span's ``gen_ai.*`` attributes (sequences as lists)."""
    return {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in (span.attributes or {}).items()
        if key.startswith("gen_ai.")
    }


@pytest.fixture
def instrument(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> Iterator[Instrument]:
    started: list[ConvotelInstrumentor] = []

    def start(config: TraceConfig | None, *, with_openai: bool = False) -> FinishedSpans:
        llama_index = LlamaIndexInstrumentor()
        llama_index.instrument(tracer_provider=tracer_provider, config=config)
        started.append(llama_index)
        if with_openai:
            provider = OpenAIInstrumentor()
            provider.instrument(tracer_provider=tracer_provider, config=config)
            started.append(provider)
        return FinishedSpans(span_exporter)

    yield start
    for instrumentor in reversed(started):
        instrumentor.uninstrument()


@pytest.fixture(scope="module")
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as running:
        yield running


@pytest.fixture
def llm(server: FakeLLMServer) -> OpenAIClientLLM:
    client = openai.OpenAI(base_url=server.openai_base_url, api_key="demo", max_retries=0)
    return OpenAIClientLLM(client, model=MODEL, max_tokens=32)


def ask(llm: OpenAIClientLLM, *, stream: bool) -> None:
    messages = [ChatMessage(role="user", content=QUESTION)]
    if stream:
        for _chunk in llm.stream_chat(messages):
            pass
    else:
        llm.chat(messages)


@pytest.mark.parametrize("stream", [False, True], ids=["chat", "stream_chat"])
def test_alone_the_llama_index_llm_span_carries_the_names_and_the_usage(
    instrument: Instrument, llm: OpenAIClientLLM, stream: bool
) -> None:
    spans = instrument(GENAI_ON)
    with using_session("gl-alone"):
        ask(llm, stream=stream)

    prompt, completion = llm.take_usage()  # what the server billed
    assert prompt > 0
    assert completion > 0
    (span,) = spans.all()
    found = genai_of(span)
    assert found.pop("gen_ai.usage.reasoning.output_tokens", 0) == 0
    assert found == {
        "gen_ai.operation.name": CHAT,
        "gen_ai.conversation.id": "gl-alone",
        "gen_ai.request.model": MODEL,
        "gen_ai.response.model": SNAPSHOT,
        "gen_ai.usage.input_tokens": prompt,
        "gen_ai.usage.output_tokens": completion,
    }, "a custom LlamaIndex LLM names no provider"


@pytest.mark.parametrize("stream", [False, True], ids=["chat", "stream_chat"])
def test_with_the_openai_instrumentor_the_usage_is_written_once_by_the_provider_span(
    instrument: Instrument, llm: OpenAIClientLLM, stream: bool
) -> None:
    spans = instrument(GENAI_ON, with_openai=True)
    with using_session("gl-both"):
        ask(llm, stream=stream)

    prompt, completion = llm.take_usage()
    (provider,) = spans.of_kind("LLM")
    framework = spans.parent(provider)
    assert framework is not None
    assert (framework.attributes or {})[KIND] == "CHAIN"
    found = genai_of(provider)
    assert found["gen_ai.operation.name"] == CHAT
    assert found["gen_ai.provider.name"] == OPENAI
    assert found["gen_ai.conversation.id"] == "gl-both"
    assert found["gen_ai.request.model"] == MODEL
    assert found["gen_ai.response.model"] == SNAPSHOT
    assert (found["gen_ai.usage.input_tokens"], found["gen_ai.usage.output_tokens"]) == (
        prompt,
        completion,
    )
    assert genai_of(framework) == {
        "gen_ai.conversation.id": "gl-both",
        "gen_ai.request.model": MODEL,
        "gen_ai.response.model": SNAPSHOT,
    }, "the CHAIN span is no model call: no operation, no usage"
    input_tokens = [genai_of(s).get("gen_ai.usage.input_tokens", 0) for s in spans.all()]
    assert sum(input_tokens) == prompt


def test_query_engine_names_each_step_by_its_operation(
    instrument: Instrument, mock_embedding: Any, index: VectorStoreIndex
) -> None:
    spans = instrument(GENAI_ON)
    spans.exporter.clear()
    with using_session("gl-rag"):
        index.as_query_engine(llm=MockLLM(max_tokens=4), similarity_top_k=1).query(QUESTION)

    operations = {span.name: genai_of(span).get("gen_ai.operation.name") for span in spans.all()}
    assert operations["MockEmbedding.get_query_embedding"] == "embeddings"
    assert operations["VectorIndexRetriever.retrieve"] == "retrieval"
    assert operations["MockLLM.complete"] == CHAT
    assert operations["RetrieverQueryEngine.query"] is None
    assert {genai_of(s)["gen_ai.conversation.id"] for s in spans.all()} == {"gl-rag"}


def test_switched_off_no_genai_name_is_written(
    instrument: Instrument, llm: OpenAIClientLLM, index: VectorStoreIndex
) -> None:
    spans = instrument(TraceConfig(enable_genai_semconv=False), with_openai=True)
    spans.exporter.clear()
    with using_session("gl-off"):
        ask(llm, stream=False)
        ask(llm, stream=True)
        index.as_query_engine(llm=MockLLM(max_tokens=4), similarity_top_k=1).query(QUESTION)

    finished = spans.all()
    assert len(spans.of_kind("LLM")) == 3
    assert {(s.attributes or {})["session.id"] for s in finished} == {"gl-off"}
    assert [s.name for s in finished if genai_of(s)] == []


def test_the_environment_variable_switches_it_on(
    instrument: Instrument, llm: OpenAIClientLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENINFERENCE_ENABLE_GENAI_SEMCONV", "true")
    spans = instrument(None)
    with using_session("gl-env"):
        ask(llm, stream=False)

    (span,) = spans.all()
    assert genai_of(span)["gen_ai.conversation.id"] == "gl-env"
    assert genai_of(span)["gen_ai.operation.name"] == CHAT


# --- llama-index-llms-openai, replayed from cassettes (nox -s tests_llama_index_openai) ---------

CASSETTES = Path(__file__).resolve().parents[2] / "cassettes" / "llama_index"


@pytest.fixture
def llama_openai() -> Any:
    """LlamaIndex's own OpenAI LLM, as ``record_cassettes.py`` built it."""
    llms_openai = pytest.importorskip("llama_index.llms.openai")
    return llms_openai.OpenAI(
        model=MODEL,
        api_key="sk-test-not-a-real-key",
        max_retries=0,
        additional_kwargs={"stream_options": {"include_usage": True}},
    )


def replay(name: str) -> Any:
    import vcr  # type: ignore[import-untyped]

    replayer = vcr.VCR(
        cassette_library_dir=str(CASSETTES),
        record_mode="none",
        match_on=["method", "scheme", "host", "path", "body"],
        decode_compressed_response=True,
    )
    return replayer.use_cassette(f"{name}.yaml", allow_playback_repeats=False)


@pytest.mark.parametrize("cassette", ["chat", "stream_chat"])
def test_llama_index_openai_llm_names_the_openai_provider(
    instrument: Instrument, llama_openai: Any, cassette: str
) -> None:
    spans = instrument(GENAI_ON)
    messages = [ChatMessage(role="user", content=QUESTION)]
    with replay(cassette) as played, using_session("gl-cassette"):
        if cassette == "chat":
            llama_openai.chat(messages)
        else:
            list(llama_openai.stream_chat(messages))

    assert played.all_played
    (span,) = spans.all()
    found = genai_of(span)
    assert found["gen_ai.operation.name"] == CHAT
    assert found["gen_ai.provider.name"] == OPENAI
    assert found["gen_ai.conversation.id"] == "gl-cassette"
    assert found["gen_ai.request.model"] == MODEL
    assert found["gen_ai.response.model"] == SNAPSHOT
    assert (found["gen_ai.usage.input_tokens"], found["gen_ai.usage.output_tokens"]) == (14, 7)


def test_llama_index_openai_with_both_instrumentors_counts_the_usage_once(
    instrument: Instrument, llama_openai: Any
) -> None:
    spans = instrument(GENAI_ON, with_openai=True)
    with replay("chat"), using_session("gl-cassette-both"):
        llama_openai.chat([ChatMessage(role="user", content=QUESTION)])

    (provider,) = spans.of_kind("LLM")
    framework = spans.one("OpenAI.chat")
    assert spans.parent(provider) is framework
    assert genai_of(provider)["gen_ai.provider.name"] == OPENAI
    assert genai_of(provider)["gen_ai.usage.input_tokens"] == 14
    assert not [key for key in genai_of(framework) if key.startswith("gen_ai.usage.")]
    assert "gen_ai.operation.name" not in genai_of(framework)
