"""Span shape of LlamaIndex pipelines built on llama-index-core's mock LLM and embedding."""

from __future__ import annotations

import gc
import json
from typing import Any

import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.base.llms.types import (
    ChatMessage,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.llms import CustomLLM, MockLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.postprocessor import LLMRerank
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.prompts import PromptTemplate
from llama_index.core.schema import NodeWithScore, QueryBundle
from llama_index.core.tools import FunctionTool
from llama_index_instrumentation import get_dispatcher
from llama_index_spans import FinishedSpans, async_token_stream, attributes, token_stream
from opentelemetry import context, trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.trace import StatusCode

from convotel import using_session, using_user
from convotel.llama_index import handlers
from convotel.spans import STREAM_OUTCOME, TIME_TO_FIRST_TOKEN_MS

KIND = "openinference.span.kind"
QUESTION = "What is the capital of France?"


class FailingLLM(CustomLLM):
    """A model whose calls fail, or whose stream fails after its first chunk."""

    error: Exception

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="failing-model")

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        raise self.error

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        def chunks() -> CompletionResponseGen:
            yield CompletionResponse(text="Par", delta="Par")
            raise self.error

        return chunks()


class ScriptedRerankLLM(CustomLLM):
    """Answers LLMRerank's prompt: the second document first."""

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="scripted-reranker")

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text="Doc: 2, Relevance: 9\nDoc: 1, Relevance: 4")

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        raise NotImplementedError


class EventReranker(BaseNodePostprocessor):
    """Reports its work the way integration rerankers (Cohere, sentence-transformers) do."""

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        dispatcher = get_dispatcher(__name__)
        dispatcher.event(ReRankStartEvent(query=query_bundle, nodes=nodes, top_n=1, model_name="m"))
        kept = nodes[-1:]
        dispatcher.event(ReRankEndEvent(nodes=kept))
        return kept


def get_weather(city: str, unit: str = "celsius") -> str:
    """Report the current weather in a city."""
    return f"Sunny, 24 degrees {unit} in {city}."


def test_query_engine_spans_nest_under_the_query_and_carry_the_session(
    spans: FinishedSpans, index: VectorStoreIndex, mock_llm: MockLLM
) -> None:
    with using_session("session-1"), using_user("user-1"):
        response = index.as_query_engine(llm=mock_llm, similarity_top_k=2).query(QUESTION)

    query = spans.one("RetrieverQueryEngine.query")
    assert query.parent is None
    assert attributes(query)[KIND] == "CHAIN"
    assert attributes(query)["input.value"] == QUESTION
    assert attributes(query)["output.value"] == str(response)
    assert not spans.named("RetrieverQueryEngine._query"), "one span per call, not per helper"
    retriever = spans.one("VectorIndexRetriever.retrieve")
    assert spans.parent(retriever) is query
    assert attributes(retriever)[KIND] == "RETRIEVER"
    retrieved = attributes(retriever)
    document_ids = {retrieved[f"retrieval.documents.{i}.document.id"] for i in (0, 1)}
    assert document_ids == set(index.docstore.docs)
    assert isinstance(retrieved["retrieval.documents.0.document.score"], float)
    assert "capital of" in retrieved["retrieval.documents.0.document.content"]
    embedding = spans.one("MockEmbedding.get_query_embedding")
    assert spans.parent(embedding) is retriever
    assert attributes(embedding)[KIND] == "EMBEDDING"
    assert attributes(embedding)["embedding.embeddings.0.embedding.text"] == QUESTION
    assert len(attributes(embedding)["embedding.embeddings.0.embedding.vector"]) == 4
    (llm,) = spans.of_kind("LLM")
    assert llm.name == "MockLLM.complete"
    assert attributes(llm)["output.value"] == str(response)
    assert QUESTION in attributes(llm)["input.value"]
    predict = spans.parent(llm)
    assert predict is not None
    assert predict.name == "MockLLM.predict"
    assert "{query_str}" in attributes(predict)["llm.prompt_template.template"]
    variables = json.loads(attributes(predict)["llm.prompt_template.variables"])
    assert variables["query_str"] == QUESTION
    assert {span.context.trace_id for span in spans.all()} == {query.context.trace_id}
    assert all(span.status.status_code is StatusCode.OK for span in spans.all())
    captured = spans.captured()
    captured.assert_every_span_in_a_session()
    captured.assert_session("session-1", user="user-1", turns=1, llm_calls=1, inputs=[QUESTION])


def test_chat_engine_turns_form_one_session(spans: FinishedSpans, mock_llm: MockLLM) -> None:
    engine = SimpleChatEngine.from_defaults(llm=mock_llm)
    with using_session("chat-1"), using_user("user-7"):
        engine.chat("Hello there")
        engine.chat("Tell me more")

    chats = spans.named("SimpleChatEngine.chat")
    assert [attributes(span)["input.value"] for span in chats] == ["Hello there", "Tell me more"]
    llm_spans = spans.of_kind("LLM")
    assert [span.name for span in llm_spans] == ["MockLLM.chat", "MockLLM.chat"]
    assert not spans.named("MockLLM.complete"), "chat() delegating to complete() is one model call"
    last = attributes(llm_spans[1])
    assert last["llm.input_messages.0.message.role"] == "user"
    assert last["llm.input_messages.2.message.content"] == "Tell me more"
    assert last["llm.output_messages.0.message.role"] == "assistant"
    spans.captured().assert_session(
        "chat-1", user="user-7", turns=2, llm_calls=2, inputs=["Hello there", "Tell me more"]
    )


def test_streamed_chat_engine_reply_ends_when_its_writer_has_consumed_the_stream(
    spans: FinishedSpans, mock_llm: MockLLM
) -> None:
    engine = SimpleChatEngine.from_defaults(llm=mock_llm)
    with using_session("chat-stream"), using_user("user-2"):
        reply = engine.stream_chat("Hello there")
        text = "".join(reply.response_gen)

    chat = spans.one("SimpleChatEngine.stream_chat")
    assert attributes(chat)["input.value"] == "Hello there"
    assert attributes(chat)["output.value"] == text
    writer = spans.one("StreamingAgentChatResponse.write_response_to_history")
    assert (chat.end_time or 0) >= (writer.end_time or 0)
    (llm,) = spans.of_kind("LLM")
    assert attributes(llm)[STREAM_OUTCOME] == "completed"
    assert {span.context.trace_id for span in spans.all()} == {chat.context.trace_id}
    spans.captured().assert_session("chat-stream", user="user-2", turns=1, llm_calls=1)


async def test_async_streamed_chat_engine_reply_stays_in_its_session(
    spans: FinishedSpans, mock_llm: MockLLM
) -> None:
    engine = SimpleChatEngine.from_defaults(llm=mock_llm)
    with using_session("achat-stream"):
        reply = await engine.astream_chat("Hello there")
        text = "".join([piece async for piece in reply.async_response_gen()])

    chat = spans.one("SimpleChatEngine.astream_chat")
    assert attributes(chat)["output.value"] == text
    captured = spans.captured()
    captured.assert_every_span_in_a_session()
    captured.assert_session("achat-stream", turns=1, llm_calls=1)


def test_streamed_query_stays_in_the_trace_and_session_that_started_it(
    spans: FinishedSpans, index: VectorStoreIndex, mock_llm: MockLLM
) -> None:
    with using_session("stream-1"):
        response = index.as_query_engine(llm=mock_llm, streaming=True).query(QUESTION)
    text = "".join(token_stream(response))  # consumed outside the session block

    query = spans.one("RetrieverQueryEngine.query")
    assert attributes(query)[STREAM_OUTCOME] == "completed"
    assert attributes(query)["output.value"] == text
    (llm,) = spans.of_kind("LLM")
    assert llm.context.trace_id == query.context.trace_id
    assert attributes(llm)[STREAM_OUTCOME] == "completed"
    assert TIME_TO_FIRST_TOKEN_MS in attributes(llm)
    assert (query.end_time or 0) >= (llm.end_time or 0), (
        "the query span lasts as long as its stream"
    )
    spans.captured().assert_every_span_in_a_session()


def test_abandoned_query_stream_ends_on_collection_marked_abandoned(
    spans: FinishedSpans, index: VectorStoreIndex, mock_llm: MockLLM
) -> None:
    response = index.as_query_engine(llm=mock_llm, streaming=True).query(QUESTION)
    next(token_stream(response))
    assert not spans.named("RetrieverQueryEngine.query"), "open while the stream is"
    del response  # no reference left: ends now, not at the next garbage collection

    query = spans.one("RetrieverQueryEngine.query")
    assert attributes(query)[STREAM_OUTCOME] == "abandoned"
    assert query.status.status_code is StatusCode.UNSET
    (llm,) = spans.of_kind("LLM")
    assert attributes(llm)[STREAM_OUTCOME] in ("abandoned", "closed_early")


def test_closed_query_stream_ends_its_span_at_once(
    spans: FinishedSpans, index: VectorStoreIndex, mock_llm: MockLLM
) -> None:
    response = index.as_query_engine(llm=mock_llm, streaming=True).query(QUESTION)
    stream = token_stream(response)
    next(stream)
    stream.close()

    assert attributes(spans.one("RetrieverQueryEngine.query"))[STREAM_OUTCOME] == "closed_early"


async def test_async_streamed_query_ends_when_consumed(
    spans: FinishedSpans, index: VectorStoreIndex, mock_llm: MockLLM
) -> None:
    with using_session("async-stream"):
        response = await index.as_query_engine(llm=mock_llm, streaming=True).aquery(QUESTION)
    pieces = [piece async for piece in async_token_stream(response)]

    query = spans.one("RetrieverQueryEngine.aquery")
    assert attributes(query)[STREAM_OUTCOME] == "completed"
    assert attributes(query)["output.value"] == "".join(pieces)
    spans.captured().assert_every_span_in_a_session()


def test_llm_stream_span_ends_with_the_stream(spans: FinishedSpans, mock_llm: MockLLM) -> None:
    with using_session("s"):
        stream = mock_llm.stream_chat([ChatMessage(role="user", content="Hi")])
    assert not spans.of_kind("LLM")
    chunks = list(stream)

    (llm,) = spans.of_kind("LLM")
    assert llm.name == "MockLLM.stream_chat"
    assert attributes(llm)[STREAM_OUTCOME] == "completed"
    assert attributes(llm)["output.value"] == chunks[-1].message.content
    assert attributes(llm)["session.id"] == "s"


def test_abandoned_llm_stream_ends_promptly_marked_abandoned(
    spans: FinishedSpans, mock_llm: MockLLM
) -> None:
    stream = mock_llm.stream_complete("Hi")
    next(stream)
    del stream

    (llm,) = spans.of_kind("LLM")
    assert attributes(llm)[STREAM_OUTCOME] == "abandoned"
    assert llm.status.status_code is StatusCode.UNSET


def test_unstarted_llm_stream_collected_is_abandoned(
    spans: FinishedSpans, mock_llm: MockLLM
) -> None:
    mock_llm.stream_complete("Hi")  # never iterated, dropped at once

    (llm,) = spans.of_kind("LLM")
    assert attributes(llm)[STREAM_OUTCOME] == "abandoned"


def test_streams_consumed_in_one_context_leave_nothing_behind(
    spans: FinishedSpans, mock_llm: MockLLM
) -> None:
    def stream_and_call(times: int) -> None:
        for _ in range(times):
            "".join(mock_llm.stream(PromptTemplate("Say {word}"), word="hi"))
            mock_llm.complete("Hi")

    def open_calls() -> int:
        gc.collect()  # what earlier tests left for the cycle collector is not kept alive
        return sum(isinstance(o, handlers.OpenCall) for o in gc.get_objects())

    before = context.get_current()
    stream_and_call(5)
    after_five = open_calls()
    stream_and_call(45)

    assert len(spans.of_kind("LLM")) == 100, "no call is mistaken for part of an earlier one"
    assert open_calls() == after_five, "nothing accumulates from one call to the next"
    assert context.get_current() == before, "no stream leaves its call's context current"
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_closed_llm_stream_is_closed_early(spans: FinishedSpans, mock_llm: MockLLM) -> None:
    stream = mock_llm.stream_complete("Hi")
    next(stream)
    stream.close()

    (llm,) = spans.of_kind("LLM")
    assert attributes(llm)[STREAM_OUTCOME] == "closed_early"
    assert llm.status.status_code is StatusCode.OK


async def test_abandoned_async_llm_stream_ends_marked_abandoned(
    spans: FinishedSpans, mock_llm: MockLLM
) -> None:
    stream = await mock_llm.astream_complete("Hi")
    await anext(stream)
    del stream

    (llm,) = spans.of_kind("LLM")
    assert attributes(llm)[STREAM_OUTCOME] == "abandoned"


def test_failing_model_call_records_the_error_and_reraises_it(spans: FinishedSpans) -> None:
    error = RuntimeError("model unavailable")
    llm = FailingLLM(error=error)
    with using_session("broken"), pytest.raises(RuntimeError) as raised:
        llm.complete("Hi")

    assert raised.value is error
    (span,) = spans.of_kind("LLM")
    assert span.status.status_code is StatusCode.ERROR
    assert span.events[0].name == "exception"
    spans.captured().assert_session("broken", errors=1)


def test_stream_failing_midway_records_the_error(spans: FinishedSpans) -> None:
    error = ConnectionResetError("connection lost")
    stream = FailingLLM(error=error).stream_complete("Hi")
    with pytest.raises(ConnectionResetError) as raised:
        list(stream)

    assert raised.value is error
    (span,) = spans.of_kind("LLM")
    assert span.status.status_code is StatusCode.ERROR
    assert attributes(span)[STREAM_OUTCOME] == "error"


def test_query_engine_error_marks_the_failing_spans(
    spans: FinishedSpans, index: VectorStoreIndex
) -> None:
    error = RuntimeError("model unavailable")
    with pytest.raises(RuntimeError) as raised:
        index.as_query_engine(llm=FailingLLM(error=error)).query(QUESTION)

    assert raised.value is error
    assert spans.one("RetrieverQueryEngine.query").status.status_code is StatusCode.ERROR
    assert spans.of_kind("LLM")[0].status.status_code is StatusCode.ERROR
    assert spans.one("VectorIndexRetriever.retrieve").status.status_code is StatusCode.OK


def test_embedding_batch_is_one_span_with_every_text(
    spans: FinishedSpans, mock_embedding: MockEmbedding
) -> None:
    mock_embedding.get_text_embedding_batch(["first text", "second text"])

    (span,) = spans.all()
    assert span.name == "MockEmbedding.get_text_embedding_batch"
    assert attributes(span)[KIND] == "EMBEDDING"
    assert attributes(span)["embedding.embeddings.1.embedding.text"] == "second text"
    assert len(attributes(span)["embedding.embeddings.1.embedding.vector"]) == 4


def test_llm_reranker_records_input_and_output_documents(
    spans: FinishedSpans, index: VectorStoreIndex
) -> None:
    nodes = index.as_retriever(similarity_top_k=2).retrieve(QUESTION)
    spans.exporter.clear()
    reranker = LLMRerank(llm=ScriptedRerankLLM(), top_n=1)
    reranked = reranker.postprocess_nodes(nodes, query_str=QUESTION)

    (span,) = spans.of_kind("RERANKER")
    found = attributes(span)
    assert found["reranker.query"] == QUESTION
    assert found["reranker.top_k"] == 1
    assert found["reranker.input_documents.1.document.id"] == nodes[1].node.node_id
    assert found["reranker.output_documents.0.document.id"] == reranked[0].node.node_id
    assert "reranker.output_documents.1.document.id" not in found


def test_reranker_announced_by_events_becomes_a_reranker_span(
    spans: FinishedSpans, index: VectorStoreIndex
) -> None:
    nodes = index.as_retriever(similarity_top_k=2).retrieve(QUESTION)
    spans.exporter.clear()
    EventReranker().postprocess_nodes(nodes, query_str=QUESTION)

    (span,) = spans.all()
    assert attributes(span)[KIND] == "RERANKER"
    assert attributes(span)["reranker.model_name"] == "m"
    assert attributes(span)["reranker.output_documents.0.document.id"] == nodes[-1].node.node_id


def test_tool_span_has_name_description_and_json_schema(spans: FinishedSpans) -> None:
    tool = FunctionTool.from_defaults(get_weather)
    with using_session("tools"):
        tool.call(city="Paris")

    (span,) = spans.of_kind("TOOL")
    found = attributes(span)
    assert found["tool.name"] == "get_weather"
    assert "Report the current weather" in found["tool.description"]
    schema = json.loads(found["tool.parameters"])
    assert schema["properties"]["city"]["type"] == "string"
    assert schema["required"] == ["city"]
    assert json.loads(found["input.value"]) == {"city": "Paris"}
    assert found["output.value"] == "Sunny, 24 degrees celsius in Paris."
    assert found["session.id"] == "tools"


def test_suppressed_instrumentation_records_nothing(
    spans: FinishedSpans, mock_llm: MockLLM
) -> None:
    with suppress_instrumentation():
        mock_llm.complete("Hi")
        list(mock_llm.stream_complete("Hi"))

    assert spans.all() == []
