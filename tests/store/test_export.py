"""``convotel export``: the store's spans reach an OTLP/HTTP receiver as they were recorded,
resumably and never twice; the receiver here decodes the protobuf requests it gets."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.exporter.otlp.proto.http", reason="convotel[otlp] extra")

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

from convotel import using_session, using_user
from convotel.propagation import SessionSpanProcessor
from convotel.store import SpanStore, SQLiteSpanExporter


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return tuple(_value(item) for item in any_value.array_value.values)
    return getattr(any_value, kind) if kind else None


def _attributes(key_values: Any) -> dict[str, Any]:
    return {item.key: _value(item.value) for item in key_values}


class Receiver:
    """An OTLP/HTTP traces endpoint on 127.0.0.1 that decodes and keeps every span it accepts;
    once ``accepted_requests`` reaches ``accept_only`` (when set) it answers 503."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.requests = 0
        self.accepted_requests = 0
        self.accept_only: int | None = None
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests += 1
                if receiver.accept_only is not None and (
                    receiver.accepted_requests >= receiver.accept_only
                ):
                    self.send_response(503)
                    self.end_headers()
                    return
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                for resource_spans in request.resource_spans:
                    resource = _attributes(resource_spans.resource.attributes)
                    for scope_spans in resource_spans.scope_spans:
                        for span in scope_spans.spans:
                            receiver.spans.append(
                                {
                                    "trace_id": span.trace_id.hex(),
                                    "span_id": span.span_id.hex(),
                                    "parent_id": span.parent_span_id.hex() or None,
                                    "name": span.name,
                                    "start_ns": span.start_time_unix_nano,
                                    "end_ns": span.end_time_unix_nano,
                                    "attributes": _attributes(span.attributes),
                                    "events": [e.name for e in span.events],
                                    "status": span.status.code,
                                    "resource": resource,
                                    "scope": scope_spans.scope.name,
                                }
                            )
                receiver.accepted_requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.server.shutdown()


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A store holding two sessions of two turns (a model call and an error each)."""
    path = tmp_path / "spans.sqlite3"
    provider = TracerProvider(resource=Resource.create({"service.name": "exported-chatbot"}))
    provider.add_span_processor(SessionSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(SQLiteSpanExporter(path)))
    tracer = provider.get_tracer("convotel.tests.export")
    for session_id, user_id in (("s-1", "alice"), ("s-2", "bob")):
        for turn in range(2):
            with (
                using_session(session_id),
                using_user(user_id),
                tracer.start_as_current_span(f"turn {turn}") as root,
            ):
                root.set_attribute("input.value", f"question {turn} of {session_id}")
                with tracer.start_as_current_span("ChatCompletion") as call:
                    call.set_attribute("openinference.span.kind", "LLM")
                    call.set_attribute("llm.token_count.total", 42 + turn)
                    call.set_attribute("tag.tags", ["a", "b"])
                    call.add_event("first token", {"at": 1})
                with tracer.start_as_current_span("tool") as tool:
                    tool.set_status(Status(StatusCode.ERROR, "tool failed"))
    provider.shutdown()
    return path


def export(store: Path, endpoint: str, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "convotel.cli", "export", "--endpoint", endpoint]
    return subprocess.run(
        [*command, "--store", str(store), "--timeout", "2", *extra],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "OTEL_TRACES_EXPORTER": "none"},
        timeout=120,
    )


def stored(store: Path) -> dict[str, dict[str, Any]]:
    with SpanStore(store) as reader:
        return {record.span_id: record.__dict__ for record in reader.spans()}


def test_every_span_arrives_as_recorded_and_a_repeat_sends_nothing(
    store: Path, receiver: Receiver
) -> None:
    done = export(store, receiver.url, "--batch-size", "5")
    assert done.returncode == 0, done.stderr
    assert "exported 12 of 12 spans" in done.stderr
    assert "Exported 12 spans" in done.stdout

    records = stored(store)
    assert sorted(span["span_id"] for span in receiver.spans) == sorted(records)
    for span in receiver.spans:
        record = records[span["span_id"]]
        assert span["trace_id"] == record["trace_id"]
        assert span["parent_id"] == record["parent_id"]
        assert span["name"] == record["name"]
        assert (span["start_ns"], span["end_ns"]) == (record["start_ns"], record["end_ns"])
        assert span["attributes"] == dict(record["attributes"])
        assert span["resource"]["service.name"] == "exported-chatbot"
        assert span["scope"] == "convotel.tests.export"
    (call,) = [s for s in receiver.spans if s["name"] == "ChatCompletion"][:1]
    assert call["events"] == ["first token"]
    assert call["attributes"]["tag.tags"] == ("a", "b")
    assert {s["status"] for s in receiver.spans if s["name"] == "tool"} == {2}  # ERROR
    assert receiver.requests == 3  # 12 spans in batches of 5

    again = export(store, receiver.url)
    assert again.returncode == 0, again.stderr
    assert "Nothing new to export" in again.stdout
    assert len(receiver.spans) == 12


def test_filters_send_whole_traces_of_a_session_or_user(store: Path, receiver: Receiver) -> None:
    assert export(store, receiver.url, "--session", "s-1").returncode == 0
    assert len(receiver.spans) == 6
    assert {s["attributes"]["session.id"] for s in receiver.spans} == {"s-1"}
    assert export(store, receiver.url, "--user", "bob").returncode == 0
    assert {s["attributes"]["user.id"] for s in receiver.spans[6:]} == {"bob"}


def test_an_interrupted_export_says_so_and_resumes_without_duplicates(
    store: Path, receiver: Receiver
) -> None:
    receiver.accept_only = 1  # the first batch gets through, then the endpoint fails
    stopped = export(store, receiver.url, "--batch-size", "4", "--timeout", "1")
    assert stopped.returncode == 1
    assert f"export failed: {receiver.url} did not accept the spans (4 of 12 sent; run the " in (
        stopped.stderr
    )
    assert len(receiver.spans) == 4

    receiver.accept_only = None
    resumed = export(store, receiver.url, "--batch-size", "4")
    assert resumed.returncode == 0, resumed.stderr
    assert "exported 8 of 8 spans" in resumed.stderr
    span_ids = [span["span_id"] for span in receiver.spans]
    assert sorted(span_ids) == sorted(stored(store))  # every span exactly once

    restarted = export(store, receiver.url, "--restart")
    assert restarted.returncode == 0
    assert len(receiver.spans) == 24  # --restart sends everything again, as asked


def test_an_endpoint_that_is_down_fails_clearly(store: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = export(store, f"http://127.0.0.1:{port}/v1/traces", "--timeout", "1")
    assert done.returncode == 1
    assert "did not accept the spans (0 of 12 sent; run the same command again to resume)" in (
        done.stderr
    )
    assert "Traceback" not in done.stderr
