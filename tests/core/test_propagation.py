"""Sessions across every span, threads and processes; the GenAI convention switch."""

from __future__ import annotations

import json
import logging
import threading
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry import baggage
from opentelemetry import context as context_api
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from convotel import TraceConfig, get_attributes_from_context, using_attributes, using_session
from convotel.propagation import (
    ContextPropagatingExecutor,
    SessionBaggagePropagator,
    SessionSpanProcessor,
    propagate,
)
from convotel.spans import Tracing


def current_session() -> Any:
    return dict(get_attributes_from_context()).get("session.id")


def test_session_span_processor_stamps_spans_of_other_libraries() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SessionSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("some-database-driver")
    with using_attributes(session_id="s-db", user_id="u-db", metadata={"a": 1}, tags=["t"]):
        with tracer.start_as_current_span("SELECT users"):
            pass
        with tracer.start_as_current_span("own", attributes={"session.id": "explicit"}):
            pass
    with tracer.start_as_current_span("outside"):
        pass
    spans = {span.name: dict(span.attributes or {}) for span in exporter.get_finished_spans()}
    assert spans["SELECT users"]["session.id"] == "s-db"
    assert spans["SELECT users"]["user.id"] == "u-db"
    assert spans["SELECT users"]["metadata"] == '{"a": 1}'
    assert spans["SELECT users"]["tag.tags"] == ("t",)
    assert spans["own"]["session.id"] == "explicit"
    assert "session.id" not in spans["outside"]


def test_plain_thread_pool_does_not_see_the_callers_session_without_propagate() -> None:
    with ThreadPoolExecutor(max_workers=1) as pool, using_session("caller"):
        assert pool.submit(current_session).result() is None
        assert pool.submit(propagate(current_session)).result() == "caller"


def test_50_sessions_fanning_out_to_a_shared_pool_never_cross_talk() -> None:
    pool = ContextPropagatingExecutor(max_workers=8)
    barrier = threading.Barrier(50)
    results: dict[int, list[Any]] = {}

    def conversation(index: int) -> None:
        with using_session(f"s-{index}"):
            barrier.wait()
            futures = [pool.submit(current_session) for _ in range(20)]
            futures += [pool.submit(lambda: (current_session(), "nested"))]
            results[index] = [future.result() for future in futures]

    threads = [threading.Thread(target=propagate(conversation), args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    pool.shutdown()
    for index, seen in results.items():
        assert seen[:20] == [f"s-{index}"] * 20
        assert seen[20] == (f"s-{index}", "nested")
    assert len(results) == 50


def test_pool_map_also_propagates() -> None:
    with ContextPropagatingExecutor(max_workers=4) as pool, using_session("mapped"):
        assert list(pool.map(lambda _: current_session(), range(10))) == ["mapped"] * 10


@pytest.fixture
def downstream() -> Iterator[tuple[str, InMemorySpanExporter, list[dict[str, str]]]]:
    """A second 'service' on loopback that restores the context from headers and traces."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(provider.get_tracer("downstream"))
    propagator = CompositePropagator(
        [TraceContextTextMapPropagator(), W3CBaggagePropagator(), SessionBaggagePropagator()]
    )
    received: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            headers = {key.lower(): value for key, value in self.headers.items()}
            received.append(headers)
            ctx = propagator.extract(headers)
            tracing.start("downstream.handle", "CHAIN", parent=ctx).end()
            body = json.dumps({"ok": True}).encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", exporter, received
    server.shutdown()
    server.server_close()


def call_downstream(url: str) -> None:
    propagator = CompositePropagator(
        [TraceContextTextMapPropagator(), W3CBaggagePropagator(), SessionBaggagePropagator()]
    )
    headers: dict[str, str] = {}
    propagator.inject(headers)
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as reply:
        assert json.load(reply) == {"ok": True}


def test_ids_reach_a_second_service_through_w3c_baggage(
    downstream: tuple[str, InMemorySpanExporter, list[dict[str, str]]],
) -> None:
    url, exporter, received = downstream
    token = context_api.attach(baggage.set_baggage("tenant", "acme"))
    try:
        with using_attributes(
            session_id="s 42/ü", user_id="u-7", metadata={"secret": "do not send"}
        ):
            call_downstream(url)
    finally:
        context_api.detach(token)
    (span,) = exporter.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert attributes["session.id"] == "s 42/ü"
    assert attributes["user.id"] == "u-7"
    assert "metadata" not in attributes
    header = received[0]["baggage"]
    assert "tenant=acme" in header
    assert "do not send" not in header
    assert "secret" not in header


def test_no_ids_no_baggage_header(
    downstream: tuple[str, InMemorySpanExporter, list[dict[str, str]]],
) -> None:
    url, exporter, received = downstream
    call_downstream(url)
    assert "baggage" not in received[0]
    (span,) = exporter.get_finished_spans()
    assert "session.id" not in (span.attributes or {})


def test_bad_incoming_ids_are_dropped() -> None:
    ctx = SessionBaggagePropagator().extract({"baggage": "session.id=%20%20,user.id=ok"})
    assert dict(get_attributes_from_context(ctx)) == {"user.id": "ok"}
    ctx = SessionBaggagePropagator().extract({"baggage": "user.id=ok,session.id=s1;prop=1"})
    assert dict(get_attributes_from_context(ctx)) == {"session.id": "s1", "user.id": "ok"}


def send_baggage(url: str, header: str) -> None:
    """A request carrying exactly this ``baggage`` header (no propagator on the sending side)."""
    request = urllib.request.Request(url, headers={"baggage": header})
    with urllib.request.urlopen(request, timeout=5) as reply:
        assert json.load(reply) == {"ok": True}


def restored_ids(exporter: InMemorySpanExporter) -> dict[str, Any]:
    (span,) = exporter.get_finished_spans()
    attributes = dict(span.attributes or {})
    return {key: attributes[key] for key in ("session.id", "user.id") if key in attributes}


SESSION = "session.id=sess-0123456789abcdef"
PAD_TO_CUT = "pad=" + "x" * 8168  # the 8,192-byte limit falls inside the member after it


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param(
            f"{PAD_TO_CUT},{SESSION},more={'y' * 4000}", {}, id="header-over-8192-bytes-ignored"
        ),
        pytest.param(
            f"{SESSION},user.id=u-1;note={'z' * 4100}",
            {"session.id": "sess-0123456789abcdef"},
            id="member-over-4096-bytes-dropped",
        ),
        pytest.param(
            ",".join(f"k{i}=v" for i in range(180)) + f",{SESSION}",
            {},
            id="members-after-the-180th-dropped",
        ),
        pytest.param("session.id=s-%C3,user.id=u-%F0%9F%99%82", {"user.id": "u-🙂"}, id="bad-utf8"),
        pytest.param("session.id=s-\u00fc,user.id=u 1", {}, id="malformed-members"),
        pytest.param(
            f"pad={'x' * 8100},{SESSION},user.id=u-1",
            {"session.id": "sess-0123456789abcdef", "user.id": "u-1"},
            id="just-under-the-limit",
        ),
    ],
)
def test_only_ids_sent_whole_within_the_w3c_limits_are_restored(
    downstream: tuple[str, InMemorySpanExporter, list[dict[str, str]]],
    header: str,
    expected: dict[str, str],
) -> None:
    url, exporter, received = downstream

    send_baggage(url, header)

    assert received[0]["baggage"] == header  # the server saw the whole header
    assert restored_ids(exporter) == expected


def test_an_oversized_header_is_ignored_whole_by_otel_and_by_convotel_alike(
    downstream: tuple[str, InMemorySpanExporter, list[dict[str, str]]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, exporter, _ = downstream
    header = f"{PAD_TO_CUT},{SESSION},more={'y' * 4000}"
    assert baggage.get_all(W3CBaggagePropagator().extract({"baggage": header})) == {}

    with caplog.at_level(logging.WARNING, logger="convotel.propagation"):
        send_baggage(url, header)

    assert "session.id" not in dict(exporter.get_finished_spans()[0].attributes or {})
    (message,) = [r.getMessage() for r in caplog.records if r.name == "convotel.propagation"]
    assert "over the 8192-byte limit; ignored whole" in message
    assert "xxxx" not in message  # unlike OpenTelemetry's, our log does not echo the header


def test_ids_are_not_sent_where_they_would_take_the_header_past_the_limit(
    downstream: tuple[str, InMemorySpanExporter, list[dict[str, str]]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, exporter, received = downstream
    # The W3C propagator writes "a=<4,090 x>,b=<4,085 x>": 8,180 bytes, each member under 4,096.
    pads = {"a": "x" * 4090, "b": "x" * 4085}
    token = context_api.attach(
        baggage.set_baggage("b", pads["b"], baggage.set_baggage("a", pads["a"]))
    )
    try:
        with using_attributes(session_id="s-1", user_id="u-1"), caplog.at_level(logging.WARNING):
            call_downstream(url)
    finally:
        context_api.detach(token)

    header = received[0]["baggage"]
    assert len(header.encode()) <= 8192
    assert baggage.get_all(W3CBaggagePropagator().extract(received[0])) == {
        **pads,
        "user.id": "u-1",
    }
    assert restored_ids(exporter) == {"user.id": "u-1"}  # 12 more bytes fit, 15 did not
    assert "session.id not sent in the baggage header" in caplog.text


def test_a_stale_session_in_other_baggage_is_never_sent() -> None:
    carrier = {"baggage": "session.id=stale,tenant=acme"}
    too_long = "s" * 4200  # longer than any id the receiving side accepts
    with using_session("s-new"):
        SessionBaggagePropagator().inject(carrier)
    assert carrier["baggage"] == "tenant=acme,session.id=s-new"

    carrier = {"baggage": "session.id=stale,tenant=acme"}
    token = context_api.attach(context_api.set_value("session.id", too_long))
    try:
        SessionBaggagePropagator().inject(carrier)
    finally:
        context_api.detach(token)
    assert carrier["baggage"] == "tenant=acme"


def test_genai_names_are_written_when_switched_on(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    tracing = Tracing(tracer_provider.get_tracer("t"), TraceConfig(enable_genai_semconv=True))
    with using_session("conv-1"):
        tracing.start("chat", "LLM", [("llm.provider", "mistralai")]).end(
            attributes=[
                ("llm.request.model_name", "mistral-small"),
                ("llm.response.model_name", "mistral-small-2409"),
                ("llm.token_count.prompt", 12),
                ("llm.token_count.completion", 4),
            ]
        )
    attributes = dict(span_exporter.get_finished_spans()[0].attributes or {})
    assert attributes["gen_ai.conversation.id"] == "conv-1"
    assert attributes["gen_ai.provider.name"] == "mistral_ai"
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == "mistral-small"
    assert attributes["gen_ai.response.model"] == "mistral-small-2409"
    assert attributes["gen_ai.usage.input_tokens"] == 12
    assert attributes["gen_ai.usage.output_tokens"] == 4


def test_genai_names_are_off_by_default(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    with using_session("conv-2"):
        Tracing(tracer_provider.get_tracer("t")).start("chat", "LLM").end()
    attributes = dict(span_exporter.get_finished_spans()[0].attributes or {})
    assert not [key for key in attributes if key.startswith("gen_ai.")]


def test_propagator_is_loadable_by_name_through_otel_propagators(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib

    from opentelemetry import propagate as otel_propagate

    monkeypatch.setenv("OTEL_PROPAGATORS", "tracecontext,baggage,convotel_session")
    reloaded = importlib.reload(otel_propagate)
    try:
        names = [type(p).__name__ for p in reloaded.get_global_textmap()._propagators]  # type: ignore[attr-defined]
        assert names[-1] == "SessionBaggagePropagator"
    finally:
        monkeypatch.delenv("OTEL_PROPAGATORS")
        importlib.reload(otel_propagate)
