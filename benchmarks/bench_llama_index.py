"""Per-call overhead of convotel-llama-index, side by side with the other LlamaIndex instrumentors.

A ``VectorStoreIndex`` over four documents with llama-index-core's ``MockEmbedding`` and ``MockLLM``
(in-process, no network), queried through ``index.as_query_engine()``: ``query``, ``aquery`` and a
streaming query engine whose answer (``STREAM_TOKENS`` tokens) is consumed. Every call runs
LlamaIndex's real retrieval, prompt and synthesis code, so the uninstrumented call is LlamaIndex's
own cost. Each contender runs in its own worker process (bench_harness.py).

    python benchmarks/bench_llama_index.py [--rounds N]
"""

from __future__ import annotations

import asyncio
import importlib
import sys
import types

from bench_harness import Batch, Contender, Scenario, Suite, async_batch, main, sync_batch
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.base.response.schema import StreamingResponse
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockLLM

DOCUMENTS = [
    "Paris is the capital of France.",
    "Berlin is the capital of Germany.",
    "Madrid is the capital of Spain.",
    "Rome is the capital of Italy.",
]
QUESTION = "What is the capital of France?"
STREAM_TOKENS = 20
OPENLLMETRY = "OpenLLMetry"


def provide_llms_namespace() -> None:
    """An empty ``llama_index.llms`` namespace when no ``llama-index-llms-*`` is installed.

    OpenLLMetry's instrumentor imports it at import time (it only exists once an LLM integration
    is installed; this benchmark uses llama-index-core's ``MockLLM``).
    """
    try:
        importlib.import_module("llama_index.llms")
    except ImportError:
        namespace = types.ModuleType("llama_index.llms")
        namespace.__path__ = []
        sys.modules["llama_index.llms"] = namespace
        vars(sys.modules["llama_index"])["llms"] = namespace


class LlamaIndexSuite(Suite):
    adapter = "llama_index"
    distributions = ("llama-index-core",)
    scenarios = (
        Scenario("query_engine.query", "sync", calls=20),
        Scenario("query_engine.aquery", "async", calls=20),
        Scenario(f"streaming query ({STREAM_TOKENS} tokens)", "stream", calls=20),
    )
    contenders = (
        Contender(
            "convotel", "convotel-llama-index", "convotel.llama_index", "LlamaIndexInstrumentor"
        ),
        Contender(
            "OpenInference",
            "openinference-instrumentation-llama-index",
            "openinference.instrumentation.llama_index",
            "LlamaIndexInstrumentor",
        ),
        Contender(
            OPENLLMETRY,
            "opentelemetry-instrumentation-llamaindex",
            "opentelemetry.instrumentation.llamaindex",
            "LlamaIndexInstrumentor",
        ),
    )

    def setup(self, stubbed: bool) -> None:
        index = VectorStoreIndex.from_documents(
            [Document(text=text) for text in DOCUMENTS], embed_model=MockEmbedding(embed_dim=8)
        )
        llm = MockLLM(max_tokens=STREAM_TOKENS)
        self.engine = index.as_query_engine(llm=llm, similarity_top_k=2)
        self.streaming = index.as_query_engine(llm=llm, similarity_top_k=2, streaming=True)
        self.loop = asyncio.new_event_loop()

    def batch(self, scenario: Scenario) -> Batch:
        if scenario.kind == "async":

            async def aquery() -> None:
                assert (await self.engine.aquery(QUESTION)).source_nodes

            return async_batch(aquery, self.loop)
        if scenario.kind == "stream":

            def stream() -> None:
                response = self.streaming.query(QUESTION)
                assert isinstance(response, StreamingResponse)
                assert len(list(response.response_gen)) == STREAM_TOKENS

            return sync_batch(stream)

        def query() -> None:
            assert self.engine.query(QUESTION).source_nodes

        return sync_batch(query)

    def before_instrument(self, contender: Contender) -> None:
        if contender.label == OPENLLMETRY:
            provide_llms_namespace()


SUITE = LlamaIndexSuite()

if __name__ == "__main__":
    main(SUITE, __file__)
