"""One conversation through every adapter reads the same: on the model call's span and on the turn.

The conversation (a system prompt, a question answered, a follow-up question) is sent inside a web
request's root span, with ``SessionSpanProcessor`` on the provider, through

* OpenAI and Mistral: the real SDKs replaying ``cassettes/openai/chat_basic`` and
  ``cassettes/mistralai/chat_geography``;
* LlamaIndex: a LlamaIndex LLM answering the recorded reply, and, when
  ``llama-index-llms-openai`` is installed, LlamaIndex's OpenAI integration replaying
  ``cassettes/llama_index/chat`` (the provider's span is then the one LLM span);
* DSPy: the LM called with the messages, on the loopback server of ``tests/dspy``; and a
  ``Predict`` program, whose model call carries DSPy's rendered prompt but whose turn reads the
  same.

Every adapter follows the README's rule: an LLM span's ``input.value`` is its newest user
message's text, its ``output.value`` the reply's text (both ``text/plain``); the root shows the
same texts as the turn.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dspy
import openai
import pytest
import vcr  # type: ignore[import-untyped]
from dspy_loopback import LoopbackServer, adapter_reply
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata
from llama_index.core.llms.callbacks import llm_completion_callback
from mistral_cassettes import cassette, replay
from mistralai.client import Mistral
from openai_cassettes import replay as openai_replay
from opentelemetry import trace as trace_api
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from turn_text_support import llm_spans, root_of

from convotel import using_session
from convotel.dspy import DSPyInstrumentor
from convotel.llama_index import LlamaIndexInstrumentor
from convotel.mistralai import MistralAIInstrumentor
from convotel.openai import OpenAIInstrumentor

INPUT, OUTPUT = "input.value", "output.value"
INPUT_MIME, OUTPUT_MIME = "input.mime_type", "output.mime_type"
SYSTEM = "You are a terse geography tutor."
EARLIER_QUESTION, EARLIER_ANSWER = "What is the capital of Spain?", "Madrid."
QUESTION = "And what is the capital of France?"
REPLY = "The capital of France is Paris."
MESSAGES: list[Any] = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": EARLIER_QUESTION},
    {"role": "assistant", "content": EARLIER_ANSWER},
    {"role": "user", "content": QUESTION},
]
LLAMA_INDEX_CASSETTES = Path(__file__).resolve().parents[2] / "cassettes" / "llama_index"
API_KEY = "sk-test-not-a-real-key"

Converse = Callable[[TracerProvider], None]


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # its parent package is missing
        return False


class RecordedReplyLLM(CustomLLM):
    """A LlamaIndex model that answers with the reply the providers' cassettes hold."""

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="recorded-reply")

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=REPLY)

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> Iterator[CompletionResponse]:
        yield CompletionResponse(text=REPLY, delta=REPLY)


def _llama_index_messages() -> list[ChatMessage]:
    return [ChatMessage(role=m["role"], content=m["content"]) for m in MESSAGES]


@contextmanager
def instrumented(provider: TracerProvider, *instrumentors: BaseInstrumentor) -> Iterator[None]:
    """The instrumentors on ``provider`` for the block, undone afterwards."""
    for instrumentor in instrumentors:
        instrumentor.instrument(tracer_provider=provider)
    try:
        yield
    finally:
        for instrumentor in instrumentors:
            instrumentor.uninstrument()


def converse_openai(provider: TracerProvider) -> None:
    with (
        instrumented(provider, OpenAIInstrumentor()),
        openai_replay("chat_basic", match_body=False),
    ):
        client = openai.OpenAI(api_key=API_KEY, max_retries=0)
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)


def converse_mistral(provider: TracerProvider) -> None:
    with (
        instrumented(provider, MistralAIInstrumentor()),
        replay.use_cassette(cassette("chat_geography")),
    ):
        Mistral(api_key=API_KEY).chat.complete(model="mistral-small-latest", messages=MESSAGES)


def converse_llama_index(provider: TracerProvider) -> None:
    with instrumented(provider, LlamaIndexInstrumentor()):
        RecordedReplyLLM().chat(_llama_index_messages())


def converse_llama_index_over_openai(provider: TracerProvider) -> None:
    from llama_index.llms.openai import OpenAI

    replayer = vcr.VCR(
        cassette_library_dir=str(LLAMA_INDEX_CASSETTES),
        record_mode="none",
        match_on=["method", "scheme", "host", "path"],
        decode_compressed_response=True,
    )
    with (
        instrumented(provider, LlamaIndexInstrumentor(), OpenAIInstrumentor()),
        replayer.use_cassette("chat.yaml", allow_playback_repeats=False),
    ):
        OpenAI(model="gpt-4o-mini", api_key=API_KEY, max_retries=0).chat(_llama_index_messages())


@pytest.fixture(scope="module")
def loopback() -> Iterator[LoopbackServer]:
    server = LoopbackServer().start()
    yield server
    server.stop()


def _dspy_lm(server: LoopbackServer) -> dspy.LM:
    return dspy.LM(
        "openai/gpt-4o-mini",
        api_base=server.base_url,
        api_key=API_KEY,
        cache=False,
        num_retries=0,
    )


@pytest.fixture
def dspy_converse(loopback: LoopbackServer) -> Iterator[Converse]:
    def converse(provider: TracerProvider) -> None:
        loopback.reply(REPLY)
        with instrumented(provider, DSPyInstrumentor()):
            assert _dspy_lm(loopback)(messages=MESSAGES) == [REPLY]

    loopback.reset()
    yield converse
    loopback.reset()


ADAPTERS = {
    "openai": converse_openai,
    "mistralai": converse_mistral,
    "llama_index": converse_llama_index,
    "llama_index_over_openai": converse_llama_index_over_openai,
}


@pytest.fixture
def tracer_provider(session_tracer_provider: TracerProvider) -> TracerProvider:
    """The adapters trace through the web service's provider (SessionSpanProcessor first)."""
    return session_tracer_provider


def _converse(
    converse: Converse, provider: TracerProvider, tracer: trace_api.Tracer, session: str
) -> None:
    with tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER), using_session(session):
        converse(provider)


@pytest.mark.parametrize("adapter", [*ADAPTERS, "dspy"])
def test_the_model_call_and_the_turn_read_the_same_through_every_adapter(
    adapter: str,
    request: pytest.FixtureRequest,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    tracer: trace_api.Tracer,
) -> None:
    if adapter == "llama_index_over_openai" and not _installed("llama_index.llms.openai"):
        pytest.skip("llama-index-llms-openai is not installed")
    converse = request.getfixturevalue("dspy_converse") if adapter == "dspy" else ADAPTERS[adapter]

    _converse(converse, tracer_provider, tracer, f"one-conversation-{adapter}")

    (llm,) = llm_spans(span_exporter)
    shown = dict(llm.attributes or {})
    assert (shown[INPUT], shown[OUTPUT]) == (QUESTION, REPLY)
    assert shown[INPUT_MIME] == shown[OUTPUT_MIME] == "text/plain"
    root = root_of(span_exporter)
    assert (root[INPUT], root[OUTPUT]) == (QUESTION, REPLY)
    assert root["session.id"] == f"one-conversation-{adapter}"


class Geography(dspy.Signature):
    """Answer the user's question in the light of the conversation so far."""

    question: str = dspy.InputField()
    history: dspy.History = dspy.InputField()
    answer: str = dspy.OutputField()


def test_a_dspy_program_shows_the_same_turn_though_its_model_call_carries_the_rendered_prompt(
    loopback: LoopbackServer,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    tracer: trace_api.Tracer,
) -> None:
    history = dspy.History(messages=[{"question": EARLIER_QUESTION, "answer": EARLIER_ANSWER}])
    loopback.reset()
    loopback.reply(adapter_reply(answer=REPLY))

    def converse(provider: TracerProvider) -> None:
        with instrumented(provider, DSPyInstrumentor()), dspy.context(lm=_dspy_lm(loopback)):
            assert dspy.Predict(Geography)(question=QUESTION, history=history).answer == REPLY

    _converse(converse, tracer_provider, tracer, "one-conversation-dspy-program")

    (llm,) = llm_spans(span_exporter)
    shown = dict(llm.attributes or {})
    assert QUESTION in shown[INPUT]  # the newest user message: DSPy's rendering of the question
    assert shown[INPUT].startswith("[[ ## ")
    assert shown[OUTPUT] == adapter_reply(answer=REPLY)
    root = root_of(span_exporter)
    assert (root[INPUT], root[OUTPUT]) == (QUESTION, REPLY)
