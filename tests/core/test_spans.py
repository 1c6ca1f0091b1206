"""CallSpan, Tracing and the generic wrappers: attributes, errors, the one-LLM-span rule."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator, Mapping
from enum import Enum
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from convotel import TraceConfig, using_session, using_user
from convotel.attributes import invocation_parameter_attributes
from convotel.spans import (
    DEFERRED_TO_PROVIDER,
    Endpoint,
    Pair,
    Tracing,
    async_wrapper,
    sync_wrapper,
)


@pytest.fixture
def tracing(tracer_provider: TracerProvider) -> Tracing:
    return Tracing(tracer_provider.get_tracer("test"))


def only_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    (span,) = exporter.get_finished_spans()
    return span


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_span_carries_kind_and_context_attributes(
    tracing: Tracing, span_exporter: InMemorySpanExporter
) -> None:
    with using_session("s"), using_user("u"):
        tracing.start("chat", "LLM").end()
    span = only_span(span_exporter)
    assert span.name == "chat"
    assert attrs(span) == {
        "openinference.span.kind": "LLM",
        "session.id": "s",
        "convotel.session.source": "context",
        "user.id": "u",
    }
    assert span.status.status_code is StatusCode.OK


def test_set_drops_none_encodes_dicts_and_never_raises(
    tracing: Tracing, span_exporter: InMemorySpanExporter
) -> None:
    call = tracing.start("chat", "LLM")
    call.set("a.none", None)
    call.set("a.dict", {"x": [1, 2]})
    call.set("a.list_of_dicts", [{"y": 1}])
    call.set("a.strings", ("p", "q"))
    call.set("a.numbers", [1, 2.5])
    call.set("a.weird", Unprintable())
    call.set("a.bytes", b"\x00\x01")
    call.end()
    attributes = attrs(only_span(span_exporter))
    assert "a.none" not in attributes
    assert attributes["a.dict"] == '{"x": [1, 2]}'
    assert attributes["a.list_of_dicts"] == '[{"y": 1}]'
    assert attributes["a.strings"] == ("p", "q")
    assert attributes["a.numbers"] == (1.0, 2.5)
    assert isinstance(attributes["a.weird"], str)
    assert attributes["a.bytes"] == '"<2 bytes>"'


class Colour(str, Enum):
    RED = "red"


@pytest.mark.parametrize(
    ("value", "recorded"),
    [
        ([0.5, -1.25, 3.0], (0.5, -1.25, 3.0)),  # an embedding vector, as it is
        ((1, 2, 3), (1, 2, 3)),
        ([True, False], (True, False)),
        ([1, 0.5], (1.0, 0.5)),  # mixed numbers: one type, as OpenTelemetry requires
        ([Colour.RED, "blue"], ("red", "blue")),  # str subclasses become plain strings
        ([True, 1], "[true, 1]"),  # bools are not numbers here: JSON
        ([], ()),
    ],
)
def test_sequences_are_recorded_as_one_typed_sequence_or_json(
    tracing: Tracing, span_exporter: InMemorySpanExporter, value: Any, recorded: object
) -> None:
    call = tracing.start("chat", "LLM")
    call.set("a.sequence", value)
    call.end()
    assert attrs(only_span(span_exporter))["a.sequence"] == recorded


def test_invocation_parameters_keep_lists_and_objects_as_json() -> None:
    parameters = {"stop": ["\n", "END"], "logit_bias": {"50256": -100}, "api_key": "sk-x"}
    ((key, value),) = invocation_parameter_attributes(parameters)
    assert key == "llm.invocation_parameters"
    assert json.loads(value) == {"stop": ["\n", "END"], "logit_bias": {"50256": -100}}


def test_extractor_that_raises_is_logged_once_and_keeps_earlier_pairs(
    tracing: Tracing, span_exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> Iterator[Pair]:
        yield "ok.before", 1
        raise KeyError("missing field")

    with caplog.at_level(logging.WARNING, logger="convotel"):
        for _ in range(3):
            call = tracing.start("chat", "LLM")
            call.set_attributes(broken(), "test extractor once")
            call.end()
    assert caplog.text.count("test extractor once failed") == 1
    assert all(attrs(s)["ok.before"] == 1 for s in span_exporter.get_finished_spans())


def test_end_is_idempotent(tracing: Tracing, span_exporter: InMemorySpanExporter) -> None:
    call = tracing.start("chat", "LLM")
    call.end()
    call.end(error=RuntimeError("late"))
    assert only_span(span_exporter).status.status_code is StatusCode.OK


def test_record_exception_sets_error_status_event_and_http_status(
    tracing: Tracing, span_exporter: InMemorySpanExporter
) -> None:
    class HTTPError(Exception):
        status_code = 429

    tracing.start("chat", "LLM").end(error=HTTPError("slow down"))
    span = only_span(span_exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "HTTPError: slow down"
    assert attrs(span)["http.response.status_code"] == 429
    assert attrs(span)["error.type"].endswith("HTTPError")
    assert [event.name for event in span.events] == ["exception"]


def test_config_masks_attributes_set_through_a_call(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    tracing = Tracing(tracer_provider.get_tracer("t"), TraceConfig(hide_inputs=True))
    call = tracing.start("chat", "LLM", [("input.value", "secret"), ("input.mime_type", "text")])
    call.set("llm.input_messages.0.message.content", "secret")
    call.set("output.value", "visible")
    call.end()
    attributes = attrs(only_span(span_exporter))
    assert attributes["input.value"] == "__REDACTED__"
    assert "input.mime_type" not in attributes
    assert "llm.input_messages.0.message.content" not in attributes
    assert attributes["output.value"] == "visible"


def test_framework_llm_span_defers_to_a_provider_span_below_it(
    tracing: Tracing, span_exporter: InMemorySpanExporter
) -> None:
    framework = tracing.start("llama_index.chat", "LLM", framework=True)
    provider = tracing.start("ChatCompletion", "LLM", parent=framework.context)
    provider.end(attributes=[("llm.token_count.prompt", 10), ("llm.token_count.completion", 5)])
    framework.end(attributes=[("llm.token_count.prompt", 10), ("output.value", "hi")])
    spans = {s.name: s for s in span_exporter.get_finished_spans()}
    outer = attrs(spans["llama_index.chat"])
    assert outer["openinference.span.kind"] == "CHAIN"
    assert outer[DEFERRED_TO_PROVIDER] is True
    assert not [k for k in outer if k.startswith("llm.token_count")]
    assert outer["output.value"] == "hi"
    inner = attrs(spans["ChatCompletion"])
    assert inner["openinference.span.kind"] == "LLM"
    assert inner["llm.token_count.prompt"] == 10
    assert spans["ChatCompletion"].parent is not None
    assert spans["ChatCompletion"].parent.span_id == spans["llama_index.chat"].context.span_id


def test_framework_llm_span_without_a_provider_keeps_its_tokens(
    tracing: Tracing, span_exporter: InMemorySpanExporter
) -> None:
    tracing.start("mock.chat", "LLM", framework=True).end(
        attributes=[("llm.token_count.prompt", 3)]
    )
    attributes = attrs(only_span(span_exporter))
    assert attributes["openinference.span.kind"] == "LLM"
    assert attributes["llm.token_count.prompt"] == 3


class EchoEndpoint(Endpoint):
    span_name = "Echo"

    def request_attributes(
        self, instance: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> Iterator[Pair]:
        yield "input.value", kwargs["text"]

    def response_attributes(self, response: Any) -> Iterator[Pair]:
        yield "output.value", response


class BrokenEndpoint(Endpoint):
    span_name = "Broken"

    def request_attributes(
        self, instance: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> Iterator[Pair]:
        raise AttributeError("SDK changed shape")

    def response_attributes(self, response: Any) -> Iterator[Pair]:
        raise TypeError("cannot read response")

    def adjust_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("cannot adjust")


def test_sync_wrapper_traces_the_call_with_session(
    tracing: Tracing, span_exporter: InMemorySpanExporter
) -> None:
    wrapper = sync_wrapper(lambda: tracing, EchoEndpoint())
    with using_session("s-wrap"):
        assert wrapper(lambda text: text.upper(), None, (), {"text": "hi"}) == "HI"
    attributes = attrs(only_span(span_exporter))
    assert attributes["input.value"] == "hi"
    assert attributes["output.value"] == "HI"
    assert attributes["session.id"] == "s-wrap"


def test_broken_extractors_never_reach_the_caller(
    tracing: Tracing, span_exporter: InMemorySpanExporter
) -> None:
    wrapper = sync_wrapper(lambda: tracing, BrokenEndpoint())
    assert wrapper(lambda text: text * 2, None, (), {"text": "a"}) == "aa"
    span = only_span(span_exporter)
    assert span.status.status_code is StatusCode.OK


def test_user_exception_is_the_same_object_and_recorded(
    tracing: Tracing, span_exporter: InMemorySpanExporter
) -> None:
    error = ValueError("from the SDK")

    def fail(**kwargs: Any) -> None:
        raise error

    wrapper = sync_wrapper(lambda: tracing, EchoEndpoint())
    with pytest.raises(ValueError, match="from the SDK") as caught:
        wrapper(fail, None, (), {"text": "x"})
    assert caught.value is error
    span = only_span(span_exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert span.events[0].attributes is not None
    assert span.events[0].attributes["exception.message"] == "from the SDK"


async def test_async_wrapper_and_cancellation_end_the_span(
    tracing: Tracing, span_exporter: InMemorySpanExporter
) -> None:
    wrapper = async_wrapper(lambda: tracing, EchoEndpoint())

    async def slow(text: str) -> str:
        await asyncio.sleep(10)
        return text

    task = asyncio.ensure_future(wrapper(slow, None, (), {"text": "x"}))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    span = only_span(span_exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "CancelledError: cancelled"

    async def quick(text: str) -> str:
        return text

    assert await wrapper(quick, None, (), {"text": "y"}) == "y"
    assert len(span_exporter.get_finished_spans()) == 2


def test_suppressed_instrumentation_makes_no_span(
    tracing: Tracing, span_exporter: InMemorySpanExporter
) -> None:
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    wrapper = sync_wrapper(lambda: tracing, EchoEndpoint())
    with suppress_instrumentation():
        assert wrapper(lambda text: text, None, (), {"text": "z"}) == "z"
    assert span_exporter.get_finished_spans() == ()


async def test_concurrent_wrapped_calls_each_carry_their_own_session(
    tracing: Tracing, span_exporter: InMemorySpanExporter
) -> None:
    wrapper = async_wrapper(lambda: tracing, EchoEndpoint())

    async def echo(text: str) -> str:
        await asyncio.sleep(0)
        return text

    async def one(index: int) -> None:
        with using_session(f"s-{index}"):
            await wrapper(echo, None, (), {"text": f"s-{index}"})

    await asyncio.gather(*(one(i) for i in range(100)))
    spans = span_exporter.get_finished_spans()
    assert len(spans) == 100
    assert all(attrs(s)["session.id"] == attrs(s)["input.value"] for s in spans)


class PerInstanceEndpoint(Endpoint):
    """Name and kind chosen per call, a framework span, findable while it runs."""

    framework = True
    exposes_call = True

    def name_for(self, instance: Any, asynchronous: bool) -> str:
        return f"{type(instance).__name__}.{'acall' if asynchronous else 'call'}"

    def kind_for(self, instance: Any) -> str:
        return "LLM"


class Model:
    pass


async def test_endpoint_per_instance_name_kind_and_active_call(
    tracing: Tracing, span_exporter: InMemorySpanExporter
) -> None:
    from convotel.spans import active_call

    model = Model()

    def run() -> str:
        call = active_call(model)
        assert call is not None
        call.set("llm.token_count.prompt", 7)
        call.set("output.value", f"{type(call.owner).__name__}:done")  # the call knows its owner
        assert active_call(object()) is None
        return "done"

    async def arun() -> str:
        return run()

    assert sync_wrapper(lambda: tracing, PerInstanceEndpoint())(run, model, (), {}) == "done"
    assert (
        await async_wrapper(lambda: tracing, PerInstanceEndpoint())(arun, model, (), {}) == "done"
    )
    spans = span_exporter.get_finished_spans()
    assert [s.name for s in spans] == ["Model.call", "Model.acall"]
    for span in spans:
        assert attrs(span)["llm.token_count.prompt"] == 7
        assert attrs(span)["output.value"] == "Model:done"
    assert active_call(model) is None


def test_framework_embedding_span_defers_to_a_provider_embedding_span(
    tracing: Tracing, span_exporter: InMemorySpanExporter
) -> None:
    framework = tracing.start("Embedder.__call__", "EMBEDDING", framework=True)
    tracing.start("CreateEmbeddings", "EMBEDDING", parent=framework.context).end(
        attributes=[("llm.token_count.prompt", 4)]
    )
    framework.end(attributes=[("llm.token_count.prompt", 4)])
    kinds = {
        s.name: attrs(s)["openinference.span.kind"] for s in span_exporter.get_finished_spans()
    }
    assert kinds == {"CreateEmbeddings": "EMBEDDING", "Embedder.__call__": "CHAIN"}


def test_text_that_utf8_cannot_encode_is_recorded_with_its_bad_code_points_replaced(
    tracing: Tracing, span_exporter: InMemorySpanExporter
) -> None:
    cut_reply = json.loads('"cut \\ud83d reply"')  # a reply that ended inside an emoji
    paired = "two halves \ud83d\ude00"  # a surrogate pair held as two code points
    call = tracing.start("chat", "LLM")
    call.set_attributes(
        [
            ("output.value", cut_reply),
            ("llm.output_messages.0.message.content", paired),
            ("tag.tags", ["ok", cut_reply]),
            ("metadata", {"note": cut_reply}),
            ("input.value", "déjà vu ✓"),
        ]
    )
    call.end()
    recorded = attrs(only_span(span_exporter))
    assert recorded["output.value"] == "cut \ufffd reply"
    assert recorded["llm.output_messages.0.message.content"] == "two halves 😀"
    assert recorded["tag.tags"] == ("ok", "cut \ufffd reply")
    assert json.loads(recorded["metadata"]) == {"note": "cut \ufffd reply"}
    assert recorded["input.value"] == "déjà vu ✓"
    otlp = pytest.importorskip("opentelemetry.exporter.otlp.proto.common.trace_encoder")
    encoded = otlp.encode_spans(span_exporter.get_finished_spans()).SerializeToString()
    assert "cut \ufffd reply".encode() in encoded  # OTLP kept the attribute


@pytest.mark.parametrize("span_key", ["known", "missing"], ids=["one-copy", "public-api"])
def test_a_calls_context_holds_its_span_claim_and_running_call(
    tracing: Tracing, span_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The call's context is built in one copy from OpenTelemetry's span key; without that key
    (an API that renamed it) through the public functions, with the same result."""
    from opentelemetry import context as context_api
    from opentelemetry import trace as trace_api

    from convotel import call_span
    from convotel.call_span import inside_call

    if span_key == "missing":
        monkeypatch.setattr(call_span, "_SPAN_KEY", None)
    owner = object()
    with using_session("s-ctx"):
        outer_ctx = context_api.get_current()
        call = tracing.start("chat", "LLM", framework=True, owner=owner)
    assert trace_api.get_current_span(call.context) is call.span
    assert context_api.get_value("session.id", call.context) == "s-ctx"
    assert inside_call(owner, call.context) is call
    assert call_span._CLAIM_KEY in call.context
    assert trace_api.get_current_span(outer_ctx) is not call.span  # the caller's is unchanged
    assert inside_call(owner, outer_ctx) is None
    token = context_api.attach(call.context)
    try:
        inner = tracing.start("inner", "LLM")
    finally:
        context_api.detach(token)
    inner.end()
    call.end()
    assert inner.span.parent is not None
    assert inner.span.parent.span_id == call.span.get_span_context().span_id
    assert call.span.attributes["openinference.span.kind"] == "CHAIN"  # the claim was seen
