"""Instrument/uninstrument bookkeeping and the ``opentelemetry-instrument`` entry point."""

from __future__ import annotations

import copy
import json
import pickle
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dspy
from dspy.adapters.types.tool import Tool
from dspy.clients.base_lm import BaseLM
from dspy.primitives.module import Module
from dspy_spans import by_name, one, parent_of
from openinference.semconv.trace import SpanAttributes
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from convotel.dspy import DSPyInstrumentor

HERE = Path(__file__).resolve().parent
WRAPPED = ((Module, "__call__"), (Module, "acall"), (BaseLM, "__call__"), (Tool, "__call__"))


def test_uninstrument_restores_the_original_methods_exactly(
    tracer_provider: TracerProvider,
) -> None:
    originals = {(owner, name): vars(owner)[name] for owner, name in WRAPPED}
    instrumentor = DSPyInstrumentor()

    instrumentor.instrument(tracer_provider=tracer_provider)
    try:
        for (owner, name), original in originals.items():
            assert vars(owner)[name] is not original
    finally:
        instrumentor.uninstrument()

    for (owner, name), original in originals.items():
        assert vars(owner)[name] is original


def test_instrumenting_twice_does_not_double_wrap(
    span_exporter: InMemorySpanExporter, tracer_provider: TracerProvider, lm: dspy.LM
) -> None:
    instrumentor = DSPyInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    instrumentor.instrument(tracer_provider=tracer_provider)
    try:
        with dspy.context(lm=lm):
            dspy.Predict("question -> answer")(question="once?")
    finally:
        instrumentor.uninstrument()

    names = sorted(s.name for s in span_exporter.get_finished_spans())
    assert names == ["LM.__call__", "Predict.forward"]


def test_nothing_is_traced_after_uninstrument(
    span_exporter: InMemorySpanExporter, tracer_provider: TracerProvider, lm: dspy.LM
) -> None:
    instrumentor = DSPyInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    instrumentor.uninstrument()

    with dspy.context(lm=lm):
        prediction = dspy.Predict("question -> answer")(question="untraced?")

    assert prediction.answer == "answer to untraced?"
    assert span_exporter.get_finished_spans() == ()


def test_suppressed_instrumentation_records_nothing(
    spans: InMemorySpanExporter, lm: dspy.LM
) -> None:
    with dspy.context(lm=lm), suppress_instrumentation():
        prediction = dspy.Predict("question -> answer")(question="quiet?")

    assert prediction.answer == "answer to quiet?"
    assert spans.get_finished_spans() == ()


def test_instrumented_programs_still_deep_copy_and_save(
    spans: InMemorySpanExporter, lm: dspy.LM, tmp_path: Path
) -> None:
    program = dspy.ReAct("question -> answer", tools=[len], max_iters=2)

    clone = copy.deepcopy(program)
    program.reset_copy()
    program.save(str(tmp_path / "program.json"))

    with dspy.context(lm=lm):
        clone.extract(question="copied?", trajectory="")
    assert by_name(spans.get_finished_spans(), "ChainOfThought.forward")


class Echo(dspy.Module):
    def forward(self, text: str) -> str:
        return text


def test_a_bound_module_call_stored_in_a_tool_can_be_deep_copied(
    spans: InMemorySpanExporter,
) -> None:
    echo = Echo()
    tool = dspy.Tool(echo.__call__, name="echo", desc="echo", args={})

    clone = copy.deepcopy(tool)
    answer = clone(text="copied")

    assert answer == "copied"
    assert clone.func.__self__ is not echo
    assert isinstance(clone.func.__self__, Echo)
    finished = spans.get_finished_spans()
    tool_span, forward_span = one(finished, "echo"), one(finished, "Echo.forward")
    assert parent_of(finished, forward_span) is tool_span
    assert forward_span.attributes[SpanAttributes.OUTPUT_VALUE] == "copied"


def test_a_bound_module_call_survives_pickling(spans: InMemorySpanExporter) -> None:
    restored = pickle.loads(pickle.dumps(Echo().__call__))

    assert restored(text="pickled") == "pickled"
    assert one(spans.get_finished_spans(), "Echo.forward").status.status_code is StatusCode.OK


CLI_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, {here!r})
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)

    import dspy
    from convotel import using_session
    from convotel.dspy import DSPyInstrumentor
    from dspy_loopback import LoopbackServer

    server = LoopbackServer().start()
    lm = dspy.LM("openai/gpt-4o-mini", api_base=server.base_url, api_key="sk-test",
                 cache=False, num_retries=0)
    with dspy.context(lm=lm), using_session("s-cli"):
        dspy.Predict("question -> answer")(question="from the CLI")
    server.stop()
    print(json.dumps({{
        "instrumented": DSPyInstrumentor().is_instrumented_by_opentelemetry,
        "spans": [
            [s.name, s.attributes.get("session.id")]
            for s in exporter.get_finished_spans()
            if s.instrumentation_scope.name == "convotel.dspy"
        ],
    }}))
    """
)


def test_opentelemetry_instrument_loads_the_dspy_instrumentor(
    tmp_path: Path, run_under_opentelemetry_instrument: Callable[..., Any]
) -> None:
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "DSPY_CACHEDIR": str(tmp_path / "cache")}
    completed = run_under_opentelemetry_instrument(CLI_SCRIPT.format(here=str(HERE)), env=env)

    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["instrumented"] is True
    assert sorted(report["spans"]) == [["LM.__call__", "s-cli"], ["Predict.forward", "s-cli"]]
