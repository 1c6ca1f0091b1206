"""Where the demo's spans go: its tracer provider (SQLite store and/or OTLP), the convotel
instrumentors it turns on, and the checks that the spans can be, and were, delivered."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import urlsplit

from openinference.semconv.resource import ResourceAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer

from convotel.propagation import SessionSpanProcessor
from convotel.store import SQLiteSpanExporter, StoreError, open_connection

#: (module, class) of every convotel instrumentor the demo turns on, by provider.
INSTRUMENTORS = {
    "openai": ("convotel.openai", "OpenAIInstrumentor"),
    "mistral": ("convotel.mistralai", "MistralAIInstrumentor"),
    "llama_index": ("convotel.llama_index", "LlamaIndexInstrumentor"),
}
#: The OTLP/HTTP exporter: (module, package to install).
OTLP_EXPORTER = ("opentelemetry.exporter.otlp.proto.http", "opentelemetry-exporter-otlp-proto-http")
PROVIDER_NAMES = {"openai": "OpenAI", "mistral": "Mistral", "llama_index": "LlamaIndex"}


class ExportFailures(SpanExporter):
    """Passes spans on to the OTLP ``exporter`` and counts those it failed to deliver."""

    def __init__(self, exporter: SpanExporter, endpoint: str, project: str) -> None:
        self.exporter = exporter
        self.endpoint = endpoint
        self.project = project
        self.failed_spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.exporter.export(spans)
        if result is not SpanExportResult.SUCCESS:
            self.failed_spans += len(spans)
        return result

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.exporter.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self.exporter.shutdown()


@dataclass
class Telemetry:
    """The tracer provider and where its spans go."""

    provider: TracerProvider
    tracer: Tracer
    store: SQLiteSpanExporter | None
    otlp: ExportFailures | None
    collector: InMemorySpanExporter | None

    @property
    def destination(self) -> str:
        places = []
        if self.store is not None:
            places.append(f"the SQLite store {self.store.path}")
        if self.otlp is not None:
            places.append(f"OTLP/HTTP {self.otlp.endpoint} (project {self.otlp.project})")
        return " and ".join(places)


def _otlp_exporter(url: str) -> SpanExporter:
    module = importlib.import_module(f"{OTLP_EXPORTER[0]}.trace_exporter")
    exporter: SpanExporter = module.OTLPSpanExporter(endpoint=url)
    return exporter


def destination_problem(args: argparse.Namespace, telemetry: Telemetry) -> str | None:
    """Why the spans could not be delivered (checked before the demo starts), or None."""
    if telemetry.store is not None:
        try:  # opening the store creates, migrates or rejects it
            open_connection(telemetry.store.path, create=True, busy_timeout=5.0).close()
        except StoreError as error:
            return str(error)
    if not args.otlp:
        return None
    url = urlsplit(args.otlp)
    if url.scheme not in ("http", "https") or not url.hostname:
        return f"--otlp {args.otlp!r} is not an http(s) URL such as http://127.0.0.1:6006/v1/traces"
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=2).close()
    except OSError as error:
        return (
            f"nothing answers at {url.hostname}:{port} ({error}); start the receiver first, "
            "e.g. `phoenix serve` for Arize Phoenix"
        )
    return None


def build_telemetry(args: argparse.Namespace) -> Telemetry:
    """A tracer provider that stamps session ids on every span and exports in batches."""
    resource = Resource.create(
        {"service.name": "convotel-demo", ResourceAttributes.PROJECT_NAME: args.project}
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SessionSpanProcessor())
    store: SQLiteSpanExporter | None = None
    otlp: ExportFailures | None = None
    collector: InMemorySpanExporter | None = None
    if args.store or not args.otlp:
        store = SQLiteSpanExporter(args.store)
        provider.add_span_processor(BatchSpanProcessor(store))
    if args.otlp:
        otlp = ExportFailures(_otlp_exporter(args.otlp), args.otlp, args.project)
        provider.add_span_processor(BatchSpanProcessor(otlp))
        if store is None:
            collector = InMemorySpanExporter()  # for the summary printed at the end
            provider.add_span_processor(SimpleSpanProcessor(collector))
    tracer = provider.get_tracer("convotel.demo")
    return Telemetry(provider, tracer, store, otlp, collector)


@contextlib.contextmanager
def instrumented(provider: TracerProvider, out: TextIO) -> Iterator[dict[str, bool]]:
    """Turn on every installed convotel instrumentor for ``provider``; off again on exit."""
    active: dict[str, bool] = {}
    instrumentors: list[Any] = []
    for name, (module_name, class_name) in INSTRUMENTORS.items():
        try:
            instrumentor = getattr(importlib.import_module(module_name), class_name)()
        except (ImportError, AttributeError):
            active[name] = False
            continue
        if instrumentor.is_instrumented_by_opentelemetry:
            # e.g. under `opentelemetry-instrument`: leave it as it is (its spans go elsewhere).
            print(
                f"note: {class_name} was already on; its spans go to the provider it was "
                "given there, not to this demo's",
                file=out,
            )
            active[name] = True
            continue
        instrumentor.instrument(tracer_provider=provider)
        active[name] = bool(instrumentor.is_instrumented_by_opentelemetry)
        if active[name]:
            instrumentors.append(instrumentor)
    missing = [PROVIDER_NAMES[name] for name, on in active.items() if not on]
    if missing:
        print(
            f"note: no convotel instrumentor active for {', '.join(missing)} "
            "(not installed or SDK version unsupported); "
            "LlamaIndex calls are then still traced by the OpenAI instrumentor",
            file=out,
        )
    try:
        yield active
    finally:
        for instrumentor in instrumentors:
            instrumentor.uninstrument()


def delivery_problem(telemetry: Telemetry) -> str | None:
    """Why some spans did not reach their destination (checked after the flush), or None."""
    if telemetry.store is not None:
        lost = telemetry.store.pending_spans + telemetry.store.dropped_spans
        if lost:
            return f"{lost} spans could not be written: {telemetry.store.last_error}"
    if telemetry.otlp is not None and telemetry.otlp.failed_spans:
        return (
            f"{telemetry.otlp.failed_spans} spans could not be sent to "
            f"OTLP/HTTP {telemetry.otlp.endpoint}"
        )
    return None
