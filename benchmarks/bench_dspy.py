"""Per-call overhead of convotel-dspy, side by side with OpenInference's DSPy instrumentor.

A ``dspy.Predict("question -> answer")`` on a real ``dspy.LM`` whose engine is an in-process stub
(DSPy's custom-engine interface, ``engine=``/``async_engine=``): every call runs DSPy's real
adapter formatting and parsing, ``LM`` call path, usage accounting and, for ``streamify``, its
stream listeners; only the provider request is replaced by a prebuilt answer (streamed as
``STREAM_CHUNKS`` text deltas). Calls: ``predict(...)``, ``await predict.acall(...)`` and
``dspy.streamify(predict, stream_listeners=[...])`` consumed to the end. OpenLLMetry has no DSPy
instrumentor. Each contender runs in its own worker process (bench_harness.py).

    python benchmarks/bench_dspy.py [--rounds N]
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("DSP_CACHEBOOL", "False")

import dspy
from bench_harness import Batch, Contender, Scenario, Suite, async_batch, main, sync_batch
from dspy.lm15 import (
    Message,
    Response,
    StreamDeltaEvent,
    TextDelta,
    TextPart,
    Usage,
    response_to_events,
)
from dspy.streaming import StreamListener

QUESTION = "What is the capital of France?"
ANSWER = "Paris is the capital and largest city of France, on the Seine, known for its museums."
COMPLETION = f"[[ ## answer ## ]]\n{ANSWER}\n\n[[ ## completed ## ]]"
STREAM_CHUNKS = 20

RESPONSE = Response(
    id="resp-bench",
    model="gpt-4o-mini",
    message=Message.assistant([TextPart(COMPLETION)]),
    finish_reason="stop",
    usage=Usage(input_tokens=120, output_tokens=30, total_tokens=150),
)


def stream_events() -> list[Any]:
    """``RESPONSE`` as a stream: the start event, ``STREAM_CHUNKS`` text deltas, the end event."""
    start, _whole_text, *end = response_to_events(RESPONSE)
    size = len(COMPLETION)
    bounds = [size * i // STREAM_CHUNKS for i in range(STREAM_CHUNKS + 1)]
    texts = [COMPLETION[a:b] for a, b in itertools.pairwise(bounds)]
    deltas = [StreamDeltaEvent(delta=TextDelta(text=text, part_index=0)) for text in texts]
    return [start, *deltas, *end]


EVENTS = stream_events()


class StubEngine:
    """The provider request answered from memory (DSPy's custom engine interface)."""

    def complete(self, request: Any) -> Response:
        return RESPONSE

    def stream(self, request: Any) -> Iterator[Any]:
        return iter(EVENTS)

    def close(self) -> None:
        return None


class AsyncStubEngine:
    async def complete(self, request: Any) -> Response:
        return RESPONSE

    async def stream(self, request: Any) -> AsyncIterator[Any]:
        for event in EVENTS:
            yield event

    async def aclose(self) -> None:
        return None


class DSPySuite(Suite):
    adapter = "dspy"
    distributions = ("dspy",)
    scenarios = (
        Scenario("Predict", "sync", calls=50),
        Scenario("Predict.acall", "async", calls=50),
        Scenario(f"streamify(Predict) ({STREAM_CHUNKS} chunks)", "stream", calls=20),
    )
    contenders = (
        Contender("convotel", "convotel-dspy", "convotel.dspy", "DSPyInstrumentor"),
        Contender(
            "OpenInference",
            "openinference-instrumentation-dspy",
            "openinference.instrumentation.dspy",
            "DSPyInstrumentor",
        ),
    )
    absent: ClassVar[dict[str, str]] = {"OpenLLMetry": "no DSPy instrumentor"}

    def setup(self, stubbed: bool) -> None:
        lm = dspy.LM(
            "openai/gpt-4o-mini", engine=StubEngine(), async_engine=AsyncStubEngine(), cache=False
        )
        dspy.configure(lm=lm)
        self.predict = dspy.Predict("question -> answer")
        self.streaming = dspy.streamify(
            self.predict, stream_listeners=[StreamListener(signature_field_name="answer")]
        )
        self.loop = asyncio.new_event_loop()

    def batch(self, scenario: Scenario) -> Batch:
        if scenario.kind == "async":

            async def acall() -> None:
                assert (await self.predict.acall(question=QUESTION)).answer == ANSWER

            return async_batch(acall, self.loop)
        if scenario.kind == "stream":

            async def stream() -> None:
                async for value in self.streaming(question=QUESTION):
                    final = value
                assert final.answer == ANSWER

            return async_batch(stream, self.loop)

        def call() -> None:
            assert self.predict(question=QUESTION).answer == ANSWER

        return sync_batch(call)


SUITE = DSPySuite()

if __name__ == "__main__":
    main(SUITE, __file__)
