"""LlamaIndex streams end by the core's one rule (convotel.finish), also the paths that LlamaIndex
ends through its own callbacks: a chat engine's streamed reply (ended by its writer) and a model
stream closed before its first chunk (which LlamaIndex does not announce)."""

from __future__ import annotations

from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.llms import MockLLM
from llama_index_spans import FinishedSpans, attributes
from opentelemetry.trace import StatusCode

from convotel.spans import STREAM_OUTCOME


def test_chat_engine_stream_read_to_its_end_is_completed(
    spans: FinishedSpans, mock_llm: MockLLM
) -> None:
    reply = SimpleChatEngine.from_defaults(llm=mock_llm).stream_chat("Hello there")
    text = "".join(reply.response_gen)

    chat = spans.one("SimpleChatEngine.stream_chat")
    assert attributes(chat)[STREAM_OUTCOME] == "completed"
    assert attributes(chat)["output.value"] == text
    assert chat.status.status_code is StatusCode.OK


def test_model_stream_closed_before_its_first_chunk_is_closed_early_at_once(
    spans: FinishedSpans, mock_llm: MockLLM
) -> None:
    stream = mock_llm.stream_complete("Hi")
    stream.close()  # still referenced: the span ends now, not when the stream is collected

    (llm,) = spans.of_kind("LLM")
    assert attributes(llm)[STREAM_OUTCOME] == "closed_early"
    assert llm.status.status_code is StatusCode.OK
    del stream
