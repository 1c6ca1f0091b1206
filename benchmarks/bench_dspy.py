"""Overhead of convotel-dspy on a ``dspy.Predict`` call: instrumented vs uninstrumented.

Run: ``python benchmarks/bench_dspy.py [--calls N] [--rounds R]``.

The LM is DSPy's in-process ``DummyLM`` (no sockets, no network): each call runs the real
ChatAdapter formatting and parsing and the real ``BaseLM`` call path, so the numbers are DSPy's
own per-call cost plus what the tracer adds. With convotel a call makes two spans (the Predict
CHAIN span and the LLM span), exported to a counting exporter.

Rounds alternate uninstrumented / instrumented; each prints the median per-call CPU time (µs), the
overhead (instrumented minus uninstrumented), the ratio, and the floor: starting and ending two
spans with as many attributes with the bare OpenTelemetry SDK (what any tracer pays at least).
Compare ratios, not absolute times: the machines are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy
from dspy.utils.dummies import DummyLM
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from convotel import using_session
from convotel.dspy import DSPyInstrumentor


class CountingExporter(SpanExporter):
    """Counts spans and remembers the attribute counts of the last two."""

    def __init__(self) -> None:
        self.count = 0
        self.last_counts: deque[int] = deque(maxlen=2)

    @property
    def attribute_counts(self) -> list[int]:
        """Attribute counts of the last two spans (the LLM span, then its Predict span)."""
        return list(self.last_counts)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.count += len(spans)
        self.last_counts.extend(len(span.attributes or {}) for span in spans)
        return SpanExportResult.SUCCESS


def per_call_us(call: Callable[[], Any], calls: int) -> float:
    """CPU time of this process per call (other processes on the machine do not count)."""
    start = time.process_time()
    for _ in range(calls):
        call()
    return (time.process_time() - start) / calls * 1e6


def floor_us(provider: TracerProvider, attribute_counts: list[int], calls: int) -> float:
    """Two nested spans with the same number of attributes, through the bare SDK tracer."""
    tracer = provider.get_tracer("floor")
    attributes = [{f"attribute.{i}": "value" for i in range(n)} for n in attribute_counts]

    def two_spans() -> None:
        with (
            tracer.start_as_current_span("outer", attributes=attributes[-1]),
            tracer.start_as_current_span("inner", attributes=attributes[0]),
        ):
            pass

    return per_call_us(two_spans, calls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds per variant")
    options = parser.parse_args()

    answers = [{"answer": "Paris"}] * (options.calls * options.rounds * 4 + 50)
    lm = DummyLM(answers)
    dspy.configure(lm=lm)
    predict = dspy.Predict("question -> answer")

    def sync_call() -> None:
        predict(question="What is the capital of France?")

    loop = asyncio.new_event_loop()

    def async_call() -> None:
        loop.run_until_complete(predict.acall(question="What is the capital of France?"))

    exporter = CountingExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = DSPyInstrumentor()

    print(f"dspy {dspy.__version__}: {options.rounds} rounds x {options.calls} calls")
    for label, call in (("Predict sync", sync_call), ("Predict acall", async_call)):
        for _ in range(20):  # warm caches, imports and lazy initialisation
            call()
        plain: list[float] = []
        traced: list[float] = []
        with using_session("bench-session"):
            for _ in range(options.rounds):
                gc.collect()
                plain.append(per_call_us(call, options.calls))
                instrumentor.instrument(tracer_provider=provider)
                try:
                    per_call_us(call, 10)  # first calls after wrapping warm wrapt's caches
                    gc.collect()
                    traced.append(per_call_us(call, options.calls))
                finally:
                    instrumentor.uninstrument()
        base, with_tracing = statistics.median(plain), statistics.median(traced)
        overhead = with_tracing - base
        floor = floor_us(provider, exporter.attribute_counts or [10, 20], options.calls)
        print(
            f"{label:14} uninstrumented {base:8.1f} µs  instrumented {with_tracing:8.1f} µs  "
            f"overhead {overhead:7.1f} µs  ratio {with_tracing / base:5.3f}  "
            f"floor (2 spans, {exporter.attribute_counts} attrs) {floor:6.1f} µs  "
            f"overhead/floor {overhead / floor:4.1f}"
        )
    loop.close()
    assert exporter.count > 0, "no spans were exported: the instrumentor did not trace"


if __name__ == "__main__":
    main()
