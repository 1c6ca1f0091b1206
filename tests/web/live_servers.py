"""Real servers on 127.0.0.1 for the web-service tests, and waiting for their spans."""

from __future__ import annotations

import threading
import time
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from convotel.demo.served_app import ServedApp

#: uvicorn serving an ASGI app on a free loopback port, in a thread (the demo's own server).
LiveASGIServer = ServedApp


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None


class LiveWSGIServer:
    """wsgiref serving a WSGI app on a free loopback port, in a thread."""

    def __init__(self, app: Any) -> None:
        self.server: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self) -> LiveWSGIServer:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=20)


def wait_for_spans(
    exporter: InMemorySpanExporter, predicate: Any, timeout: float = 10.0
) -> tuple[ReadableSpan, ...]:
    """The finished spans once ``predicate(spans)`` holds (servers end spans on their own
    threads after the client has its answer)."""
    deadline = time.monotonic() + timeout
    while True:
        spans = exporter.get_finished_spans()
        if predicate(spans) or time.monotonic() > deadline:
            return spans
        time.sleep(0.01)
