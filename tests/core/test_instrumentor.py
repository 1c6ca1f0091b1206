"""The instrumentor base: wrapping, exact restore, no double wrapping, tracer provider/config."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from convotel import TraceConfig, using_session
from convotel.instrumentor import ConvotelInstrumentor, WrapTarget
from convotel.spans import Endpoint, Pair

sys.path.insert(0, str(Path(__file__).parent))

from fake_sdk import client


class PromptEndpoint(Endpoint):
    span_name = "FakeCompletion"

    def request_attributes(
        self, instance: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> Iterator[Pair]:
        yield "input.value", kwargs["prompt"]

    def response_attributes(self, response: Any) -> Iterator[Pair]:
        yield "output.value", response


class FakeInstrumentor(ConvotelInstrumentor):
    instrumentation_name = "convotel-fake"

    def instrumentation_dependencies(self) -> Sequence[str]:
        return []

    def wrap_targets(self) -> Sequence[WrapTarget]:
        return [
            WrapTarget("fake_sdk.client", "Completions.create", PromptEndpoint()),
            WrapTarget("fake_sdk.client", "Completions.acreate", PromptEndpoint(), is_async=True),
            WrapTarget("fake_sdk.client", "Completions.helper", PromptEndpoint()),
            WrapTarget("fake_sdk.client", "module_function", PromptEndpoint()),
            WrapTarget("fake_sdk.client", "Missing.method", PromptEndpoint()),
            WrapTarget("not_installed_sdk", "Anything.create", PromptEndpoint()),
        ]


@pytest.fixture
def instrumentor() -> Iterator[FakeInstrumentor]:
    instrumentor = FakeInstrumentor()
    yield instrumentor
    instrumentor.uninstrument()


def originals() -> dict[str, Any]:
    return {
        "create": vars(client.Completions)["create"],
        "acreate": vars(client.Completions)["acreate"],
        "helper": vars(client.Completions)["helper"],
        "module_function": vars(client)["module_function"],
    }


def test_uninstrument_restores_the_exact_originals(
    instrumentor: FakeInstrumentor, tracer_provider: TracerProvider
) -> None:
    before = originals()
    instrumentor.instrument(tracer_provider=tracer_provider)
    assert client.Completions.create is not before["create"]
    instrumentor.uninstrument()
    after = originals()
    for name, original in before.items():
        assert after[name] is original, name
    assert client.Completions.create is before["create"]


def test_instrument_twice_does_not_double_wrap(
    instrumentor: FakeInstrumentor,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
) -> None:
    instrumentor.instrument(tracer_provider=tracer_provider)
    wrapped_once = vars(client.Completions)["create"]
    instrumentor.instrument(tracer_provider=tracer_provider)
    FakeInstrumentor().instrument(tracer_provider=tracer_provider)
    assert vars(client.Completions)["create"] is wrapped_once
    assert client.Completions().create(prompt="abc") == "cba"
    assert len(span_exporter.get_finished_spans()) == 1


def test_wrapped_methods_trace_with_the_given_provider_and_session(
    instrumentor: FakeInstrumentor,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
) -> None:
    instrumentor.instrument(tracer_provider=tracer_provider)
    with using_session("inst-s"):
        assert client.Completions().create(prompt="abc") == "cba"
        assert client.Completions.helper(prompt="ab") == "abab"
        assert client.module_function(prompt="a") == "a!"
    spans = span_exporter.get_finished_spans()
    assert [s.name for s in spans] == ["FakeCompletion"] * 3
    assert all((s.attributes or {})["session.id"] == "inst-s" for s in spans)
    assert spans[0].instrumentation_scope is not None
    assert spans[0].instrumentation_scope.name == "convotel-fake"


async def test_async_method_is_traced(
    instrumentor: FakeInstrumentor,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
) -> None:
    instrumentor.instrument(tracer_provider=tracer_provider)
    assert await client.Completions().acreate(prompt="hi") == "HI"
    (span,) = span_exporter.get_finished_spans()
    assert (span.attributes or {})["output.value"] == "HI"


def test_config_passed_to_instrument_is_applied(
    instrumentor: FakeInstrumentor,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
) -> None:
    instrumentor.instrument(tracer_provider=tracer_provider, config=TraceConfig(hide_outputs=True))
    client.Completions().create(prompt="abc")
    (span,) = span_exporter.get_finished_spans()
    assert (span.attributes or {})["output.value"] == "__REDACTED__"
    assert (span.attributes or {})["input.value"] == "abc"


def test_after_uninstrument_no_spans(
    instrumentor: FakeInstrumentor,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
) -> None:
    instrumentor.instrument(tracer_provider=tracer_provider)
    instrumentor.uninstrument()
    client.Completions().create(prompt="abc")
    assert span_exporter.get_finished_spans() == ()


def test_wrapped_methods_still_copy_and_pickle(
    instrumentor: FakeInstrumentor,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
) -> None:
    import copy
    import pickle

    instrumentor.instrument(tracer_provider=tracer_provider)
    completions = client.Completions()
    completions.label = "original"  # type: ignore[attr-defined]
    holder = {"method": completions.create, "function": client.module_function}
    copied = copy.deepcopy(holder)
    assert copied["method"](prompt="ab") == "ba"
    assert copied["method"].__self__ is not completions
    assert copied["method"].__self__.label == "original"
    assert copied["function"] is client.module_function
    assert copy.copy(completions.create)(prompt="xy") == "yx"
    assert pickle.loads(pickle.dumps(completions.create))(prompt="pq") == "qp"
    assert pickle.loads(pickle.dumps(client.module_function))(prompt="z") == "z!"
    assert len(span_exporter.get_finished_spans()) == 4
