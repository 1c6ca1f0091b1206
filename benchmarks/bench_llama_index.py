"""Overhead of convotel-llama-index on a simple query-engine call: instrumented vs uninstrumented.

Run: ``python benchmarks/bench_llama_index.py [--calls N] [--rounds R]``.

A ``VectorStoreIndex`` over a few documents with llama-index-core's ``MockEmbedding`` and
``MockLLM`` (in-process, no network), queried through ``index.as_query_engine()``: each call runs
LlamaIndex's real retrieval, synthesis and prompt code, so the numbers are LlamaIndex's own per-call
cost plus what the tracer adds. Spans go to a counting exporter.

Rounds alternate uninstrumented / instrumented and print the median per-call CPU time (µs) of
this thread, the overhead (instrumented minus uninstrumented), the ratio, and the floor: starting
and ending as many spans with as many attributes with the bare OpenTelemetry SDK (what any tracer
pays at least). Compare ratios, not absolute times: the machines are noisy.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

from llama_index.core import Document, VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockLLM
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from convotel import using_session, using_user
from convotel.llama_index import LlamaIndexInstrumentor

DOCUMENTS = [
    "Paris is the capital of France.",
    "Berlin is the capital of Germany.",
    "Madrid is the capital of Spain.",
    "Rome is the capital of Italy.",
]
QUESTION = "What is the capital of France?"


class CountingExporter(SpanExporter):
    """Counts exported spans and their attributes."""

    def __init__(self) -> None:
        self.spans = 0
        self.attributes = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        self.attributes += sum(len(span.attributes or {}) for span in spans)
        return SpanExportResult.SUCCESS


def per_call_us(call: Callable[[], object], calls: int) -> float:
    start = time.thread_time_ns()
    for _ in range(calls):
        call()
    return (time.thread_time_ns() - start) / calls / 1000


def floor_us(provider: TracerProvider, spans: int, attributes: int, calls: int) -> float:
    """Bare SDK cost of ``spans`` nested spans with ``attributes`` attributes each."""
    tracer = provider.get_tracer("floor")
    values = {f"attribute.{i}": "value" for i in range(attributes)}

    def nested() -> None:
        for _ in range(spans):
            with tracer.start_as_current_span("span", attributes=values):
                pass

    return per_call_us(nested, calls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds of each kind")
    options = parser.parse_args()

    exporter = CountingExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    index = VectorStoreIndex.from_documents(
        [Document(text=text) for text in DOCUMENTS], embed_model=MockEmbedding(embed_dim=8)
    )
    engine = index.as_query_engine(llm=MockLLM(max_tokens=8), similarity_top_k=2)

    def query() -> object:
        with using_session("bench-session"), using_user("bench-user"):
            return engine.query(QUESTION)

    instrumentor = LlamaIndexInstrumentor()
    for _ in range(20):  # warm up both paths
        query()
    instrumentor.instrument(tracer_provider=provider)
    for _ in range(20):
        query()
    instrumentor.uninstrument()

    plain: list[float] = []
    traced: list[float] = []
    exporter.spans = exporter.attributes = 0
    for _ in range(options.rounds):
        plain.append(per_call_us(query, options.calls))
        instrumentor.instrument(tracer_provider=provider)
        traced.append(per_call_us(query, options.calls))
        instrumentor.uninstrument()

    total_calls = options.rounds * options.calls
    spans_per_call = exporter.spans / total_calls
    attributes_per_span = exporter.attributes / max(exporter.spans, 1)
    base, instrumented = statistics.median(plain), statistics.median(traced)
    floor = floor_us(provider, round(spans_per_call), round(attributes_per_span), options.calls)
    overhead = instrumented - base
    print(f"query engine call (MockLLM + MockEmbedding), {options.rounds} x {options.calls} calls")
    print(f"  uninstrumented   {base:9.1f} µs/call")
    print(f"  instrumented     {instrumented:9.1f} µs/call   ratio {instrumented / base:.2f}")
    shape = f"{spans_per_call:.1f} spans per call, {attributes_per_span:.1f} attributes per span"
    print(f"  overhead         {overhead:9.1f} µs/call   ({shape})")
    print(f"  floor (bare SDK) {floor:9.1f} µs/call   overhead / floor {overhead / floor:.2f}")


if __name__ == "__main__":
    main()
