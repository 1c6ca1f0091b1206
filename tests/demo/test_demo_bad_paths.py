"""`convotel demo`'s bad paths: a file that is not a store, a missing SDK, live mode without
keys, an OTLP receiver that is down or refuses; and its OTLP export with the project resource."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.machinery import ModuleSpec
from pathlib import Path
from typing import Any

import pytest
from demo_cli import conversation, run_cli
from openinference.semconv.trace import (
    SpanAttributes,
)

from convotel.demo.bots import MISSING_MODEL
from convotel.demo.fake_server import FakeLLMServer
from convotel.demo.script import CONVERSATIONS
from convotel.store import SpanStore


def test_demo_refuses_a_file_that_is_not_a_store_and_leaves_it_alone(tmp_path: Path) -> None:
    not_a_store = tmp_path / "notes.db"
    not_a_store.write_bytes(b"these are my notes, not a database")
    status, stdout, stderr = run_cli(["demo", "--store", str(not_a_store)])
    assert status == 1
    assert str(not_a_store) in stderr
    assert "not a readable SQLite database" in stderr
    assert not_a_store.read_bytes() == b"these are my notes, not a database"
    assert "✓" not in stdout


def test_demo_without_an_sdk_names_the_package_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> ModuleSpec | None:
        if name.startswith("llama_index"):
            return None
        return real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    status, stdout, stderr = run_cli(["demo"])
    assert status == 2
    assert "needs llama-index-core (pip install llama-index-core)" in stderr
    assert stdout == ""


def test_demo_live_without_api_keys_explains_and_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("MISTRAL_API_KEY", raising=False)
    status, stdout, stderr = run_cli(["demo", "--live"])
    assert status == 2
    assert "OPENAI_API_KEY" in stderr
    assert stdout == ""


def test_live_mode_calls_the_configured_openai_endpoint_and_recovers_from_a_real_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--live with only OPENAI_API_KEY: OpenAI goes to OPENAI_BASE_URL (here: a second loopback
    server standing in for the real API), Mistral stays on the demo's own loopback server. No
    fault can be injected into a real API, so the error turn asks for a missing model first."""
    with FakeLLMServer() as stand_in:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-live-test")
        monkeypatch.setenv("OPENAI_BASE_URL", stand_in.openai_base_url)
        monkeypatch.delenv("MISTRAL_API_KEY", raising=False)
        store = tmp_path / "live.sqlite3"
        status, stdout, stderr = run_cli(["demo", "--live", "--store", str(store), "--run-id", "l"])
        served = stand_in.served
    assert status == 0, stderr
    assert "NotFoundError (HTTP 404): the bot retried and got an answer" in stdout
    assert {request.flavour for request in served} == {"openai"}
    openai_turns = sum(len(c.turns) for c in CONVERSATIONS if c.provider != "mistral")
    assert len([r for r in served if r.status == 200]) >= openai_turns
    assert [r.body["model"] for r in served if r.status == 404] == [MISSING_MODEL]
    with SpanStore(store) as reader:
        session = reader.session(conversation("double-charge").session_id("l"))
    assert session is not None
    assert session.errors == 1


def test_demo_otlp_to_a_closed_port_explains_and_fails(tmp_path: Path) -> None:
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
    with ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as probe:
        port = probe.server_address[1]  # bound then closed: nothing listens there
    status, _, stderr = run_cli(["demo", "--otlp", f"http://127.0.0.1:{port}/v1/traces"])
    assert status == 1
    assert f"nothing answers at 127.0.0.1:{port}" in stderr


class _OTLPReceiver(BaseHTTPRequestHandler):
    """Accepts OTLP/HTTP protobuf trace exports and keeps the decoded requests."""

    received: list[Any]
    status: int = 200

    def do_POST(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        body = self.rfile.read(int(self.headers["content-length"]))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.received.append((self.path, request))
        self.send_response(self.status)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


def start_receiver(status: int) -> Iterator[tuple[str, list[Any]]]:
    received: list[Any] = []
    handler = type("Receiver", (_OTLPReceiver,), {"received": received, "status": status})
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", received
        server.shutdown()


@pytest.fixture
def otlp_receiver() -> Iterator[tuple[str, list[Any]]]:
    yield from start_receiver(200)


@pytest.fixture
def refusing_otlp_receiver() -> Iterator[tuple[str, list[Any]]]:
    yield from start_receiver(400)


def test_demo_writes_store_and_otlp_and_fails_when_the_receiver_refuses(
    refusing_otlp_receiver: tuple[str, list[Any]], tmp_path: Path
) -> None:
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
    url, received = refusing_otlp_receiver
    store = tmp_path / "both.sqlite3"
    status, stdout, stderr = run_cli(
        ["demo", "--store", str(store), "--otlp", url, "--run-id", "both"]
    )
    assert status == 1
    assert received
    assert f"spans could not be sent to OTLP/HTTP {url}" in stderr
    assert f"Spans go to the SQLite store {store} and OTLP/HTTP {url}" in stdout
    with SpanStore(store) as reader:
        assert len(reader.sessions()) == len(CONVERSATIONS)


def test_demo_exports_over_otlp_with_the_project_resource(
    otlp_receiver: tuple[str, list[Any]],
) -> None:
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
    url, received = otlp_receiver
    status, stdout, stderr = run_cli(
        ["demo", "--otlp", url, "--project", "demo-test", "--run-id", "otlp1"]
    )
    assert status == 0, stderr
    assert received, "no OTLP export arrived"
    assert {path for path, _ in received} == {"/v1/traces"}
    projects: set[str] = set()
    session_ids: set[str] = set()
    for _, request in received:
        for resource_spans in request.resource_spans:
            for attribute in resource_spans.resource.attributes:
                if attribute.key == "openinference.project.name":
                    projects.add(attribute.value.string_value)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    for attribute in span.attributes:
                        if attribute.key == SpanAttributes.SESSION_ID:
                            session_ids.add(attribute.value.string_value)
    assert projects == {"demo-test"}
    assert session_ids == {c.session_id("otlp1") for c in CONVERSATIONS}
    assert "Sessions tab" in stdout
    assert "book-club-otlp1" in stdout
